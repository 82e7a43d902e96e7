"""zombie and refresh: silent sockets are reaped in time; a refreshed token never costs the socket."""

from __future__ import annotations

import pandas as pd

from contract.events import CloseReason, Kind, Role

from ..rundir import Run
from .base import Status, Verdict, evidence_rows, inconclusive, skipped
from .causes import restart_windows
from .lateness import describe, measured_late, process_of, stretches_of
from .messages import ran

ZOMBIE = "zombie"
REFRESH = "refresh"
#: A refresh failure this soon after its process was late may be the generator's doing (a reply read late,
#: a token not refreshed in time while stopped): the client's reply timeout and expiry wait fit inside it.
REFRESH_LOOKBACK_S = 10.0


def live_clients_reaped(events: pd.DataFrame) -> pd.DataFrame:
    """Idle reaps of users not in the zombie role: every other user heartbeats (or answers the server's
    pings) while it waits on its socket (users/client.py ``keepalive``), so the backend reaped a live client."""
    reaped = (events["kind"] == Kind.CLOSE) & (events["reason"] == CloseReason.IDLE_REAPED) & (events["n"] > 0)
    return events[reaped & (events["role"] != Role.ZOMBIE)]


def zombie_rounds(events: pd.DataFrame) -> pd.DataFrame:
    """Each zombie round's end: the backend's close (ok=1) or the client giving up (ok=0); a reap carries
    the server's announced ``idle_timeout_ms``."""
    return events[(events["role"] == Role.ZOMBIE) & (events["kind"] == Kind.CLOSE) & (events["n"] > 0)]


