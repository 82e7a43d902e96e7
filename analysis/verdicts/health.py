"""harness health: was the load generator itself fit to measure?"""

from __future__ import annotations

import pandas as pd

from ..rundir import Run
from .base import MAX_EVIDENCE, Status, Verdict, inconclusive, utc
from .lateness import as_evidence, describe, stretches_of

NAME = "harness-health"


def sustained_cpu(harness_samples: pd.DataFrame, samples: int) -> pd.Series:
    """Per Locust process: the highest CPU % held for ``samples`` consecutive samples."""
    s = harness_samples.dropna(subset=["cpu_percent"]).sort_values("ts")
    held = s.groupby("source", observed=True)["cpu_percent"].transform(lambda c: c.rolling(samples).min())
    return held.groupby(s["source"], observed=True).max().dropna()


def events_lost(meta: dict) -> int:
    return int((meta.get("recording") or {}).get("events_undelivered") or 0)


def workers_lost(meta: dict) -> list[dict]:
    """Workers that went missing during the run, or never sent their final event batch.

    Each: ``worker``, ``lost_utc`` (when the master saw it go missing, if it did),
    ``last_batch_utc`` (its last event batch: what it did after is unknown), ``users``.
    """
    recording = meta.get("recording") or {}
    lost = {w["worker"]: dict(w) for w in recording.get("workers_lost") or [] if "worker" in w}
    for worker in recording.get("workers_not_flushed") or []:
        lost.setdefault(worker, {"worker": worker})
    per_worker = recording.get("per_worker") or {}
    for worker, entry in lost.items():
        entry.setdefault("last_batch_utc", (per_worker.get(worker) or {}).get("last_batch_utc"))
    return list(lost.values())


def lost_worker_text(entry: dict) -> str:
    """One lost worker in words: who, when, the users that went with it, what is unknown."""
    when = f" at {utc(entry['lost_utc'])}" if entry.get("lost_utc") else ""
    users = entry.get("users") or {}
    went = (
        f"its {sum(users.values())} users ({', '.join(f'{n} {c}' for c, n in sorted(users.items()))}) went with it"
        if users
        else "the users it ran went with it"
    )
    last = entry.get("last_batch_utc")
    unknown = f"its events after its last batch at {utc(last)} are unknown" if last else "none of its events arrived"
    return f"worker {entry['worker']} lost{when}: {went}; {unknown}"


def machine_load(m: pd.DataFrame, cpus: int | None) -> dict:
    """Where the master ran: peak and median CPU % of all cores and run queue, and the share of samples saturated
    (more runnable tasks than cores)."""
    if m.empty:
        return {}
    queue = m["run_queue"].dropna()
    out = {
        "cpus": cpus,
        "cpu_percent_median": float(m["cpu_percent"].median()),
        "cpu_percent_max": float(m["cpu_percent"].max()),
        "run_queue_median": float(queue.median()) if len(queue) else None,
        "run_queue_max": float(queue.max()) if len(queue) else None,
    }
    if cpus and len(queue):
        out["saturated_share"] = float((queue > cpus).mean())
    return out


