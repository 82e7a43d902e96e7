"""harness health: was the load generator itself fit to measure?"""

from __future__ import annotations

import pandas as pd

from ..rundir import Run
from .base import Status, Verdict, inconclusive

NAME = "harness-health"


def sustained_cpu(harness_samples: pd.DataFrame, samples: int) -> pd.Series:
    """Per Locust process: the highest CPU % held for ``samples`` consecutive samples."""
    s = harness_samples.dropna(subset=["cpu_percent"]).sort_values("ts")
    held = s.groupby("source", observed=True)["cpu_percent"].transform(lambda c: c.rolling(samples).min())
    return held.groupby(s["source"], observed=True).max().dropna()


def events_lost(meta: dict) -> int:
    return int((meta.get("recording") or {}).get("events_undelivered") or 0)


def judge(run: Run, th: dict) -> Verdict:
    """Inconclusive (never fail: it is not the backend's fault, never pass: the
    figures are suspect) when a Locust process held more than
    ``cpu_max_percent`` CPU for ``sustained_samples`` consecutive samples (its
    latencies include its own queueing), when events never reached the master,
    when the run did not close its directory, or when an input file was bad.

    figure: the highest sustained CPU % of any Locust process; n: its samples.
    """
    th = th["harness_health"]
    harness = run.harness_samples()
    cpu = sustained_cpu(harness, int(th["sustained_samples"]))
    lost = events_lost(run.meta)
    worst = float(cpu.max()) if len(cpu) else None
    figures = dict(
        figure=worst,
        unit="% CPU",
        threshold=th["cpu_max_percent"],
        n=len(harness),
        details={
            "sustained_cpu_by_process": {str(k): float(v) for k, v in cpu.items()},
            "events_received": (run.meta.get("recording") or {}).get("events_received"),
            "events_lost": lost,
            "input_problems": [str(p) for p in run.problems],
        },
    )
    problems = [str(p) for p in run.problems]
    if worst is not None and worst > th["cpu_max_percent"]:
        problems.append(f"{cpu.idxmax()} held {worst:.0f} % CPU: latencies include the harness's own queueing")
    if lost > th["max_events_lost"]:
        problems.append(f"{lost} events never reached the master: event verdicts may miss evidence")
    if problems:
        return inconclusive(NAME, "; ".join(problems), **figures)
    if harness.empty:
        return inconclusive(
            NAME, "no samples of the Locust processes: cannot tell whether the harness kept up", **figures
        )
    return Verdict(NAME, Status.PASS, f"Locust processes at most {worst:.0f} % CPU sustained, no event lost", **figures)


def overloaded(verdict: Verdict, th: dict) -> bool:
    return verdict.figure is not None and verdict.figure > th["harness_health"]["cpu_max_percent"]
