"""reconnect-latency: how long a client is without its session, judged on exact percentiles."""

from __future__ import annotations

import numpy as np
import pandas as pd

from agentws.events import Kind

from ..rundir import Run
from ..stats import Quantile, min_samples_for_upper_bound, quantile
from .base import MAX_EVIDENCE, Status, Verdict, evidence_rows, inconclusive
from .causes import BRIEF_GAPS, UNPLANNED, restart_windows

NAME = "reconnect-latency"

#: A failed reconnect the client chose not to retry (a close code that says stop): not a latency.
NOT_RETRIED = "stopped by close code"


def reconnects(events: pd.DataFrame, restarts: list[tuple[float, float]] = ()) -> pd.DataFrame:
    """Every reconnect attempt with its latency (inf if it never came back) and the cause of the gap.

    The cause is ``restart`` when the reconnect finished during a backend
    restart's storm (``restarts``: (down, settled) windows), else the detail of the
    same user's disconnect just before: a planned brief gap, a planned longer
    gap, or unplanned (the server closed, the link died).
    """
    ev = events[["ts", "user", "session", "kind", "ok", "latency_ms", "code", "detail"]]
    rec = ev[(ev["kind"] == Kind.RECONNECT) & (ev["detail"] != NOT_RETRIED)].copy()
    rec["latency_ms"] = rec["latency_ms"].where(rec["ok"] == 1, np.inf)
    gone = ev.loc[ev["kind"] == Kind.DISCONNECT, ["ts", "user", "detail"]].rename(columns={"detail": "gap"})
    rec["user"] = rec["user"].astype(str)
    gone["user"] = gone["user"].astype(str)
    rec = pd.merge_asof(rec.sort_values("ts"), gone.sort_values("ts"), on="ts", by="user", direction="backward")
    gap = rec["gap"].astype(str)
    in_restart = np.zeros(len(rec), dtype=bool)
    for down, settled in restarts:
        in_restart |= rec["ts"].between(down, settled).to_numpy()
    rec["cause"] = np.select(
        [in_restart, gap.isin(BRIEF_GAPS), gap.isin(UNPLANNED), gap.str.startswith("planned_gap")],
        ["restart", "brief", "unplanned", "planned"],
        "unknown",
    )
    return rec


def percentiles(latency: pd.Series, confidence: float) -> dict[str, Quantile]:
    return {f"p{round(p * 100)}": quantile(latency, p, confidence) for p in (0.5, 0.95, 0.99)}


def judge_p99(latency: pd.Series, limit: float, confidence: float) -> tuple[Status, Quantile, str]:
    """Pass when the upper bound of p99 is within ``limit``; fail when even its lower bound exceeds it."""
    q = quantile(latency, 0.99, confidence)
    if q.n == 0:
        return Status.INCONCLUSIVE, q, "no reconnects"
    if q.lower is not None and q.lower > limit:
        return Status.FAIL, q, f"p99 {q.value:.0f} ms > {limit:.0f} ms (even its lower bound is {q.lower:.0f} ms)"
    if q.upper is not None and q.upper <= limit:
        return Status.PASS, q, f"p99 {q.value:.0f} ms, bound {q.upper:.0f} ms <= {limit:.0f} ms"
    if q.upper is None:
        need = min_samples_for_upper_bound(0.99, confidence)
        return Status.INCONCLUSIVE, q, f"{q.n} reconnects: a bound on p99 needs {need}"
    return Status.INCONCLUSIVE, q, f"p99 {q.value:.0f} ms but its bound {q.upper:.0f} ms > {limit:.0f} ms"


def judge(run: Run, th: dict) -> Verdict:
    """From the moment a disconnect is detected (unplanned) or the client decides
    to return (planned) to the ``welcome`` of the resumed session; a reconnect that
    never came back counts as infinitely slow.

    Two judgements, each on the exact sample p99 with distribution-free
    order-statistic bounds at ``confidence``: all reconnects against
    ``p99_max_ms``, planned brief gaps against ``brief_p99_max_ms``. A
    judgement passes when the p99's upper bound is within its limit, fails when
    the lower bound is above it, and is inconclusive in between, which includes
    having fewer reconnects than the bound needs (299 at 95 %).
    """
    th = th["reconnect_latency"]
    conf = th["confidence"]
    rec = reconnects(run.events, restart_windows(run))
    if rec.empty:
        return inconclusive(NAME, "no reconnects in this run", unit="ms", threshold=th["p99_max_ms"])
    status, q, why = judge_p99(rec["latency_ms"], th["p99_max_ms"], conf)
    judgements = {"all": (status, q, why)}
    brief = rec[rec["cause"] == "brief"]  # a flap that ran into a restart waited for the backend, not a gap
    if len(brief):
        judgements["brief"] = judge_p99(brief["latency_ms"], th["brief_p99_max_ms"], conf)
    statuses = [s for s, _, _ in judgements.values()]
    overall = (
        Status.FAIL
        if Status.FAIL in statuses
        else Status.INCONCLUSIVE
        if Status.INCONCLUSIVE in statuses
        else Status.PASS
    )
    summary = "; ".join(f"{name}: {w}" for name, (_, _, w) in judgements.items())
    by_cause = {
        cause: {k: v.value for k, v in percentiles(group["latency_ms"], conf).items()} | {"n": len(group)}
        for cause, group in rec.groupby("cause")
    }
    slowest = rec.nlargest(MAX_EVIDENCE, "latency_ms")
    return Verdict(
        NAME,
        overall,
        summary,
        figure=q.value,
        unit="ms",
        threshold=th["p99_max_ms"],
        n=q.n,
        bound=q.upper,
        bound_label=f"{conf:.0%} upper bound of p99",
        evidence=evidence_rows(slowest, ("ts", "user", "session", "latency_ms", "cause", "gap")),
        details={
            "percentiles": {k: v.value for k, v in percentiles(rec["latency_ms"], conf).items()},
            "p99_lower_bound": q.lower,
            "by_cause": by_cause,
            "never_back": int(np.isinf(rec["latency_ms"]).sum()),
            "judgements": {
                name: {"status": str(s), "why": w, "p99": x.value, "upper": x.upper, "lower": x.lower, "n": x.n}
                for name, (s, x, w) in judgements.items()
            },
            "brief_threshold_ms": th["brief_p99_max_ms"],
        },
    )
