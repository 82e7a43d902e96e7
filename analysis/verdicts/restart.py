"""restart: after a backend restart every client comes back in time and every session survives."""

from __future__ import annotations

import numpy as np
import pandas as pd

from contract.events import RESUMED_DETAILS, Detail, Kind

from ..rundir import Run
from .base import Status, Verdict, evidence_rows, skipped, utc
from .causes import UNPLANNED, restart_windows
from .lateness import describe, measured_late, process_of, stretches_of
from .messages import CONTEXT_CHANGED, delivery_failures

NAME = "restart"
#: Clients cut off by a restart see their disconnect within this many seconds of it.
CUT_OFF_WITHIN_S = 5.0
#: Clients with a session event this long before a restart held a session at it.
ACTIVE_BEFORE_S = 10.0
#: A planned gap past the resume window (users/conversation.py): its next session is new by design.
EXTENDED_GAP = Detail.PLANNED_GAP_EXTENDED


def _away_past_the_window(ev: pd.DataFrame, at: float) -> set:
    """Users whose first welcome after ``at`` ends a gap they planned past the resume window (it may have begun
    just before the restart or just after it): their new session is by design, not the restart's doing."""
    disconnects = ev[ev["kind"] == Kind.DISCONNECT]
    first_back = ev[(ev["ts"] >= at) & (ev["kind"] == Kind.WELCOME)].groupby("user", observed=True)["ts"].min()
    until = disconnects["user"].map(first_back).astype(float).fillna(at + CUT_OFF_WITHIN_S)
    gap = disconnects[disconnects["ts"] < until].groupby("user", observed=True)["detail"].last()
    return set(gap[gap == EXTENDED_GAP].index)


def comebacks(events: pd.DataFrame, at: float, horizon_s: float, up: float | None = None) -> pd.DataFrame:
    """One row per client with a session at the restart at ``at``: when it came back, whether its session
    did, and whether what the session held came back with it (no frame lost, same context) within ``horizon_s``.

    Whether the session came back is its first open once the backend is ``up`` again (default ``at``): a
    backend that goes on accepting while it stops (mosquitto between SIGTERM and its exit) may resume a
    session in the old process, which says nothing of the new one.

    Clients connected at the restart are *cut off* (``cut_ts``: their disconnect).
    Clients away in a planned gap hold a session too: their next welcome counts,
    unless the gap was planned past the resume window (a new session is expected).
    """
    ev = events
    cut = ev[
        (ev["kind"] == Kind.DISCONNECT)
        & ev["detail"].isin(UNPLANNED)
        & ev["ts"].between(at - 0.5, at + CUT_OFF_WITHIN_S)
    ]
    around = ev[ev["ts"].between(at - ACTIVE_BEFORE_S, at) & (ev["session"] != "")]
    expiring = _away_past_the_window(ev, at) - set(cut["user"])
    users = pd.DataFrame({"user": sorted(set(around["user"]) - expiring)})
    users["cut_ts"] = users["user"].map(cut.groupby("user", observed=True)["ts"].min())
    users["worker"] = users["user"].map(around.groupby("user", observed=True)["worker"].last().astype(str))
    after = ev[(ev["ts"] >= at) & ev["user"].isin(users["user"])]
    back = after[(after["kind"] == Kind.RECONNECT) & (after["ok"] == 1)].groupby("user", observed=True)["ts"].min()
    up = at if up is None else up
    welcome = after[(after["kind"] == Kind.WELCOME) & (after["ts"] >= up)].groupby("user", observed=True).first()
    out = users.set_index("user")
    out["back_s"] = (back.reindex(out.index) - at).astype(float).where(out["cut_ts"].notna())
    out["welcome"] = welcome["detail"].astype(str).reindex(out.index)
    out["session"] = welcome["session"].astype(str).reindex(out.index)
    out["resumed"] = out["welcome"].isin(RESUMED_DETAILS)
    soon = after[after["ts"] <= at + horizon_s]
    damaged = pd.concat(
        [
            delivery_failures(soon),
            soon[(soon["kind"] == Kind.HISTORY_CHECK) & (soon["ok"] == 0)],
            soon[(soon["kind"] == Kind.WELCOME) & soon["detail"].isin(CONTEXT_CHANGED)],
        ]
    )
    first_damage = damaged.groupby("user", observed=True).first()
    out["damage"] = (first_damage["kind"].astype(str) + ":" + first_damage["detail"].astype(str)).reindex(out.index)
    return out.reset_index()


def peak_reconnects_per_second(events: pd.DataFrame, at: float, horizon_s: float) -> int:
    """The storm's height: most successful reconnects in one second after the restart."""
    ev = events
    back = ev[(ev["kind"] == Kind.RECONNECT) & (ev["ok"] == 1) & ev["ts"].between(at, at + horizon_s)]
    return int(back.groupby(np.floor(back["ts"] - at))["n"].sum().max()) if len(back) else 0


def failed_restarts(run: Run) -> list[dict]:
    """The harness's records of restarts after which the backend did not start again."""
    return [r for r in (run.meta.get("backend") or {}).get("restarts") or [] if "ts" in r and r.get("ok") is False]


