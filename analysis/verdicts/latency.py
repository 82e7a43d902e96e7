"""reconnect-latency: how long a client is without its session, judged on exact percentiles."""

from __future__ import annotations

import numpy as np
import pandas as pd

from contract.events import Detail, Kind
from contract.histogram import RELATIVE_ERROR

from ..rundir import Run
from ..stats import Quantile, min_samples_for_upper_bound, quantile
from .base import MAX_EVIDENCE, Status, Verdict, evidence_rows, inconclusive
from .causes import BRIEF_GAPS, UNPLANNED, restart_windows
from .lateness import describe, measured_late, process_of, stretches_of

NAME = "reconnect-latency"
PLANNED_GAPS = (Detail.PLANNED_GAP_BRIEF, Detail.PLANNED_GAP_MEDIUM, Detail.PLANNED_GAP_EXTENDED)

#: A failed reconnect the client chose not to retry (a close code that says stop): not a latency.
NOT_RETRIED = Detail.STOPPED_BY_CLOSE


def reconnects(events: pd.DataFrame, restarts: list[tuple[float, float]] = ()) -> pd.DataFrame:
    """Every reconnect attempt with its latency (inf if it never came back), how many it counts (``n``: counted
    reconnects come as one row per bin and latency bucket) and the cause of the gap.

    The cause is ``restart`` when the reconnect finished during a backend
    restart's storm (``restarts``: (down, settled) windows), else the ``gap``
    before it (the same user's last disconnect): a planned brief gap, a planned
    longer gap, or unplanned (the server closed, the link died).
    """
    ev = events[["ts", "worker", "user", "session", "kind", "ok", "latency_ms", "code", "detail", "gap", "n", "span_s"]]
    rec = ev[(ev["kind"] == Kind.RECONNECT) & (ev["detail"] != NOT_RETRIED)].copy()
    rec["since"] = rec["ts"] - rec["latency_ms"].fillna(0.0) / 1000.0  # when the client started waiting
    rec["until"] = rec["ts"] + rec["span_s"]
    rec["latency_ms"] = rec["latency_ms"].where(rec["ok"] == 1, np.inf)
    gap = rec["gap"].astype(str)
    in_restart = np.zeros(len(rec), dtype=bool)
    for down, settled in restarts:
        in_restart |= ((rec["until"] >= down) & (rec["ts"] <= settled)).to_numpy()
    rec["cause"] = np.select(
        [in_restart, gap.isin(BRIEF_GAPS), gap.isin(UNPLANNED), gap.isin(PLANNED_GAPS)],
        ["restart", "brief", "unplanned", "planned"],
        "unknown",
    )
    return rec.sort_values("ts", kind="stable")


def as_weighted(latency: pd.DataFrame | pd.Series) -> pd.DataFrame:
    """Latencies as the judgements take them: a frame with ``latency_ms``, ``n`` and ``span_s`` (a plain series
    of exact latencies is one event each)."""
    if isinstance(latency, pd.Series):
        return pd.DataFrame({"latency_ms": latency.to_numpy(dtype=float), "n": 1, "span_s": 0.0})
    return latency


def error_of(frame: pd.DataFrame) -> float:
    """The relative error of latencies read from ``frame``: the histogram's when some are counted in buckets."""
    counted = (frame["span_s"] > 0) & (frame["n"] > 0)
    return RELATIVE_ERROR if bool(counted.any()) else 0.0


def quantile_of(frame: pd.DataFrame, p: float, confidence: float) -> Quantile:
    """The p-quantile of ``frame``'s latencies, each row weighted by the events it counts."""
    return quantile(frame["latency_ms"], p, confidence, weights=frame["n"], error=error_of(frame))


def percentiles(frame: pd.DataFrame | pd.Series, confidence: float) -> dict[str, Quantile]:
    frame = as_weighted(frame)
    return {f"p{round(p * 100)}": quantile_of(frame, p, confidence) for p in (0.5, 0.95, 0.99)}


def judge_p99(
    frame: pd.DataFrame | pd.Series, limit: float, confidence: float, set_aside: int = 0
) -> tuple[Status, Quantile, str]:
    """Pass when the upper bound of p99 is within ``limit``; fail when even its lower bound exceeds it.

    ``frame``: latencies with their weights (``latency_ms``, ``n``, ``span_s``). Latencies counted in
    histogram buckets are judged with the histogram's error: the upper bound widened by it, the lower one
    narrowed, so the rounding can neither pass nor fail a judgement.

    ``set_aside``: reconnects measured while the generator was late, their values
    unknown. They are counted as slower than any other for the upper bound and
    faster than any other for the lower one, so they can neither pass nor fail
    the judgement, only leave it undecided. The figure is the p99 of the rest.
    """
    frame = as_weighted(frame)
    q = quantile_of(frame, 0.99, confidence)
    if q.n == 0 and not set_aside:
        return Status.INCONCLUSIVE, q, "no reconnects"
    values, weights, err = frame["latency_ms"].to_numpy(dtype=float), frame["n"].to_numpy(), q.error
    high = quantile(np.r_[values, np.inf], 0.99, confidence, weights=np.r_[weights, set_aside], error=err)
    low = quantile(np.r_[values, -np.inf], 0.99, confidence, weights=np.r_[weights, set_aside], error=err)
    late = f" ({set_aside} measured while the generator was late set aside)" if set_aside else ""
    if low.lower_judged is not None and low.lower_judged > limit:
        return (
            Status.FAIL,
            q,
            f"p99 {q.value:.0f} ms > {limit:.0f} ms (even its lower bound is {low.lower:.0f} ms){late}",
        )
    if high.upper_judged is not None and high.upper_judged <= limit:
        return Status.PASS, q, f"p99 {q.value:.0f} ms, bound {high.upper:.0f} ms <= {limit:.0f} ms{late}"
    if q.n == 0:
        return Status.INCONCLUSIVE, q, f"all {set_aside} reconnects were measured while the generator was late"
    if q.upper is None:
        need = min_samples_for_upper_bound(0.99, confidence)
        return Status.INCONCLUSIVE, q, f"{q.n} reconnects: a bound on p99 needs {need}{late}"
    if set_aside and q.upper_judged <= limit:
        return (
            Status.INCONCLUSIVE,
            q,
            f"p99 {q.value:.0f} ms within {limit:.0f} ms on {q.n} reconnects, but {set_aside} measured while the "
            "generator was late are too many to bound it",
        )
    return Status.INCONCLUSIVE, q, f"p99 {q.value:.0f} ms but its bound {q.upper:.0f} ms > {limit:.0f} ms{late}"


