"""When the load generator itself was late, and which client figures were measured then.

Every Locust process samples its own event-loop lag (``loop_lag_ms`` in
``samples.csv``: the worst lateness of its timers since its previous sample,
harness/lag.py). A stretch where a process was late beyond
``harness_health.max_loop_lag_ms`` is a stretch where its clients' clocks,
reads and heartbeats ran late: a latency measured across it includes the
generator's own delay, and a client silent in it may have been silent because
its process was stopped, not because the backend misjudged it. Such figures are
*set aside*: they never fail and never pass a verdict.

A sample reporting lag ``L`` covers ``[loop_late_from, loop_late_until]``: from
when the process's lateness began to when it ended (harness/lag.py). Without
them (an older run) it is placed conservatively, ``[prev - L, ts]``: the late
wake-up happened somewhere after the previous lag sample ``prev`` and began
``L`` before it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..rundir import Run
from .base import utc


def late_stretches(samples: pd.DataFrame, max_lag_ms: float) -> pd.DataFrame:
    """One row per sample whose process was late beyond ``max_lag_ms``: ``source, start, end, lag_ms``.

    ``samples``: rows of the Locust processes (:meth:`analysis.rundir.Run.harness_samples`).
    Overlapping stretches of one process are merged (their worst lag kept).
    """
    lagged = samples[["ts", "source", "loop_lag_ms", "loop_late_from", "loop_late_until"]]
    lagged = lagged.dropna(subset=["loop_lag_ms"]).sort_values("ts", kind="stable")
    lagged["source"] = lagged["source"].astype(str)
    prev = lagged.groupby("source")["ts"].shift()
    first_gap = lagged.groupby("source")["ts"].diff().groupby(lagged["source"]).transform("median")
    bracket = prev.fillna(lagged["ts"] - first_gap.fillna(1.0)) - lagged["loop_lag_ms"] / 1000.0
    lagged["start"] = lagged["loop_late_from"].fillna(bracket)
    lagged["end"] = lagged["loop_late_until"].fillna(lagged["ts"])
    late = lagged[lagged["loop_lag_ms"] > max_lag_ms].rename(columns={"loop_lag_ms": "lag_ms"})
    return _merged(late[["source", "start", "end", "lag_ms"]])


def _merged(stretches: pd.DataFrame) -> pd.DataFrame:
    """Per source, overlapping stretches as one (earliest start, latest end, worst lag)."""
    s = stretches.sort_values(["source", "start"], kind="stable")
    reach = s.groupby("source")["end"].cummax().groupby(s["source"]).shift()
    s = s.assign(group=(~(s["start"] <= reach)).cumsum())
    merged = s.groupby("group").agg(source=("source", "first"), start=("start", "min"), end=("end", "max"))
    merged["lag_ms"] = s.groupby("group")["lag_ms"].max()
    return merged.reset_index(drop=True)


def stretches_of(run: Run, th: dict) -> pd.DataFrame:
    """The run's late stretches at the harness-health threshold."""
    return late_stretches(run.harness_samples(), th["harness_health"]["max_loop_lag_ms"])


def process_of(worker: pd.Series) -> pd.Series:
    """The samples.csv source of the process that recorded an event (events.csv ``worker``)."""
    w = worker.astype(str)
    return w.where(w.isin(["local", "master"]), "worker:" + w)


def measured_late(stretches: pd.DataFrame, process: pd.Series, start: pd.Series, end: pd.Series) -> np.ndarray:
    """Per figure (measured by ``process`` over ``[start, end]``): did a late stretch of that process overlap it?"""
    late = np.zeros(len(process), dtype=bool)
    proc = process.astype(str).to_numpy()
    t0, t1 = start.to_numpy(dtype=float), end.to_numpy(dtype=float)
    for source, s0, s1 in stretches[["source", "start", "end"]].itertuples(index=False):  # few stretches
        late |= (proc == source) & (t0 <= s1) & (t1 >= s0)
    return late


def describe(stretches: pd.DataFrame, limit: int = 3) -> str:
    """The stretches in words: how many, how long in all, the worst ones with process and time."""
    if stretches.empty:
        return "the generator was never late"
    total = float((stretches["end"] - stretches["start"]).sum())
    worst = stretches.nlargest(limit, "lag_ms")
    named = ", ".join(f"{r.source} {r.lag_ms:,.0f} ms late at {utc(r.end)}" for r in worst.itertuples())
    return f"{len(stretches)} stretch(es) where the generator was late, {total:.1f} s in all (worst: {named})"


def as_evidence(stretches: pd.DataFrame, limit: int) -> list[dict]:
    worst = stretches.nlargest(limit, "lag_ms").sort_values("start")
    return [
        {"time": utc(r.start), "until": utc(r.end), "process": r.source, "lag_ms": round(float(r.lag_ms), 1)}
        for r in worst.itertuples()
    ]
