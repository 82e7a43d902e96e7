"""The figures behind the capacity report: a run's frames -> the small series its charts draw.

Pure functions from DataFrames to Series, DataFrames or numbers; no plotting
(:mod:`analysis.charts` draws them) and no I/O. The report and the notebooks
call the same ones.

Everything over time is put into intervals first: a 24-hour run sampled every
second has 86,400 backend samples and millions of events, and a chart needs a
few thousand points per line at most. Times are seconds since the load
started (:class:`Timeline`), so two runs line up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from contract.events import Kind

from .rundir import Run
from .verdicts import Verdict, latency, lateness, leak
from .verdicts.base import Status
from .verdicts.causes import restart_windows

KIB = 1024
MIB = 1024 * 1024
#: Most points per line of a series sampled every second (backend telemetry).
MAX_POINTS = 2_000
#: Most intervals of a statistic computed per interval from events (percentiles, rates).
MAX_INTERVALS = 300
#: Interval lengths a chart may use (seconds): round numbers a reader can take in.
NICE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
#: Percentiles shown over time.
PERCENTILES = (0.5, 0.95, 0.99)
#: Shares a CDF always has a point at (where the sample is large enough): the percentiles people quote.
CDF_MARKS = (0.5, 0.9, 0.95, 0.99, 0.999, 0.9999, 0.99999)


# -- time -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timeline:
    """t = 0 of every chart (the load's start) and the moments worth marking on them."""

    t0: float  #: UNIX seconds of t = 0
    span: float  #: seconds from the first sample or event (or t0, if earlier) to the last
    load_end: float  #: seconds from t0 to the end of the load (the drain follows), NaN if unknown
    restarts: tuple[float, ...] = ()  #: backend restarts, seconds from t0

    def step(self, max_points: int = MAX_POINTS, at_least: float = 1.0) -> float:
        """The interval for a series over this run: a round number of seconds, at most ``max_points`` of them."""
        return nice_step(self.span, max_points, at_least)


def timeline(run: Run) -> Timeline:
    """The run's time axis: t = 0 at the load's start (else the first sample or event), restarts, load end."""
    start, end = run.load_window
    firsts = [s.min() for s in (run.samples["ts"], run.events["ts"]) if len(s)]
    lasts = [s.max() for s in (run.samples["ts"], run.events["ts"]) if len(s)]
    t0 = start if math.isfinite(start) else min(firsts, default=0.0)
    restarts = [down - t0 for down, _ in restart_windows(run)]
    return Timeline(
        t0=float(t0),
        span=float(max([*lasts, t0]) - min([*firsts, t0])),  # a stray early timestamp widens the intervals
        load_end=float(end - t0) if math.isfinite(end) else float("nan"),
        restarts=tuple(restarts),
    )


def nice_step(span: float, max_points: int, at_least: float = 1.0) -> float:
    """The smallest round interval (:data:`NICE_STEPS`) of at least ``at_least`` s giving ``max_points`` or fewer."""
    want = max(at_least, span / max_points if span > 0 else 0.0)
    return float(next((s for s in NICE_STEPS if s >= want), math.ceil(want)))


def interval(ts: pd.Series, t0: float, step: float) -> pd.Series:
    """The start of each timestamp's interval, in seconds since ``t0``."""
    return np.floor((ts - t0) / step) * step


def every_interval(frame: pd.DataFrame | pd.Series, step: float, fill=0, over: pd.Series | None = None):
    """Reindex a per-interval frame to every interval from its first to its last (or those of ``over``,
    interval starts): no silent gaps in a count or a rate."""
    bounds = frame.index if over is None or over.empty else over
    if len(bounds) == 0:
        return frame
    full = np.arange(bounds.min(), bounds.max() + step / 2, step)
    return frame.reindex(full, fill_value=fill).rename_axis("t")


# -- backend memory, connections and resources ------------------------------------------


def connection_cost(run: Run, series: pd.DataFrame | None = None) -> float | None:
    """What one live connection costs the backend (bytes): the leak verdict's fit, on the load's samples."""
    series = leak.backend_series(run) if series is None else series
    _, end = run.load_window
    return leak.bytes_per_connection(series[series["ts"] <= end] if math.isfinite(end) else series)


def rss_vs_connections(run: Run, tl: Timeline | None = None, max_points: int = MAX_POINTS) -> pd.DataFrame:
    """Backend RSS (MiB) against its live connections, one point per interval and process (medians).

    Columns: t (s since the load started), pid, connections, rss_mib. Empty
    when the backend's ``/stats`` gave no connection counts.
    """
    tl = tl or timeline(run)
    s = leak.backend_series(run).dropna(subset=["connections"])
    points = (
        s.assign(t=interval(s["ts"], tl.t0, tl.step(max_points)), rss_mib=s["rss_bytes"] / MIB)
        .groupby(["pid", "t"], dropna=False)[["connections", "rss_mib"]]
        .median()
        .reset_index()
    )
    return points.sort_values("t", kind="stable").reset_index(drop=True)


def connection_fit_line(points: pd.DataFrame, per_connection_bytes: float | None) -> pd.DataFrame:
    """The fitted cost as a line over the points' connection range: slope k, through their median offset."""
    if per_connection_bytes is None or points.empty:
        return pd.DataFrame({"connections": [], "rss_mib": []})
    k = per_connection_bytes / MIB
    offset = (points["rss_mib"] - k * points["connections"]).median()
    conns = np.array([points["connections"].min(), points["connections"].max()], dtype=float)
    return pd.DataFrame({"connections": conns, "rss_mib": offset + k * conns})


def resource_series(run: Run, tl: Timeline | None = None, max_points: int = MAX_POINTS) -> pd.DataFrame:
    """The backend over time, per interval: RSS, the RSS its connections do not explain and the runtime's
    heap in use (MiB; NaN unless its ``/metrics`` shows one), connections, open fds, threads (means) and
    CLOSE_WAIT sockets (the most seen).

    Indexed by t (s since the load started); a ``pid`` column tells the processes
    of a restarted backend apart. The unexplained RSS is the leak verdict's
    (RSS - k x connections, k from :func:`connection_cost`).
    """
    tl = tl or timeline(run)
    s = leak.backend_series(run)
    per_conn = connection_cost(run, s)
    s = s.assign(
        t=interval(s["ts"], tl.t0, tl.step(max_points)),
        rss_mib=s["rss_bytes"] / MIB,
        unexplained_mib=leak.unexplained(s, per_conn) / MIB,
        heap_mib=s["heap_bytes"] / MIB if "heap_bytes" in s else np.nan,
    )
    return (
        s.groupby(["t", "pid"], dropna=False)
        .agg(
            rss_mib=("rss_mib", "mean"),
            unexplained_mib=("unexplained_mib", "mean"),
            heap_mib=("heap_mib", "mean"),
            connections=("connections", "mean"),
            fds=("num_fds", "mean"),
            threads=("num_threads", "mean"),
            close_wait=("tcp_close_wait", "max"),
        )
        .reset_index("pid")
    )


def leak_trend_lines(run: Run, leak_verdict: Verdict | None, tl: Timeline | None = None) -> pd.DataFrame:
    """The leak verdict's Theil-Sen slope of each process window, drawn through the unexplained RSS.

    One row per window end: window, t (s since the load started),
    unexplained_mib, slope_mib_per_hour. The slope is the verdict's; the line
    passes through the window's median offset from it.
    """
    windows = (leak_verdict.details.get("windows") or []) if leak_verdict is not None else []
    windows = [w for w in windows if w.get("slope_mib_per_hour") is not None]
    columns = ["window", "t", "unexplained_mib", "slope_mib_per_hour"]
    if not windows:
        return pd.DataFrame(columns=columns)
    tl = tl or timeline(run)
    s = leak.backend_series(run)
    y = leak.unexplained(s, connection_cost(run, s)) / MIB
    rows = []
    for i, w in enumerate(windows):
        t_from, t_to = (pd.Timestamp(w[k]).timestamp() - tl.t0 for k in ("from", "to"))
        t = s["ts"] - tl.t0
        inside = t.between(t_from, t_to) & (s["pid"].eq(w["pid"]) if w["pid"] is not None else True)
        slope = w["slope_mib_per_hour"] / 3600
        offset = (y[inside] - slope * t[inside]).median()
        rows += [(i, tx, offset + slope * tx, w["slope_mib_per_hour"]) for tx in (t_from, t_to)]
    return pd.DataFrame(rows, columns=columns)


# -- the load generator: could it keep up? ----------------------------------------------


def loop_lag_series(run: Run, tl: Timeline | None = None, max_points: int = MAX_POINTS) -> pd.DataFrame:
    """How late each Locust process's event loop woke (ms), per interval: the worst lag it reported in it.

    Indexed by t (s since the load started); a ``source`` column names the process
    (local, master, worker:<id>). Empty when the run has no loop-lag samples (a run
    recorded before the harness measured its own lag).
    """
    tl = tl or timeline(run)
    h = run.harness_samples().dropna(subset=["loop_lag_ms"])
    h = h.assign(t=interval(h["ts"], tl.t0, tl.step(max_points)), source=h["source"].astype(str))
    return h.groupby(["t", "source"])["loop_lag_ms"].max().rename("lag_ms").reset_index("source")


def machine_load_series(run: Run, tl: Timeline | None = None, max_points: int = MAX_POINTS) -> pd.DataFrame:
    """The machine the master ran on, per interval: CPU % of all its cores (mean) and its run queue
    (runnable tasks: mean and the most seen). Indexed by t (s since the load started)."""
    tl = tl or timeline(run)
    m = run.machine_samples()
    m = m.assign(t=interval(m["ts"], tl.t0, tl.step(max_points)))
    return m.groupby("t").agg(
        cpu_percent=("cpu_percent", "mean"), run_queue=("run_queue", "mean"), run_queue_max=("run_queue", "max")
    )


def machine_cpus(run: Run) -> int | None:
    """The cores of the machine the master ran on (``meta.json`` ``machine.cpus``): the run queue's yardstick."""
    return (run.meta.get("machine") or {}).get("cpus")


def late_stretches(run: Run, max_lag_ms: float, tl: Timeline | None = None) -> pd.DataFrame:
    """The stretches where a Locust process was late beyond ``max_lag_ms`` (the verdicts' own,
    :func:`analysis.verdicts.lateness.late_stretches`): source, start, end (s since the load started), lag_ms."""
    tl = tl or timeline(run)
    stretches = lateness.late_stretches(run.harness_samples(), max_lag_ms)
    return stretches.assign(start=stretches["start"] - tl.t0, end=stretches["end"] - tl.t0)


# -- reconnect latency ------------------------------------------------------------------


def reconnect_latencies(run: Run) -> pd.DataFrame:
    """The reconnect-latency verdict's rows: every reconnect attempt, its latency (ms, inf if never back)
    and the cause of its gap (brief, planned, unplanned, restart)."""
    return latency.reconnects(run.events, restart_windows(run))


def latency_cdf(latency_ms, points: int = 400, weights=None) -> pd.DataFrame:
    """The empirical CDF of latencies, read off the sorted sample at fixed cumulative shares.

    Half the points spread evenly to 90 %, half on a log scale of the tail
    (90 %, 99 %, 99.9 % ... up to the (n-1)/n point), so the tail is drawn as
    finely as the body whatever n is; the quoted percentiles (:data:`CDF_MARKS`)
    are always among them. Each value is an observed latency (or the midpoint of
    the histogram bucket holding it: ``weights`` count the events each value stands
    for), by the rank rule of :func:`analysis.stats.quantile` (the verdicts'
    percentiles). A reconnect that never came back is infinitely slow: the curve
    stops below 100 % (``never`` in the frame's attrs).
    """
    x = np.asarray(latency_ms, dtype=float)
    w = np.ones(len(x), dtype=np.int64) if weights is None else np.asarray(weights, dtype=np.int64)
    keep = ~np.isnan(x) & (w > 0)
    order = np.argsort(x[keep], kind="stable")
    x, cum = x[keep][order], np.cumsum(w[keep][order])
    n = int(cum[-1]) if len(cum) else 0
    if n == 0:
        return _with_attrs(pd.DataFrame({"p": [], "latency_ms": []}), n=0, never=0, max=float("nan"))
    body = np.linspace(0.0, 0.9, points // 2, endpoint=False)
    tail = 1 - np.logspace(-1, -math.log10(n), points - points // 2) if n > 10 else np.array([0.9])
    marks = [q for q in CDF_MARKS if q < (n - 1) / n]
    p = np.unique(np.r_[body, tail, marks, (n - 1) / n] if n > 1 else body)
    rank = np.clip(np.ceil(p * n - 1e-9).astype(np.int64), 1, n)
    cdf = pd.DataFrame({"p": p, "latency_ms": x[np.searchsorted(cum, rank)]})
    never = int(w[keep][order][np.isinf(x)].sum())
    return _with_attrs(cdf, n=n, never=never, max=float(x[-1]))


def latency_cdfs(reconnects: pd.DataFrame, points: int = 400) -> dict[str, pd.DataFrame]:
    """Reconnect latency CDFs: every reconnect, then one per cause of the gap (brief, planned, unplanned ...)."""
    if not reconnects["n"].sum():
        return {}
    by_cause = {str(cause): latency_cdf(g["latency_ms"], points, g["n"]) for cause, g in reconnects.groupby("cause")}
    return {"all": latency_cdf(reconnects["latency_ms"], points, reconnects["n"]), **by_cause}


def latency_limits(thresholds: dict) -> dict[str, float]:
    """The reconnect-latency verdict's p99 limits (ms), by what they limit."""
    th = thresholds.get("reconnect_latency") or {}
    limits = {"p99 limit": th.get("p99_max_ms"), "brief-gap p99 limit": th.get("brief_p99_max_ms")}
    return {k: v for k, v in limits.items() if v}


def latency_percentiles_over_time(reconnects: pd.DataFrame, t0: float, step: float) -> pd.DataFrame:
    """Reconnect latency p50, p95 and p99 (ms) per interval, with how many reconnects and how many never came back.

    Percentiles are observed values (no interpolation), or the midpoints of the histogram buckets holding
    them; an interval whose p99 is a reconnect that never came back has p99 = inf.
    """
    rec = reconnects.assign(t=interval(reconnects["ts"], t0, step))
    rec = rec.assign(never_back=rec["n"].where(np.isinf(rec["latency_ms"]), 0))
    out = _percentiles(rec, "latency_ms")
    out["n"] = rec.groupby("t")["n"].sum()
    out["never_back"] = rec.groupby("t")["never_back"].sum()
    return every_interval(out, step, fill=np.nan).fillna({"n": 0, "never_back": 0})


def users_over_time(activity: pd.DataFrame, t0: float, step: float) -> pd.DataFrame:
    """Simulated users running per interval and role (the most at once within the interval)."""
    if activity.empty:
        return pd.DataFrame(index=pd.Index([], name="t", dtype=float))
    a = activity.assign(t=interval(activity["interval"], t0, step), role=activity["role"].astype(str))
    per_second = a.groupby(["t", "interval", "role"])["users"].sum()
    most = per_second.groupby(["t", "role"]).max().unstack("role", fill_value=0)
    return every_interval(most.sort_index(), step, fill=0).astype(int)


# -- heartbeats, errors, close codes, throughput ----------------------------------------


def hb_rtt_over_time(events: pd.DataFrame, t0: float, step: float) -> pd.DataFrame:
    """Heartbeat round trip (ms) per interval: p50, p95, p99 and max of the answered ones, and the unanswered."""
    hb = events[(events["kind"] == Kind.HB_RTT) & (events["n"] > 0)]
    hb = hb.assign(t=interval(hb["ts"], t0, step))
    answered = hb[hb["ok"] == 1]
    out = _percentiles(answered, "latency_ms")
    out["max"] = answered.groupby("t")["latency_ms"].max()
    out["n"] = answered.groupby("t")["n"].sum()
    out = out.join(hb[hb["ok"] == 0].groupby("t")["n"].sum().rename("unanswered"), how="outer")
    return every_interval(out, step, fill=np.nan).fillna({"n": 0, "unanswered": 0})


def errors_over_time(events: pd.DataFrame, t0: float, step: float) -> pd.DataFrame:
    """Failed events (ok = 0: refused connects, failed reconnects, gaps, bad streams, error frames ...)
    per interval, one column per kind."""
    return _counts(events, events["ok"] == 0, "kind", t0, step)


def close_reasons_over_time(events: pd.DataFrame, t0: float, step: float) -> pd.DataFrame:
    """Closes the clients saw per interval, one column per reason the protocol adapter classified
    (``idle_reaped``, ``restarting``, ...)."""
    reasons = events["reason"].astype(str).replace("", "(none)")
    return _counts(events.assign(reason=reasons), events["kind"] == Kind.CLOSE, "reason", t0, step)


def throughput_per_role(events: pd.DataFrame, t0: float, step: float) -> pd.DataFrame:
    """Events per second per interval, one column per (role, kind)."""
    ev = events.assign(t=interval(events["ts"], t0, step))
    counts = ev.groupby(["t", "role", "kind"], observed=True)["n"].sum().unstack(["role", "kind"], fill_value=0)
    return every_interval(counts.sort_index(axis=1), step) / step


def _percentiles(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """:data:`PERCENTILES` of ``column`` per interval ``t``, each row weighted by its ``n``, by the rank rule of
    :func:`analysis.stats.quantile` (the value of rank ceil(p x n)): the verdicts' numbers, interval by interval."""
    names = [f"p{round(p * 100)}" for p in PERCENTILES]
    frame = frame[frame[column].notna() & (frame["n"] > 0)]
    if frame.empty:
        return pd.DataFrame(columns=names, index=pd.Index([], name="t"), dtype=float)
    t, values = frame["t"].to_numpy(), frame[column].to_numpy(dtype=float)
    weights = frame["n"].to_numpy(dtype=np.int64)
    order = np.lexsort((values, t))  # by interval, then value
    t, values, cum = t[order], values[order], np.cumsum(weights[order])
    starts = np.flatnonzero(np.r_[True, t[1:] != t[:-1]])
    before = np.r_[0, cum[starts[1:] - 1]]  # events in the intervals before each one
    sizes = np.r_[cum[starts[1:] - 1], cum[-1]] - before
    rank = {
        name: before + np.clip(np.ceil(p * sizes - 1e-9).astype(np.int64), 1, None)
        for name, p in zip(names, PERCENTILES, strict=True)
    }
    return pd.DataFrame(
        {name: values[np.searchsorted(cum, r)] for name, r in rank.items()}, index=pd.Index(t[starts], name="t")
    )


def _counts(events: pd.DataFrame, which: pd.Series, column: str, t0: float, step: float) -> pd.DataFrame:
    """Events picked by ``which``, counted per interval and value of ``column``, over every interval of ``events``."""
    t = interval(events["ts"], t0, step)
    picked = events.loc[which, [column, "n"]].assign(t=t[which], **{column: events.loc[which, column].astype(str)})
    counts = picked.groupby(["t", column])["n"].sum().unstack(column, fill_value=0)
    if counts.empty:
        counts = pd.DataFrame(index=pd.Index([], name="t", dtype=float))
    return every_interval(counts, step, over=t)


# -- the run in a few numbers, and against a baseline -----------------------------------


def verdict_table(verdicts: list[Verdict]) -> pd.DataFrame:
    """One row per verdict: status, figure and unit, threshold, n, bound and its label, summary."""
    columns = ["status", "figure", "unit", "threshold", "n", "bound", "bound_label", "summary"]
    return pd.DataFrame(
        [[str(v.status), v.figure, v.unit, v.threshold, v.n, v.bound, v.bound_label, v.summary] for v in verdicts],
        index=pd.Index([v.name for v in verdicts], name="verdict"),
        columns=columns,
    )


def key_figures(run: Run, verdicts: list[Verdict], reconnects: pd.DataFrame | None = None) -> pd.Series:
    """The capacity review's headline numbers, labelled with their units.

    Reconnect p50/p95/p99 (exact, as the latency verdict computes them), what a
    connection costs, the leak slope, peak RSS and connections, and throughput
    (events per second of load, overall and per role).
    """
    by_name = {v.name: v for v in verdicts}
    rec = reconnect_latencies(run) if reconnects is None else reconnects
    conf = 0.95
    pct = {k: q.value for k, q in latency.percentiles(rec, conf).items()}
    leak_v = by_name.get(leak.NAME)
    kib = (leak_v.details.get("kib_per_connection") if leak_v else None) or _kib(connection_cost(run))
    backend = run.backend_samples()
    start, end = run.load_window
    seconds = end - start if math.isfinite(end - start) and end > start else float("nan")
    in_load = run.events[run.events["ts"].between(start, end)] if math.isfinite(seconds) else run.events.iloc[:0]
    per_role = in_load.groupby("role", observed=True)["n"].sum() / seconds
    figures = {
        "reconnect p50 (ms)": pct["p50"],
        "reconnect p95 (ms)": pct["p95"],
        "reconnect p99 (ms)": pct["p99"],
        "reconnects": rec["n"].sum(),
        "KiB per connection": kib,
        "leak slope (MiB/h)": _leak_slope(leak_v),
        "RSS held per cycle (KiB)": leak_v.details.get("held_kib_per_cycle") if leak_v else None,
        "peak RSS (MiB)": backend["rss_bytes"].max() / MIB if len(backend) else None,
        "peak connections": run.server_stats["connections"].max() if "connections" in run.server_stats else None,
        "throughput (events/s)": in_load["n"].sum() / seconds if math.isfinite(seconds) else None,
        **{f"throughput {role} (events/s)": rate for role, rate in per_role.items()},
    }
    return pd.Series(figures, dtype=float, name=run.run_id)


def compare(base: pd.Series, this: pd.Series) -> pd.DataFrame:
    """Two runs' figures side by side: base, this, delta (this - base) and delta % of base."""
    both = pd.DataFrame({"base": base, "this": this}).astype(float)
    both["delta"] = both["this"] - both["base"]
    same = both["delta"] == 0
    both["delta_pct"] = (both["delta"] / both["base"].abs() * 100).where(both["base"] != 0).mask(same, 0.0)
    return both


def baseline_deltas(base: list[Verdict], this: list[Verdict]) -> pd.DataFrame:
    """Every verdict of both runs side by side: statuses, figures and the figure's delta (absolute and %)."""
    a, b = verdict_table(base), verdict_table(this)
    figures = compare(pd.to_numeric(a["figure"]), pd.to_numeric(b["figure"]))
    out = pd.DataFrame(
        {
            "status_base": a["status"].reindex(figures.index),
            "status": b["status"].reindex(figures.index),
            "unit": b["unit"].combine_first(a["unit"]).reindex(figures.index),
        }
    ).join(figures)
    out["regressed"] = _rank(out["status"]) > _rank(out["status_base"])
    return out.loc[[*b.index, *a.index.difference(b.index, sort=False)]]


def _rank(status: pd.Series) -> pd.Series:
    order = {Status.PASS: 0, Status.SKIPPED: 0, Status.INCONCLUSIVE: 1, Status.FAIL: 2}
    return status.map({str(k): v for k, v in order.items()}).fillna(0)


def _leak_slope(leak_verdict: Verdict | None) -> float | None:
    """The unexplained RSS slope (MiB/h) of the leak verdict's longest process window."""
    windows = (leak_verdict.details.get("windows") or []) if leak_verdict is not None else []
    main = max(windows, key=lambda w: w["n"], default=None)
    return main["slope_mib_per_hour"] if main else None


def _kib(per_connection_bytes: float | None) -> float | None:
    return per_connection_bytes / KIB if per_connection_bytes is not None else None


def _with_attrs(frame: pd.DataFrame, **attrs) -> pd.DataFrame:
    frame.attrs.update(attrs)
    return frame
