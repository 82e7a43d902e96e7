"""restart: after a backend restart every client comes back in time and every session survives."""

from __future__ import annotations

import numpy as np
import pandas as pd

from agentws.events import Kind
from agentws.protocol import Close

from ..rundir import Run
from .base import Status, Verdict, evidence_rows, skipped, utc
from .latency import UNPLANNED

NAME = "restart"
GOING_AWAY = str(int(Close.SERVICE_RESTART))
#: Clients cut off by a restart see their disconnect within this many seconds of it.
CUT_OFF_WITHIN_S = 5.0


def restart_times(run: Run) -> list[float]:
    """When the backend went down: the harness's record, else the first 1012 close of each storm."""
    recorded = [float(r["ts"]) for r in (run.meta.get("backend") or {}).get("restarts") or [] if "ts" in r]
    if recorded:
        return sorted(recorded)
    ev = run.events
    closes = np.sort(ev.loc[(ev["kind"] == Kind.CLOSE) & (ev["code"] == GOING_AWAY), "ts"].to_numpy())
    if len(closes) == 0:
        return []
    starts = closes[np.r_[True, np.diff(closes) > 30.0]]
    return [float(t) for t in starts]


def comebacks(events: pd.DataFrame, at: float) -> pd.DataFrame:
    """One row per client cut off by the restart at ``at``: when it came back and whether its session did."""
    ev = events
    cut = ev[
        (ev["kind"] == Kind.DISCONNECT)
        & ev["detail"].isin(UNPLANNED)
        & ev["ts"].between(at - 0.5, at + CUT_OFF_WITHIN_S)
    ]
    users = cut.groupby("user", observed=True)["ts"].min().rename("cut_ts").reset_index()
    after = ev[(ev["ts"] >= at) & ev["user"].isin(users["user"])]
    back = after[(after["kind"] == Kind.RECONNECT) & (after["ok"] == 1)].groupby("user", observed=True)["ts"].min()
    welcome = after[after["kind"] == Kind.WELCOME].groupby("user", observed=True).first()
    out = users.set_index("user")
    out["back_s"] = (back.reindex(out.index) - at).astype(float)
    out["welcome"] = welcome["detail"].astype(str).reindex(out.index)
    out["session"] = welcome["session"].astype(str).reindex(out.index)
    out["resumed"] = out["welcome"].str.startswith("resumed")
    return out.reset_index()


def peak_reconnects_per_second(events: pd.DataFrame, at: float, horizon_s: float) -> int:
    """The storm's height: most successful reconnects in one second after the restart."""
    ev = events
    ts = ev.loc[(ev["kind"] == Kind.RECONNECT) & (ev["ok"] == 1) & ev["ts"].between(at, at + horizon_s), "ts"]
    return int(np.floor(ts - at).value_counts().max()) if len(ts) else 0


def judge(run: Run, th: dict) -> Verdict:
    """For each backend restart (recorded by the harness, or a storm of 1012
    closes): every client cut off by it (an unplanned disconnect within 5 s) has
    resumed within ``back_within_s``, and its first ``welcome`` afterwards says
    ``resumed`` (its session was inside the window, so a new session means the
    backend lost it). Clients whose run ended before the bound are not counted.

    figure: sessions that came back new; threshold ``max_sessions_lost`` (0);
    n: clients cut off. Also reported: the storm's peak reconnects per second,
    the backoff jitter's job being to keep it low.
    """
    th = th["restart"]
    times = restart_times(run)
    if not times:
        return skipped(NAME, "no backend restart in this run")
    _, end = run.load_window
    rows, storms = [], []
    for at in times:
        c = comebacks(run.events, at).assign(restart=utc(at))
        c = c[~(c["back_s"].isna() & (end < at + th["back_within_s"]))]  # ran out of run, not of time
        rows.append(c)
        storms.append(
            {
                "at": utc(at),
                "clients": len(c),
                "peak_reconnects_per_s": peak_reconnects_per_second(run.events, at, th["back_within_s"]),
            }
        )
    clients = pd.concat(rows, ignore_index=True)
    late = clients[~(clients["back_s"] <= th["back_within_s"])]
    lost = clients[clients["welcome"].notna() & ~clients["resumed"].astype(bool)]
    bad = pd.concat([late.assign(what="not back within the bound"), lost.assign(what="session came back new")])
    figures = dict(
        figure=len(lost),
        unit="sessions lost",
        threshold=th["max_sessions_lost"],
        n=len(clients),
        evidence=evidence_rows(
            bad.rename(columns={"cut_ts": "ts"}), ("ts", "user", "session", "back_s", "welcome", "what")
        ),
        details={
            "restarts": storms,
            "back_s_p50": float(clients["back_s"].median()) if len(clients) else None,
            "back_s_max": float(clients["back_s"].max()) if len(clients) else None,
            "not_back": len(late),
            "back_within_s": th["back_within_s"],
        },
    )
    if clients.empty:
        return Verdict(NAME, Status.INCONCLUSIVE, "no client was connected when the backend restarted", **figures)
    problems = []
    if len(lost) > th["max_sessions_lost"]:
        problems.append(f"{len(lost)} of {len(clients)} sessions came back new ({lost['welcome'].iloc[0]})")
    if len(late):
        problems.append(f"{len(late)} client(s) not back within {th['back_within_s']:.0f} s")
    peak = max(s["peak_reconnects_per_s"] for s in storms)
    if problems:
        return Verdict(NAME, Status.FAIL, "; ".join(problems), **figures)
    return Verdict(
        NAME,
        Status.PASS,
        f"{len(clients)} clients back within {clients['back_s'].max():.1f} s, every session resumed; "
        f"peak {peak} reconnects/s",
        **figures,
    )
