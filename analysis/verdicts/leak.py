"""leak: does the backend keep memory, fds, threads or sockets its load does not explain?"""

from __future__ import annotations

import numpy as np
import pandas as pd

from contract.events import Kind

from ..rundir import Run
from ..stats import judge_growth, trend
from .base import Status, Verdict, inconclusive, utc

NAME = "leak"
MIB = 1024 * 1024
#: Fewest samples in a window for a trend (Theil-Sen needs a few; plateaus need thirds).
MIN_POINTS = 9


def backend_series(run: Run) -> pd.DataFrame:
    """Backend samples with the live connection count of the nearest ``/stats`` sample beside them."""
    samples = run.backend_samples()
    if "heap_bytes" not in samples:
        samples = samples.assign(heap_bytes=np.nan)
    samples = samples[["ts", "pid", "rss_bytes", "heap_bytes", "num_fds", "num_threads", "tcp_close_wait"]]
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


def floor_window_s(span_s: float, th: dict) -> float:
    """The trailing window of the heap's floor: ``heap_floor_s``, or a tenth of a longer judged window,
    but never more than a third of it (the last third must have a floor of its own)."""
    return min(max(th["heap_floor_s"], span_s / 10), span_s / 3)


def heap_floor(ts: pd.Series, heap: pd.Series, window_s: float) -> pd.Series:
    """The heap's lower envelope: at each sample, the least heap in use over the trailing ``window_s``.

    Heap in use is a sawtooth (allocation up, collection down); its floor is what
    survives the collections, the live objects. A leak of objects raises it steadily;
    a heap growing toward its GC ceiling raises the peaks, not the floor.
    """
    known = heap.notna()
    floor = pd.Series(heap[known].to_numpy(), index=pd.to_datetime(ts[known], unit="s"))
    out = floor.rolling(pd.Timedelta(seconds=max(window_s, 1e-3))).min().to_numpy()
    return pd.Series(out, index=heap.index[known])


