"""leak: does the backend keep memory, fds, threads or sockets its load does not explain?"""

from __future__ import annotations

import numpy as np
import pandas as pd

from agentws.events import Kind

from ..rundir import Run
from ..stats import judge_growth, trend
from .base import Status, Verdict, inconclusive, utc

NAME = "leak"
MIB = 1024 * 1024
#: Fewest samples in a window for a trend (Theil-Sen needs a few; plateaus need thirds).
MIN_POINTS = 9


def backend_series(run: Run) -> pd.DataFrame:
    """Backend samples with the live connection count of the nearest ``/stats`` sample beside them."""
    samples = run.backend_samples()[["ts", "pid", "rss_bytes", "num_fds", "num_threads", "tcp_close_wait"]]
    samples = samples.dropna(subset=["rss_bytes"])
    stats = run.server_stats
    if "connections" not in stats or stats["connections"].isna().all():
        return samples.assign(connections=np.nan)
    conns = stats[["ts", "connections"]].dropna().sort_values("ts")
    tolerance = float(run.meta.get("sample_interval_s") or 1.0)
    return pd.merge_asof(samples, conns, on="ts", direction="nearest", tolerance=tolerance)


def warmup_end(start: float, end: float, th: dict) -> float:
    """The end of the warm-up: ``warmup_s`` after ``start``, but never past ``warmup_share_max`` of the window."""
    return start + min(th["warmup_s"], th["warmup_share_max"] * max(0.0, end - start))


def bytes_per_connection(series: pd.DataFrame) -> float | None:
    """What one live connection costs: the Theil-Sen slope of RSS over connections, where connections varied.

    Judged on the ramp (samples up to the first time the connection count reaches
    90 % of its peak), where the count moves and the run is too young to have
    leaked much; None when the ramp was too quick to sample.
    """
    s = series.dropna(subset=["connections"])
    if s.empty or s["connections"].max() <= 0:
        return None
    ramp_end = s.index[s["connections"] >= 0.9 * s["connections"].max()][0]
    ramp = s.loc[:ramp_end]
    if ramp["connections"].nunique() < 3:
        return None
    fit = trend(ramp["connections"], ramp["rss_bytes"])
    return max(0.0, fit.slope) if fit is not None else None


def unexplained(series: pd.DataFrame, per_connection: float | None) -> pd.Series:
    """RSS minus what the live connections of the moment explain."""
    if per_connection is None or series["connections"].isna().all():
        return series["rss_bytes"]
    return series["rss_bytes"] - per_connection * series["connections"].fillna(0)


def judge(run: Run, th: dict) -> Verdict:
    """Fails on any of:

    1. **growth**: in each backend process's load window after warm-up, the RSS
       the live connections do not explain (RSS - k x connections, k the KiB per
       connection fitted on the ramp) grows: Theil-Sen lower 95 % bound above
       ``max_slope_mib_per_hour``, still growing in the last third, last plateau
       ``min_growth_mib`` above the first (:func:`analysis.stats.judge_growth`);
    2. **held per cycle**: after the load drained (``--drain``), RSS above the
       pre-load baseline divided by the connect/disconnect cycles of the run is
       above ``max_held_kib_per_cycle`` and the total above ``min_growth_mib``,
       or (when ``max_held_share`` > 0, a test plan's relative bound) the total
       above that share of the baseline;
    3. **return to baseline**: after the drain, open fds above the baseline by
       more than ``fd_slack``, threads by more than ``thread_slack``, or more than
       ``max_close_wait`` CLOSE_WAIT sockets.

    figure: the unexplained growth (last plateau minus first, MiB) of the
    longest process window; bound: its slope's lower 95 % bound (MiB/h). A
    plain significance test is not used: a healthy garbage-collected server's
    RSS drifts "significantly" in almost every long run.
    """
    th = th["leak"]
    series = backend_series(run)
    if series.empty:
        why = run.problem_with("samples.csv") or "no backend samples (rss) in samples.csv"
        return inconclusive(NAME, f"nothing to judge: {why}")
    start, end = run.load_window
    per_conn = bytes_per_connection(series[series["ts"] <= end])
    growth = _growth(series, start, end, per_conn, th)
    drain = _after_drain(run, series, start, end, th)
    failures = [g["finding"] for g in growth["windows"] if g["leaking"]] + drain["findings"]
    main = max(growth["windows"], key=lambda g: g["n"], default=None)
    figures = dict(
        figure=main["growth_mib"] if main else None,
        unit="MiB grown",
        threshold=th["min_growth_mib"],
        n=int(len(series)),
        bound=main["slope_low_mib_per_hour"] if main else None,
        bound_label=f"95 % lower bound of the slope, MiB/h (fails above {th['max_slope_mib_per_hour']:g})"
        if main
        else "",
        evidence=[{"what": f} for f in failures],
        details={
            "slope_mib_per_hour": main["slope_mib_per_hour"] if main else None,
            "kib_per_connection": per_conn / 1024 if per_conn is not None else None,
            "windows": growth["windows"],
            **drain["figures"],
        },
    )
    if failures:
        return Verdict(NAME, Status.FAIL, "; ".join(failures), **figures)
    missing = growth["missing"] + drain["missing"]
    if not growth["windows"] or drain["missing"]:
        return inconclusive(NAME, "cannot judge: " + "; ".join(missing), **figures)
    return Verdict(NAME, Status.PASS, _pass_summary(growth["windows"], drain["figures"], th), **figures)