def judge_zombie(run: Run, th: dict) -> Verdict:
    """Every silent socket (a zombie-role user after its session opened) is closed as idle (reason
    ``idle_reaped``) within the backend's ``idle_timeout_ms`` (as the protocol announced it) plus
    ``grace_ms``, measured from the client's last frame. Fails on a zombie left
    open (``close`` ok=0: never reaped within the client's wait), reaped too late,
    or an idle reap of any other user (a live client reaped: every other user
    heartbeats), with or without zombies. Zombies closed for another reason are
    counted, not failed. Inconclusive when the protocol announced no idle timeout
    and ``reap_max_ms`` is not set: there is no bound to judge against.

    The generator's own silence is not the backend's fault: a zombie round
    whose wait overlaps a stretch where its Locust process was late, and a live
    client reaped while its process was late within the idle timeout before
    the close (it could not heartbeat), are set aside and named
    (analysis/verdicts/lateness.py). A set-aside figure neither fails nor
    passes: with no failure measured on time, the verdict is then inconclusive.

    figure: the slowest reap (ms) measured on time; threshold: idle timeout +
    grace (or ``reap_max_ms``); n: zombie rounds.
    """
    th_all, th = th, th["zombie"]
    ev = run.events
    rounds = zombie_rounds(ev)
    live_reaped = live_clients_reaped(ev)
    if rounds.empty and live_reaped.empty:
        if not ran(run, Role.ZOMBIE):
            return skipped(ZOMBIE, "no zombie user in this run")
        return inconclusive(ZOMBIE, "no zombie round ended during the run (run shorter than the idle timeout?)")
    idle = rounds["idle_timeout_ms"].max()
    bound = th["reap_max_ms"] or (idle + th["grace_ms"] if pd.notna(idle) else None)
    stretches = stretches_of(run, th_all)
    round_late = measured_late(
        stretches, process_of(rounds["worker"]), rounds["ts"] - rounds["latency_ms"].fillna(0) / 1000, rounds["ts"]
    )
    silence_s = (idle if pd.notna(idle) else 0.0) / 1000.0
    reaped_late_gen = measured_late(
        stretches, process_of(live_reaped["worker"]), live_reaped["ts"] - silence_s, live_reaped["ts"]
    )
    set_aside = pd.concat([rounds[round_late], live_reaped[reaped_late_gen]]).sort_values("ts")
    rounds, live_reaped = rounds[~round_late], live_reaped[~reaped_late_gen]
    is_reap = rounds["reason"] == CloseReason.IDLE_REAPED
    reaped = rounds[(rounds["ok"] == 1) & is_reap]
    never = rounds[rounds["ok"] == 0]
    other = rounds[(rounds["ok"] == 1) & ~is_reap]
    late = reaped[reaped["latency_ms"] > bound] if bound is not None else reaped.iloc[:0]
    failures = pd.concat([never, late, live_reaped]).sort_values("ts")
    figure = float(reaped["latency_ms"].max()) if len(reaped) else None
    generator = (
        f"{len(set_aside)} set aside as the generator's doing, measured while its process was late "
        f"({describe(stretches)})"
        if len(set_aside)
        else ""
    )
    figures = dict(
        figure=figure,
        unit="ms",
        threshold=bound,
        n=len(rounds) + len(set_aside),
        evidence=evidence_rows(
            pd.concat(
                [failures.assign(what=_why(failures, never, late)), set_aside.assign(what=_set_aside(set_aside))]
            ),
            ("ts", "user", "session", "latency_ms", "what", "note"),
        ),
        details={
            "reaped": len(reaped),
            "never_reaped": len(never),
            "reaped_late": len(late),
            "closed_otherwise": {str(c): int(n) for c, n in other["reason"].value_counts().items() if n},
            "live_clients_reaped": len(live_reaped),
            "set_aside_generator_late": len(set_aside),
            "idle_timeout_ms": idle,
            "backend_zombies_reaped_total": _backend_reaped(run),
        },
    )
    parts = []
    if len(never):
        causes = never["note"].dropna().astype(str)
        cause = causes[causes != ""].iloc[0] if (causes != "").any() else ""
        parts.append(f"{len(never)} zombie(s) never reaped" + (f": {cause}" if cause else ""))
    if len(late):
        parts.append(f"{len(late)} reaped later than {bound:.0f} ms")
    if len(live_reaped):
        parts.append(f"{len(live_reaped)} live (heartbeating) client(s) reaped as zombies")
    if parts:
        return Verdict(ZOMBIE, Status.FAIL, "; ".join([*parts, generator] if generator else parts), **figures)
    if generator:
        return inconclusive(ZOMBIE, f"no failure measured on time, but {generator}", **figures)
    if reaped.empty:
        return inconclusive(ZOMBIE, "no zombie was reaped as idle (only closes for other reasons)", **figures)
    if bound is None:
        return inconclusive(
            ZOMBIE, "the protocol announced no idle timeout to judge the reaps by: set zombie.reap_max_ms", **figures
        )
    return Verdict(
        ZOMBIE,
        Status.PASS,
        f"{len(reaped)} zombies reaped as idle, slowest {figure:.0f} ms <= {bound:.0f} ms",
        **figures,
    )


def _set_aside(rows: pd.DataFrame) -> list[str]:
    return [
        "zombie round measured while the generator was late"
        if role == Role.ZOMBIE
        else "live client reaped while its process was late: the generator's silence"
        for role in rows["role"]
    ]


def _why(failures: pd.DataFrame, never: pd.DataFrame, late: pd.DataFrame) -> list[str]:
    return [
        "never reaped" if i in never.index else "reaped late" if i in late.index else "live client reaped"
        for i in failures.index
    ]


def _backend_reaped(run: Run) -> float | None:
    s = run.server_stats
    if "zombies_reaped_total" not in s or s["zombies_reaped_total"].isna().all():
        return None
    return float(s.groupby("pid")["zombies_reaped_total"].max().sum())