def worst(statuses) -> Status:
    """Fail over inconclusive over pass."""
    statuses = list(statuses)
    return next((s for s in (Status.FAIL, Status.INCONCLUSIVE) if s in statuses), Status.PASS)


def judge(run: Run, th: dict) -> Verdict:
    """From the moment a disconnect is detected (unplanned) or the client decides
    to return (planned) to the ``welcome`` of the resumed session; a reconnect that
    never came back counts as infinitely slow.

    Reconnects through a backend restart (finished between the restart and
    5 s after the backend was ready again: :func:`analysis.verdicts.causes.restart_windows`)
    are not judged here: they wait for a backend that is down on purpose, and the
    restart verdict judges how long its clients took to come back
    (``restart.back_within_s``). Their percentiles are reported beside.

    Two judgements on the rest, each on the exact sample p99 with
    distribution-free order-statistic bounds at ``confidence``: every reconnect
    outside restarts against ``p99_max_ms``, planned brief gaps against
    ``brief_p99_max_ms``. A judgement passes when the p99's upper bound is within
    its limit, fails when the lower bound is above it, and is inconclusive in
    between, which includes having fewer reconnects than the bound needs (299 at
    95 %). A reconnect measured while its Locust process was late
    (analysis/verdicts/lateness.py) is set aside: its value is unknown, so it
    counts as the slowest for the upper bound and the fastest for the lower one,
    and can only leave a judgement undecided, never pass or fail it.
    """
    th_all, th = th, th["reconnect_latency"]
    conf = th["confidence"]
    rec = reconnects(run.events, restart_windows(run))
    if not rec["n"].sum():
        return inconclusive(NAME, "no reconnects in this run", unit="ms", threshold=th["p99_max_ms"])
    stretches = stretches_of(run, th_all)
    rec["late"] = measured_late(stretches, process_of(rec["worker"]), rec["since"], rec["until"])
    through_restart = rec[rec["cause"] == "restart"]
    judged = rec[rec["cause"] != "restart"]
    groups = {"all": judged}
    brief = judged[judged["cause"] == "brief"]
    if brief["n"].sum():
        groups["brief"] = brief
    limits = {"all": th["p99_max_ms"], "brief": th["brief_p99_max_ms"]}
    judgements = {
        name: judge_p99(g[~g["late"]], limits[name], conf, int(g.loc[g["late"], "n"].sum()))
        for name, g in groups.items()
    }
    status, q, _ = judgements["all"]
    overall = worst(s for s, _, _ in judgements.values())
    summary = "; ".join(f"{name}: {w}" for name, (_, _, w) in judgements.items())
    if not judged["n"].sum():
        summary = "no reconnects outside backend restarts"
    restarted = int(through_restart["n"].sum())
    if restarted:
        p = percentiles(through_restart, conf)
        summary += f"; {restarted} through a restart, p99 {p['p99'].value:,.0f} ms (judged by restart)"
    if q.error:
        summary += f" (from latency histograms: within {q.error:.1%})"
    if rec["late"].any():
        summary += f"; {describe(stretches)}"
    by_cause = {
        cause: {k: v.value for k, v in percentiles(group, conf).items()} | {"n": int(group["n"].sum())}
        for cause, group in rec.groupby("cause")
    }
    named = judged[~judged["late"] & (judged["user"] != "")]  # a row that names a user and a session
    slowest = named.nlargest(MAX_EVIDENCE, "latency_ms")
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
            "percentiles": {k: v.value for k, v in percentiles(judged, conf).items()},
            "p99_lower_bound": q.lower,
            "relative_error": q.error,
            "by_cause": by_cause,
            "through_restart": restarted,
            "set_aside_late": int(rec.loc[rec["late"], "n"].sum()),
            "never_back": int(judged.loc[np.isinf(judged["latency_ms"]), "n"].sum()),
            "judgements": {
                name: {"status": str(s), "why": w, "p99": x.value, "upper": x.upper, "lower": x.lower, "n": x.n}
                for name, (s, x, w) in judgements.items()
            },
            "brief_threshold_ms": th["brief_p99_max_ms"],
        },
    )