def judge(run: Run, th: dict) -> Verdict:
    """Fails on any of:

    1. **growth** (only in a window of at least ``min_window_s``): in each backend
       process's load window after warm-up, the RSS the live connections do not
       explain (RSS - k x connections, k the KiB per connection fitted on the ramp)
       is still growing at the end: Theil-Sen lower 95 % bound above
       ``max_slope_mib_per_hour``, last plateau ``min_growth_mib`` above the first,
       and the last third a real trend of its own (its own lower bound above the
       slope threshold) that rose at least ``min_late_growth_mib``
       (:func:`analysis.stats.judge_growth`). Where the backend's ``/metrics``
       exposes its runtime's heap (``heap_bytes``: V8, the JVM, Go, .NET), the same
       test runs on the heap's *floor* (its least value over a trailing
       :func:`floor_window_s`, spanning several collections): a leak of objects
       raises the post-GC floor; a heap growing in steps toward its GC ceiling
       does not;
    2. **held per cycle**: after the load drained (``--drain``), RSS above the
       pre-load baseline divided by the connect/disconnect cycles of the run is
       above ``max_held_kib_per_cycle`` and the total above ``min_growth_mib``,
       or (when ``max_held_share`` > 0, a test plan's relative bound) the total
       above that share of the baseline. With the heap known, the heap's headroom
       at the end (its high-water mark of the run less its floor at the end:
       garbage room the runtime grew its heap into and keeps) is not counted as
       held; what the heap still holds at the end is;
    3. **return to baseline**: after the drain, open fds above the baseline by
       more than ``fd_slack``, threads by more than ``thread_slack``, or more than
       ``max_close_wait`` CLOSE_WAIT sockets, and not still falling (a count that
       fell during the drain and is still above at its end is a backend still
       letting go, on a busy machine or a slow runtime: inconclusive, lengthen
       ``--drain``; a count that stays up is held). Threads are compared with the
       larger of the baseline and the count once the load warmed up: a runtime's
       worker pool started on first use (libuv's four threads, Go's Ms, a JVM's
       compiler threads) is a step at the start of the load, not a leak; threads
       that grow with the load still grow past it. Held memory is not judged after a
       drain shorter than what the backend says it keeps for returning clients
       (meta.json ``backend.retention``: socket.io keeps stored packets until its
       once-a-minute sweep): inconclusive, saying the ``--drain`` that judges it.

    Inconclusive, never pass: a window shorter than ``min_window_s`` in which
    growth is seen (rules 1's first two conditions, on RSS or on the heap's floor)
    is too short to tell a runtime's heap settling in steps from a leak, whether or
    not the growth went on to the end; it never fails on growth alone (rule 2
    catches a per-connection leak in a short run). One exception passes: the heap is
    known, its floor shows no growth, and the RSS growth levelled off (not still
    growing, and its last third rose at most ``levelled_share`` of what a steady
    trend gives: half the growth): the runtime's heap reaching its ceiling. Also
    inconclusive: no window with enough samples after warm-up, no sample after the
    load (``--drain 0``).

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
    failures = [g["finding"] for g in growth["windows"] if g["status"] == Status.FAIL] + drain["findings"]
    unsure = [g["reason"] for g in growth["windows"] if g["status"] == Status.INCONCLUSIVE]
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
    if missing:
        return inconclusive(NAME, "cannot judge: " + "; ".join(missing + unsure), **figures)
    if unsure:
        return inconclusive(NAME, "; ".join(unsure), **figures)
    return Verdict(NAME, Status.PASS, _pass_summary(growth["windows"], drain["figures"], th), **figures)


def _growth(series: pd.DataFrame, start: float, end: float, per_conn: float | None, th: dict) -> dict:
    windows, missing = [], []
    for pid, proc in series[(series["ts"] >= start) & (series["ts"] <= end)].groupby("pid", sort=False):
        proc_start = max(start, float(proc["ts"].iloc[0]))
        after = proc["ts"] >= warmup_end(proc_start, end, th)
        load = proc[after]
        if len(load) < MIN_POINTS:
            continue
        span = float(load["ts"].iloc[-1] - load["ts"].iloc[0])
        floor = heap_floor(proc["ts"], proc["heap_bytes"], floor_window_s(span, th))[after]
        windows.append(judge_window(load, unexplained(load, per_conn), floor, span, pid, th))
    if not windows:
        missing.append(f"fewer than {MIN_POINTS} backend samples after warm-up in any process")
    return {"windows": windows, "missing": missing}


def judge_window(load: pd.DataFrame, y: pd.Series, floor: pd.Series, span: float, pid, th: dict) -> dict:
    """One backend process's window after warm-up, by rule 1 of :func:`judge` and its short-window rules.

    ``load``: the window's samples (``ts``); ``y``: the RSS judged there (less what the live
    connections explain); ``floor``: the heap's floor at those samples (:func:`heap_floor`; empty
    where the backend shows no heap); ``span``: the window's length (s); ``th``: the ``[leak]``
    thresholds. Returns the window's row of ``details["windows"]``: its ``status`` (pass, fail,
    inconclusive), with the ``finding`` that fails it or the ``reason`` it does not.
    """
    limits = {
        "max_slope_per_hour": th["max_slope_mib_per_hour"] * MIB,
        "min_growth": th["min_growth_mib"] * MIB,
        "min_late_growth": th["min_late_growth_mib"] * MIB,
    }
    g = judge_growth(load["ts"].to_numpy(), y.to_numpy(), **limits)
    h = None
    if len(floor) >= MIN_POINTS:
        h = judge_growth(load.loc[floor.index, "ts"].to_numpy(), floor.to_numpy(), **limits)
    where = "" if pd.isna(pid) else f" in pid {int(pid)}"
    status, finding, reason = Status.PASS, "", _reason(g, h)
    if span >= th["min_window_s"]:
        if g.growing:
            status, finding = Status.FAIL, _growth_finding("RSS", "beyond live connections", g, h, where)
        elif h is not None and h.growing:
            status, finding = Status.FAIL, _growth_finding("the heap's post-GC floor", "", h, None, where)
    elif g.seen or (h is not None and h.seen):
        levelled = g.late_growth <= th["levelled_share"] * g.growth / 2
        if h is not None and not h.seen and not g.growing and levelled:
            reason = (
                f"RSS grew {g.growth / MIB:.1f} MiB and levelled off ({g.late_growth / MIB:.1f} MiB in the last "
                "third) while the heap's post-GC floor stayed flat: the runtime's heap reaching its ceiling"
            )
        else:
            status, reason = Status.INCONCLUSIVE, _too_short(g, h, span, levelled, where, th)
    return {
        "pid": None if pd.isna(pid) else int(pid),
        "from": utc(load["ts"].iloc[0]),
        "to": utc(load["ts"].iloc[-1]),
        "n": int(len(load)),
        "window_s": span,
        "slope_mib_per_hour": g.overall.slope / MIB if g.overall else None,
        "slope_low_mib_per_hour": g.overall.low / MIB if g.overall else None,
        "late_slope_low_mib_per_hour": g.late.low / MIB if g.late else None,
        "growth_mib": g.growth / MIB,
        "late_growth_mib": g.late_growth / MIB,
        "heap_floor_growth_mib": h.growth / MIB if h else None,
        "heap_floor_late_growth_mib": h.late_growth / MIB if h else None,
        "heap_floor_slope_low_mib_per_hour": h.overall.low / MIB if h and h.overall else None,
        "leaking": status == Status.FAIL,
        "status": status,
        "reason": reason,
        "finding": finding,
    }


def _reason(g, h) -> str:
    if h is None:
        return g.reason
    return f"{g.reason}; heap floor: {h.reason}"


def _growth_finding(what: str, beyond: str, g, h, where: str) -> str:
    beyond = f" {beyond}" if beyond else ""
    outside = "; the heap's post-GC floor stayed flat: outside the managed heap" if h is not None and not h.seen else ""
    return (
        f"{what} grows {g.overall.slope / MIB:.1f} MiB/h{beyond} ({g.growth / MIB:.1f} MiB, "
        f"{g.late_growth / MIB:.1f} MiB of it in the last third){where}{outside}"
    )


def _too_short(g, h, span: float, levelled: bool, where: str, th: dict) -> str:
    """Why a short window with growth seen cannot be judged."""
    if g.seen:
        what = f"RSS grew {g.growth / MIB:.1f} MiB"
        if g.growing or not levelled:
            what += f", {g.late_growth / MIB:.1f} MiB of it in the last third"
        elif h is None:
            what += " and levelled off, but the backend's /metrics shows no runtime heap to tell why"
    else:
        what = "RSS did not grow"
    if h is not None and h.seen:
        what += f"; the heap's post-GC floor grew {h.growth / MIB:.1f} MiB"
    return (
        f"too short to tell a runtime's heap growing in steps from a leak: in a {span:.0f} s window{where}, "
        f"{what} (growth is judged in windows of {th['min_window_s']:g} s after warm-up or more)"
    )


def _after_drain(run: Run, series: pd.DataFrame, start: float, end: float, th: dict) -> dict:
    """Held bytes per cycle and the return of fds, threads and CLOSE_WAIT to the pre-load baseline."""
    before = series[series["ts"] <= start]
    last_pid = series["pid"].iloc[-1]
    # The baseline of the process judged after the drain, where it has one (a backend restarted with new
    # settings just before the load, from the web UI, is not compared with the process it replaced).
    own_before = before[before["pid"].eq(last_pid)]
    base = own_before.iloc[-1] if len(own_before) else before.iloc[-1] if len(before) else series.iloc[0]
    warm = series[(series["ts"] > warmup_end(start, end, th)) & (series["ts"] <= end) & series["pid"].eq(last_pid)]
    threads_base = max(base["num_threads"], warm["num_threads"].iloc[0]) if len(warm) else base["num_threads"]
    drained = series[(series["ts"] > end) & (series["pid"].eq(last_pid) | series["pid"].isna())]
    if drained.empty:
        how = "the run had no --drain" if run.drain_seconds == 0 else "no backend sample during the drain"
        return {"findings": [], "missing": [f"return to baseline not measured: {how}"], "figures": {}}
    settled = drained.iloc[len(drained) // 2 :]  # the later half: the backend had time to let go
    last = drained.iloc[-1]
    ev = run.events
    life = series.loc[series["pid"].eq(last_pid), "ts"]
    cycles = int(
        ev.loc[(ev["kind"] == Kind.DISCONNECT) & (ev["ts"] >= (life.iloc[0] if len(life) else start)), "n"].sum()
    )
    held_rss = float(settled["rss_bytes"].median() - base["rss_bytes"])
    own = series["pid"].eq(last_pid) | series["pid"].isna()
    headroom = _heap_headroom(series[own & (series["ts"] >= start)], start, end, th)
    held = held_rss - (headroom or 0.0)
    per_cycle = held / cycles if cycles else float("nan")
    figures = {
        "baseline_rss_mib": base["rss_bytes"] / MIB,
        "drained_rss_mib": float(settled["rss_bytes"].median()) / MIB,
        "held_rss_mib": held_rss / MIB,
        "heap_headroom_mib": headroom / MIB if headroom is not None else None,
        "held_mib": held / MIB,
        "cycles": cycles,
        "held_kib_per_cycle": per_cycle / 1024,
        "held_share": held / base["rss_bytes"] if base["rss_bytes"] else None,
        "fds_baseline": base["num_fds"],
        "fds_after_drain": last["num_fds"],
        "threads_baseline": threads_base,
        "threads_after_drain": last["num_threads"],
        "close_wait_after_drain": last["tcp_close_wait"],
    }
    findings, unsettled = [], []
    kept = _retention_left(run)
    if kept:
        unsettled.append(kept)
    elif cycles and per_cycle > th["max_held_kib_per_cycle"] * 1024 and held > th["min_growth_mib"] * MIB:
        net = f" (RSS {held_rss / MIB:.1f} MiB less the heap's {headroom / MIB:.1f} MiB headroom)" if headroom else ""
        findings.append(f"{held / MIB:.1f} MiB still held after the drain{net}: {per_cycle / 1024:.1f} KiB per cycle")
    share = figures["held_share"]
    if not kept and th["max_held_share"] > 0 and share is not None and share > th["max_held_share"]:
        findings.append(
            f"{held / MIB:.1f} MiB still held after the drain: {share:.1%} of the "
            f"{base['rss_bytes'] / MIB:.0f} MiB baseline (bound {th['max_held_share']:.0%})"
        )
    baselines = {"num_fds": base["num_fds"], "num_threads": threads_base, "tcp_close_wait": 0}
    for column, slack, what in (
        ("num_fds", th["fd_slack"], "more open fds after the drain than before the load"),
        ("num_threads", th["thread_slack"], "more threads after the drain than once the load warmed up"),
        ("tcp_close_wait", None, "sockets left in CLOSE_WAIT after the drain"),
    ):
        above = last[column] - baselines[column]
        if above <= (slack if slack is not None else th["max_close_wait"]):
            continue
        if _still_falling(drained[column]):
            unsettled.append(f"{column} still falling at the end of the drain ({above:.0f} {what}): a longer --drain")
        else:
            findings.append(f"{above:.0f} {what}")
    figures["unsettled_after_drain"] = unsettled
    return {"findings": findings, "missing": unsettled, "figures": figures}


def _retention_left(run: Run) -> str:
    """'' when the drain outlasted what the backend says it keeps for returning clients (meta.json
    ``backend.retention``: socket.io's stored packets until its sweep), else why held memory is not judged."""
    kept = (run.meta.get("backend") or {}).get("retention") or {}
    seconds = float(kept.get("seconds") or 0)
    if run.drain_seconds >= seconds:
        return ""
    return (
        f"memory held after the drain not judged: the {run.drain_seconds:g} s drain ended before the backend lets go "
        f"of what returning clients may recover ({seconds:g} s: {kept.get('why') or 'its retention'}); "
        f"--drain {seconds:g} judges it"
    )


def _still_falling(values: pd.Series) -> bool:
    """The backend was still letting go when the drain ended: its last sample below the drain's first."""
    values = values.dropna()
    return len(values) >= 2 and float(values.iloc[-1]) < float(values.iloc[0])


def _heap_headroom(proc: pd.DataFrame, start: float, end: float, th: dict) -> float | None:
    """The heap's headroom at the end of a process's load: its high-water mark less its floor at the end.

    A garbage-collected runtime grows its heap into room for the garbage of its
    busiest moments and keeps those pages (V8, the JVM and Go give them back late
    or never): RSS that no connection holds. What the heap still holds at the end
    (its floor over the last :func:`floor_window_s` of the load and the drain) stays
    counted. None when the backend exposes no heap.
    """
    heap = proc[["ts", "heap_bytes"]].dropna()
    if heap.empty:
        return None
    proc_start = max(start, float(proc["ts"].iloc[0]))
    span = max(0.0, end - warmup_end(proc_start, end, th))
    at_end = heap.loc[heap["ts"] >= end - floor_window_s(span, th), "heap_bytes"]
    if at_end.empty:
        return None
    return max(0.0, float(heap["heap_bytes"].max() - at_end.min()))


def _pass_summary(windows: list[dict], drained: dict, th: dict) -> str:
    why = "; ".join(f"{w['growth_mib']:.1f} MiB, {w['reason']}" for w in windows)
    net = " net of the heap's headroom" if drained.get("heap_headroom_mib") else ""
    return (
        f"no leak beyond live connections ({why}); after the drain "
        f"{drained['held_mib']:.1f} MiB held{net} over {drained['cycles']} cycles{_share(drained, th)}, "
        "fds and threads back to baseline"
    )


def _share(drained: dict, th: dict) -> str:
    """The held share of the baseline, when a plan's relative bound is set."""
    if not th["max_held_share"] or drained.get("held_share") is None:
        return ""
    return f" ({drained['held_share']:.1%} of the baseline, bound {th['max_held_share']:.0%})"