def judge(run: Run, th: dict) -> Verdict:
    """Inconclusive (never fail: it is not the backend's fault, never pass: the
    figures are suspect) when any of these held:

    - **late**: a Locust process's event loop was late by more than
      ``max_loop_lag_ms`` (harness/lag.py) for more than ``max_late_share`` of
      the load window and more than ``min_late_s`` in all. Latency figures measured in a late stretch are set
      aside by their own verdicts (analysis/verdicts/lateness.py) whatever this
      share; this verdict says whether the generator as a whole kept time;
    - **busy**: a Locust process held more than ``cpu_max_percent`` CPU for
      ``sustained_samples`` consecutive samples (its latencies include its own
      queueing);
    - **lost**: events never reached the master, or a worker was lost (it went
      missing or never sent its final batch): named with when, the users that
      went with it, and that its events after its last batch are unknown;
    - the run did not close its directory, or an input file was bad.

    The machine's CPU and run queue (where the master runs) are reported beside:
    context for a late generator, not a judgement.

    figure: the worst loop lag of any Locust process (ms); threshold:
    ``max_loop_lag_ms``; n: samples of the Locust processes.
    """
    th_all, th = th, th["harness_health"]
    harness = run.harness_samples()
    cpu = sustained_cpu(harness, int(th["sustained_samples"]))
    lags = harness["loop_lag_ms"].dropna()
    stretches = stretches_of(run, th_all)
    start, end = run.load_window
    late_s = float((stretches["end"].clip(upper=end) - stretches["start"].clip(lower=start)).clip(lower=0).sum())
    window = end - start if end > start else float("nan")
    late_share = late_s / window if window == window else 0.0
    lost = events_lost(run.meta)
    gone = workers_lost(run.meta)
    worst_cpu = float(cpu.max()) if len(cpu) else None
    worst_lag = float(lags.max()) if len(lags) else None
    machine = machine_load(run.machine_samples(), (run.meta.get("machine") or {}).get("cpus"))
    figures = dict(
        figure=worst_lag,
        unit="ms loop lag",
        threshold=th["max_loop_lag_ms"],
        n=len(harness),
        evidence=as_evidence(stretches, MAX_EVIDENCE) + [{"what": lost_worker_text(w)} for w in gone],
        details={
            "loop_lag_ms_by_process": {
                str(k): {"median": float(v.median()), "p99": float(v.quantile(0.99)), "max": float(v.max())}
                for k, v in harness.dropna(subset=["loop_lag_ms"]).groupby("source", observed=True)["loop_lag_ms"]
            },
            "late_stretches": len(stretches),
            "late_seconds": late_s,
            "late_share": late_share,
            "sustained_cpu_by_process": {str(k): float(v) for k, v in cpu.items()},
            "machine": machine,
            "events_received": (run.meta.get("recording") or {}).get("events_received"),
            "events_lost": lost,
            "workers_lost": gone,
            "input_problems": [str(p) for p in run.problems],
        },
    )
    # server_stats.csv is the backend's own account (its /stats): what it lacks says nothing of the generator
    problems = [str(p) for p in run.problems if p.file != "server_stats.csv"]
    if late_share > th["max_late_share"] and late_s > th["min_late_s"]:
        problems.append(
            f"the generator was late {late_share:.1%} of the load (> {th['max_late_share']:.1%}, {late_s:.1f} s): "
            f"{describe(stretches)}"
            f"{_machine_text(machine)}"
        )
    if worst_cpu is not None and worst_cpu > th["cpu_max_percent"]:
        problems.append(f"{cpu.idxmax()} held {worst_cpu:.0f} % CPU: latencies include the harness's own queueing")
    if lost > th["max_events_lost"]:
        problems.append(f"{lost} events never reached the master: event verdicts may miss evidence")
    problems += [lost_worker_text(w) for w in gone]
    if problems:
        return inconclusive(NAME, "; ".join(problems), **figures)
    if harness.empty:
        return inconclusive(
            NAME, "no samples of the Locust processes: cannot tell whether the harness kept up", **figures
        )
    if worst_lag is None:
        kept = f"Locust processes at most {worst_cpu:.0f} % CPU sustained (no loop-lag samples: an older run)"
    else:
        late = f", late {late_s:.1f} s in all (figures measured then set aside)" if len(stretches) else ""
        kept = f"event loops at most {worst_lag:,.0f} ms late{late}, CPU at most {worst_cpu:.0f} % sustained"
    return Verdict(NAME, Status.PASS, f"{kept}; no event or worker lost{_machine_text(machine)}", **figures)


def _machine_text(machine: dict) -> str:
    if not machine or machine.get("run_queue_max") is None:
        return ""
    cpus = f" on {machine['cpus']} cores" if machine.get("cpus") else ""
    saturated = machine.get("saturated_share")
    busy = f", saturated {saturated:.0%} of samples" if saturated else ""
    queue = f"run queue up to {machine['run_queue_max']:.0f}{cpus}"
    return f" (machine: CPU median {machine['cpu_percent_median']:.0f} %, {queue}{busy})"


def overloaded(verdict: Verdict, th: dict) -> bool:
    """A Locust process held too much CPU: passing latency verdicts are not to be trusted."""
    cpu = verdict.details.get("sustained_cpu_by_process") or {}
    return any(v > th["harness_health"]["cpu_max_percent"] for v in cpu.values())