def judge(run: Run, th: dict) -> Verdict:
    """For each backend restart (recorded by the harness, or a storm of 1012
    closes): every client cut off by it (an unplanned disconnect within 5 s) has
    resumed within ``back_within_s``, and its first ``welcome`` afterwards says
    ``resumed`` (its session was inside the window, so a new session means the
    backend lost it), with its state: no delivery failure, history difference
    or context change for that client within the bound (a backend that forgot
    the last pushes or stream frames resumes the session but not its content).
    Clients whose run ended before the bound are not counted. A client not
    back within the bound while its Locust process was late in that time
    (analysis/verdicts/lateness.py) is set aside, not failed: its time to
    come back is unknown, and the verdict cannot pass while it is. A restart
    after which the harness's backend did not start again fails, naming its
    error.

    This verdict, not reconnect-latency, judges the reconnects a restart caused:
    their time to come back against ``back_within_s``.

    figure: sessions that came back new; threshold ``max_sessions_lost`` (0);
    n: clients cut off. Also reported: the storm's peak reconnects per second,
    the backoff jitter's job being to keep it low.
    """
    th_all, th = th, th["restart"]
    times = [down for down, _ in restart_windows(run)]
    if not times:
        return skipped(NAME, "no backend restart in this run")
    _, end = run.load_window
    recorded = [r for r in (run.meta.get("backend") or {}).get("restarts") or [] if "ts" in r]
    ready = {float(r["ts"]): float(r["ready_ts"]) for r in recorded if r.get("ready_ts")}
    rows, storms = [], []
    for at in times:
        c = comebacks(run.events, at, th["back_within_s"], ready.get(at)).assign(restart=utc(at), restart_ts=at)
        c = c[~(c["back_s"].isna() & c["cut_ts"].notna() & (end < at + th["back_within_s"]))]  # run ended first
        rows.append(c)
        storms.append(
            {
                "at": utc(at),
                "clients": len(c),
                "peak_reconnects_per_s": peak_reconnects_per_second(run.events, at, th["back_within_s"]),
            }
        )
    clients = pd.concat(rows, ignore_index=True)
    late = clients[clients["cut_ts"].notna() & ~(clients["back_s"] <= th["back_within_s"])]
    stretches = stretches_of(run, th_all)
    until = late["restart_ts"] + th["back_within_s"]
    generator_late = measured_late(stretches, process_of(late["worker"]), late["cut_ts"], until)
    set_aside, late = late[generator_late], late[~generator_late]
    new = clients["welcome"].notna() & ~clients["resumed"].astype(bool)
    lost = clients[new | clients["damage"].notna()]
    bad = pd.concat(
        [
            late.assign(what="not back within the bound"),
            set_aside.assign(what="not back within the bound while the generator was late (set aside)"),
            clients[new].assign(what="session came back new"),
            clients[~new & clients["damage"].notna()].assign(what="session resumed without its state"),
        ]
    )
    figures = dict(
        figure=len(lost),
        unit="sessions lost",
        threshold=th["max_sessions_lost"],
        n=len(clients),
        evidence=evidence_rows(
            bad.rename(columns={"cut_ts": "ts"}), ("ts", "user", "session", "back_s", "welcome", "damage", "what")
        ),
        details={
            "restarts": storms,
            "back_s_p50": float(clients["back_s"].median()) if len(clients) else None,
            "back_s_max": float(clients["back_s"].max()) if len(clients) else None,
            "cut_off": int(clients["cut_ts"].notna().sum()),
            "not_back": len(late),
            "set_aside_generator_late": len(set_aside),
            "back_within_s": th["back_within_s"],
        },
    )
    problems = [
        f"the backend did not come back after the restart at {utc(r['ts'])}: {r.get('error') or 'no error recorded'}"
        for r in failed_restarts(run)
    ]
    if clients.empty and not problems:
        return Verdict(NAME, Status.INCONCLUSIVE, "no client was connected when the backend restarted", **figures)
    if len(lost) > th["max_sessions_lost"]:
        problems.append(
            f"{len(lost)} of {len(clients)} sessions lost across the restart "
            f"({int(new.sum())} came back new, {int((~new & clients['damage'].notna()).sum())} without their state)"
        )
    if len(late):
        problems.append(f"{len(late)} client(s) not back within {th['back_within_s']:.0f} s")
    peak = max(s["peak_reconnects_per_s"] for s in storms)
    if problems:
        return Verdict(NAME, Status.FAIL, "; ".join(problems), **figures)
    if len(set_aside):
        return Verdict(
            NAME,
            Status.INCONCLUSIVE,
            f"{len(set_aside)} client(s) not back within {th['back_within_s']:.0f} s while their Locust process was "
            f"late: their time to come back is unknown ({describe(stretches)})",
            **figures,
        )
    return Verdict(
        NAME,
        Status.PASS,
        f"{int(clients['cut_ts'].notna().sum())} clients cut off, all back within {clients['back_s'].max():.1f} s; "
        f"all {len(clients)} sessions held at the restart resumed intact; peak {peak} reconnects/s",
        **figures,
    )