def refresh_failures(events: pd.DataFrame, restarts: list[tuple[float, float]] = ()) -> pd.DataFrame:
    """Refreshes unanswered (any user's) or followed by a close, unenforced expiry and seq gaps (refresh users').

    A close during a backend restart (``restarts``: (down, settled) windows) is the
    restart's doing, not the refresh's: the restart verdict judges it.
    """
    kind, failed_event = events["kind"], events["ok"] == 0
    probe = events["role"] == Role.REFRESH  # what it must see after a refresh or at expiry is known
    failed = (kind == Kind.REFRESH) & failed_event
    failed |= probe & (((kind == Kind.REFRESH_REQUIRED) & failed_event) | (kind == Kind.CHUNK_GAP))
    for down, settled in restarts:
        failed &= ~events["ts"].between(down - 1.0, settled)
    return events[failed & (events["n"] > 0)]


def judge_refresh(run: Run, th: dict) -> Verdict:
    """Every refresh over the open socket is answered, and none is followed by
    a close or a seq gap on that socket; credentials left to expire are closed
    (reason ``credentials_expired``) after the grace (``refresh_required`` ok=0
    when they were not). Judged on every user's refreshes (heartbeat users answer
    "credentials expiring" with one) and on what refresh users see after them.

    A failure within :data:`REFRESH_LOOKBACK_S` after its Locust process was
    late (an answer it could not read in time, a token it could not refresh
    while stopped) is set aside as the generator's doing, not failed; with no
    failure measured on time the verdict is then inconclusive.

    figure: failures; threshold ``max_failures`` (0); n: refreshes.
    """
    th_all, limit = th, th["refresh"]["max_failures"]
    ev = run.events
    refreshes = ev[(ev["kind"] == Kind.REFRESH) & (ev["n"] > 0)]
    n_refreshes = int(refreshes["n"].sum())
    failures = refresh_failures(ev, restart_windows(run))
    stretches = stretches_of(run, th_all)
    generator_late = measured_late(
        stretches, process_of(failures["worker"]), failures["ts"] - REFRESH_LOOKBACK_S, failures["ts"]
    )
    set_aside, failures = failures[generator_late], failures[~generator_late]
    answered = int(refreshes.loc[refreshes["ok"] == 1, "n"].sum())
    figures = dict(
        figure=len(failures),
        unit="failures",
        threshold=limit,
        n=n_refreshes,
        evidence=evidence_rows(
            pd.concat([failures, set_aside.assign(detail=set_aside["detail"].astype(str) + " (generator late)")]),
            ("ts", "user", "session", "kind", "code", "detail"),
        ),
        details={
            "answered": answered,
            "by_detail": {str(d): int(n) for d, n in failures["detail"].value_counts().items() if n},
            "set_aside_generator_late": len(set_aside),
            "expiry_closes": int(
                ev.loc[(ev["kind"] == Kind.CLOSE) & (ev["reason"] == CloseReason.CREDENTIALS_EXPIRED), "n"].sum()
            ),
        },
    )
    if len(failures) > limit:
        return Verdict(
            REFRESH, Status.FAIL, f"{len(failures)} refresh failure(s): {figures['details']['by_detail']}", **figures
        )
    if len(set_aside):
        return inconclusive(
            REFRESH,
            f"no failure measured on time, but {len(set_aside)} set aside as the generator's doing "
            f"({describe(stretches)})",
            **figures,
        )
    if not n_refreshes:
        if run.lacks("refresh"):
            # Not a run that left it out: a protocol that cannot do it (MQTT 3.1.1 has no re-authentication;
            # MQTT 5's needs an authentication method the broker offers). Never a pass, never silent.
            name = (run.meta.get("protocol") or {}).get("name", "")
            return inconclusive(
                REFRESH, f"protocol {name} cannot swap credentials on an open connection: not judged", **figures
            )
        if not ran(run, Role.REFRESH):
            return skipped(REFRESH, "no refresh user in this run")
        return inconclusive(REFRESH, "no token was refreshed (token TTL longer than the run?)", **figures)
    return Verdict(
        REFRESH, Status.PASS, f"{answered} refreshes answered on the open socket, no close or gap after any", **figures
    )