def _growth(series: pd.DataFrame, start: float, end: float, per_conn: float | None, th: dict) -> dict:
    windows, missing = [], []
    for pid, proc in series[(series["ts"] >= start) & (series["ts"] <= end)].groupby("pid", sort=False):
        proc_start = max(start, float(proc["ts"].iloc[0]))
        load = proc[proc["ts"] >= warmup_end(proc_start, end, th)]
        if len(load) < MIN_POINTS:
            continue
        y = unexplained(load, per_conn).to_numpy()
        g = judge_growth(
            load["ts"].to_numpy(),
            y,
            max_slope_per_hour=th["max_slope_mib_per_hour"] * MIB,
            min_growth=th["min_growth_mib"] * MIB,
        )
        slope = g.overall.slope / MIB if g.overall else None
        windows.append(
            {
                "pid": None if pd.isna(pid) else int(pid),
                "from": utc(load["ts"].iloc[0]),
                "to": utc(load["ts"].iloc[-1]),
                "n": int(len(load)),
                "slope_mib_per_hour": slope,
                "slope_low_mib_per_hour": g.overall.low / MIB if g.overall else None,
                "growth_mib": g.growth / MIB,
                "late_growth_mib": g.late_growth / MIB,
                "leaking": g.growing,
                "reason": g.reason,
                "finding": _growth_finding(slope, g.growth, pid) if g.growing else "",
            }
        )
    if not windows:
        missing.append(f"fewer than {MIN_POINTS} backend samples after warm-up in any process")
    return {"windows": windows, "missing": missing}


def _growth_finding(slope: float, growth: float, pid) -> str:
    where = "" if pd.isna(pid) else f" in pid {int(pid)}"
    return f"RSS grows {slope:.1f} MiB/h beyond live connections ({growth / MIB:.1f} MiB){where}"


def _after_drain(run: Run, series: pd.DataFrame, start: float, end: float, th: dict) -> dict:
    """Held bytes per cycle and the return of fds, threads and CLOSE_WAIT to the pre-load baseline."""
    before = series[series["ts"] <= start]
    base = before.iloc[-1] if len(before) else series.iloc[0]
    last_pid = series["pid"].iloc[-1]
    drained = series[(series["ts"] > end) & (series["pid"].eq(last_pid) | series["pid"].isna())]
    if drained.empty:
        how = "the run had no --drain" if run.drain_seconds == 0 else "no backend sample during the drain"
        return {"findings": [], "missing": [f"return to baseline not measured: {how}"], "figures": {}}
    settled = drained.iloc[len(drained) // 2 :]  # the later half: the backend had time to let go
    last = drained.iloc[-1]
    ev = run.events
    life = series.loc[series["pid"].eq(last_pid), "ts"]
    cycles = int(((ev["kind"] == Kind.DISCONNECT) & (ev["ts"] >= (life.iloc[0] if len(life) else start))).sum())
    held = float(settled["rss_bytes"].median() - base["rss_bytes"])
    per_cycle = held / cycles if cycles else float("nan")
    figures = {
        "baseline_rss_mib": base["rss_bytes"] / MIB,
        "drained_rss_mib": float(settled["rss_bytes"].median()) / MIB,
        "held_mib": held / MIB,
        "cycles": cycles,
        "held_kib_per_cycle": per_cycle / 1024,
        "held_share": held / base["rss_bytes"] if base["rss_bytes"] else None,
        "fds_baseline": base["num_fds"],
        "fds_after_drain": last["num_fds"],
        "threads_baseline": base["num_threads"],
        "threads_after_drain": last["num_threads"],
        "close_wait_after_drain": last["tcp_close_wait"],
    }
    findings = []
    if cycles and per_cycle > th["max_held_kib_per_cycle"] * 1024 and held > th["min_growth_mib"] * MIB:
        findings.append(f"{held / MIB:.1f} MiB still held after the drain: {per_cycle / 1024:.1f} KiB per cycle")
    share = figures["held_share"]
    if th["max_held_share"] > 0 and share is not None and share > th["max_held_share"]:
        findings.append(
            f"{held / MIB:.1f} MiB still held after the drain: {share:.1%} of the "
            f"{base['rss_bytes'] / MIB:.0f} MiB baseline (bound {th['max_held_share']:.0%})"
        )
    if last["num_fds"] - base["num_fds"] > th["fd_slack"]:
        findings.append(f"{last['num_fds'] - base['num_fds']:.0f} more open fds after the drain than before the load")
    if last["num_threads"] - base["num_threads"] > th["thread_slack"]:
        findings.append(f"{last['num_threads'] - base['num_threads']:.0f} more threads after the drain")
    if last["tcp_close_wait"] > th["max_close_wait"]:
        findings.append(f"{last['tcp_close_wait']:.0f} sockets left in CLOSE_WAIT after the drain")
    return {"findings": findings, "missing": [], "figures": figures}


def _pass_summary(windows: list[dict], drained: dict, th: dict) -> str:
    why = "; ".join(f"{w['growth_mib']:.1f} MiB, {w['reason']}" for w in windows)
    return (
        f"no leak beyond live connections ({why}); after the drain "
        f"{drained['held_mib']:.1f} MiB held over {drained['cycles']} cycles{_share(drained, th)}, "
        "fds and threads back to baseline"
    )


def _share(drained: dict, th: dict) -> str:
    """The held share of the baseline, when a plan's relative bound is set."""
    if not th["max_held_share"] or drained.get("held_share") is None:
        return ""
    return f" ({drained['held_share']:.1%} of the baseline, bound {th['max_held_share']:.0%})"
