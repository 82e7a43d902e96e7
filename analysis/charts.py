"""The capacity report's charts: figures (:mod:`analysis.figures`) drawn as embeddable PNGs.

Each function takes what a figures function returned and gives a :class:`Chart`:
a title, a ``data:image/png;base64`` URI and a caption, ready to go into an
HTML page that must open offline (and shown inline by a notebook). A chart with
nothing to draw still renders, as a panel saying ``no data: <why>``.

matplotlib is driven without pyplot: each chart is a ``Figure`` on its own Agg
canvas, styled inside ``rc_context``, so nothing global is left behind (no
backend switch, no figure registry, no changed rcParams).
"""

from __future__ import annotations

import base64
import functools
import html
import io
import math
from dataclasses import dataclass, field

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter

from . import figures
from .figures import Timeline

#: Inches and dots per inch of a chart: 900 px wide at 90 dpi, small enough to embed a dozen.
WIDTH = 10.0
DPI = 90
STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 8,
    "legend.frameon": False,
}
THIS = "#1f5fa8"
BASE = "#8c8c8c"
BAD = "#c0392b"
ORANGE = "#e08214"
GREEN = "#1b9e77"
LATE = "#f4b6ae"
#: Tail ticks of a CDF: each a tenth of the share above the one before.
TAIL_TICKS = (0.0, 0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999, 0.999999, 0.9999999)


@dataclass(frozen=True)
class Chart:
    """One chart, embedded: ``uri`` is a PNG data URI; ``empty`` when it only says why there is nothing."""

    key: str
    title: str
    uri: str = field(repr=False)
    caption: str
    empty: bool = False

    def to_html(self) -> str:
        cls = "chart empty" if self.empty else "chart"
        return (
            f"<figure class='{cls}' id='chart-{html.escape(self.key)}'>"
            f"<img src='{self.uri}' alt='{html.escape(self.title)}'>"
            f"<figcaption>{html.escape(self.caption)}</figcaption></figure>"
        )

    def _repr_html_(self) -> str:  # a notebook shows the chart itself
        return self.to_html()


def _styled(draw):
    """Draw inside :data:`STYLE` (rcParams are read as artists are made); they are restored after."""

    @functools.wraps(draw)
    def styled(*args, **kwargs) -> Chart:
        with matplotlib.rc_context(STYLE):
            return draw(*args, **kwargs)

    return styled


# -- the charts -------------------------------------------------------------------------


@_styled
def rss_vs_connections(
    points: pd.DataFrame,
    per_connection_bytes: float | None,
    baseline: tuple[pd.DataFrame, float | None] | None = None,
    why_empty: str = "no backend samples with a live connection count (/stats)",
) -> Chart:
    """Backend RSS against live connections, coloured by time, with the fitted cost per connection."""
    key, title = "rss-vs-connections", "Backend RSS against live connections"
    if points.empty and (baseline is None or baseline[0].empty):
        return no_data(key, title, why_empty)
    fig, (ax,) = _figure(3.8)
    if baseline is not None and not baseline[0].empty:
        base_points, base_cost = baseline
        ax.scatter(base_points["connections"], base_points["rss_mib"], s=6, color=BASE, alpha=0.4, label="baseline")
        _fit_line(ax, base_points, base_cost, BASE, "baseline")
    if not points.empty:
        t = points["t"].to_numpy()
        unit, scale = time_unit(float(np.nanmax(t)) if len(t) else 0.0)
        dots = ax.scatter(points["connections"], points["rss_mib"], c=t / scale, s=8, cmap="viridis", label="this run")
        fig.colorbar(dots, ax=ax, label=f"time since load start ({unit})", pad=0.01)
        _fit_line(ax, points, per_connection_bytes, BAD, "this run")
    ax.set_xlabel("live connections (backend /stats)")
    ax.set_ylabel("RSS (MiB)")
    ax.set_title(title)
    ax.legend(loc="upper left")
    cost = _kib_text(per_connection_bytes)
    caption = (
        f"One point per interval and backend process (medians). Fitted cost: {cost} per live connection "
        "(Theil-Sen slope on the ramp, as the leak verdict fits it); points drifting above the line over "
        "time are memory the connections do not explain."
    )
    if baseline is not None:
        caption += f" Baseline: {_kib_text(baseline[1])} per connection."
    return _chart(fig, key, title, caption)


@_styled
def resources(
    series: pd.DataFrame,
    trend: pd.DataFrame | None = None,
    tl: Timeline | None = None,
    why_empty: str = "no backend samples in samples.csv",
) -> Chart:
    """RSS (and the part connections do not explain, with the leak slope), open fds, threads and CLOSE_WAIT."""
    key, title = "resources", "Backend resources over time"
    if series.empty:
        return no_data(key, title, why_empty)
    unit, scale = time_unit(_span(series.index, tl))
    fig, axes = _figure(6.4, rows=4, heights=(2, 1.2, 1, 1))
    heap = "heap_mib" in series and series["heap_mib"].notna().any()
    memory = [("rss_mib", "RSS", THIS), ("unexplained_mib", "RSS not explained by connections", ORANGE)]
    if heap:
        memory.append(("heap_mib", "runtime heap in use (/metrics)", GREEN))
    panels = [
        (axes[0], memory, "MiB"),
        (axes[1], [("fds", "open fds", THIS), ("connections", "live connections", BASE)], "count"),
        (axes[2], [("threads", "threads", THIS)], "threads"),
        (axes[3], [("close_wait", "CLOSE_WAIT sockets", BAD)], "sockets"),
    ]
    for ax, lines, ylabel in panels:
        for column, label, color in lines:
            _per_process(ax, series, column, scale, color, label)
        ax.set_ylabel(ylabel)
        _marks(ax, tl, scale, label=ax is axes[0])
    slopes = []
    if trend is not None and not trend.empty:
        for _, w in trend.groupby("window"):
            slope = w["slope_mib_per_hour"].iloc[0]
            slopes.append(slope)
            axes[0].plot(w["t"] / scale, w["unexplained_mib"], color=BAD, lw=2, ls="--")
        axes[0].plot([], [], color=BAD, lw=2, ls="--", label="leak slope (leak verdict)")
    for ax in axes:
        _legend_outside(ax)
    axes[0].set_title(title)
    axes[-1].set_xlabel(f"time since load start ({unit})")
    slope_text = ", ".join(f"{s:+.2f} MiB/h" for s in slopes) or "none (no process window long enough)"
    caption = (
        "Means per interval (CLOSE_WAIT: the most seen). The unexplained RSS is RSS minus the fitted cost of "
        f"the live connections; its Theil-Sen slope per process after warm-up: {slope_text}. "
        "After the load (dotted line) fds, threads and CLOSE_WAIT must return to their baseline."
    )
    if heap:
        caption += (
            " The runtime's heap in use, as its /metrics reports it, is drawn beside RSS: a managed runtime's "
            "RSS keeps the pages its heap grew into."
        )
    return _chart(fig, key, title, caption)


@_styled
def generator_lag(
    lag: pd.DataFrame,
    stretches: pd.DataFrame,
    machine: pd.DataFrame,
    max_lag_ms: float,
    cpus: int | None = None,
    tl: Timeline | None = None,
    why_empty: str = "no event-loop lag samples in samples.csv (a run recorded before the harness measured its own)",
) -> Chart:
    """Each Locust process's event-loop lag (symlog), the lateness limit and the late stretches shaded;
    below, the machine's CPU and run queue against its cores."""
    key, title = "generator", "Load generator: event-loop lag and machine load"
    if lag.empty:
        return no_data(key, title, why_empty)
    index = lag.index.unique().union(machine.index.unique())  # one lag row per process and interval
    unit, scale = time_unit(_span(index, tl))
    step = _step(index)
    rows = 3 if not machine.empty else 1
    fig, axes = _figure(5.6 if rows == 3 else 3.2, rows=rows, heights=(2, 1, 1) if rows == 3 else None)
    ax = axes[0]
    # A lag (and a CPU %) is the worst (the mean) since the sample before: drawn back from its interval's end.
    colors = [THIS, ORANGE, "#7570b3", GREEN, "#e7298a", "#66a61e", "#a6761d", BASE]
    for i, (source, proc) in enumerate(lag.groupby("source", sort=True)):
        color = colors[i % len(colors)]
        t_end = (proc.index + step) / scale
        ax.plot(t_end, proc["lag_ms"], color=color, lw=1.2, drawstyle="steps-pre", label=source)
    ax.axhline(max_lag_ms, color=BAD, ls="--", lw=1, label=f"late: beyond {max_lag_ms:g} ms (harness-health)")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_ylim(0, max(ax.get_ylim()[1], 2 * max_lag_ms))  # the limit never at the top edge
    ax.set_ylabel("loop lag (ms, log above 1)")
    ax.set_title(title)
    if not machine.empty:
        ax_cpu, ax_queue = axes[1], axes[2]
        t_end = (machine.index.to_numpy() + step) / scale
        ax_cpu.plot(t_end, machine["cpu_percent"], color=THIS, lw=1.2, drawstyle="steps-pre", label="machine CPU")
        ax_cpu.set_ylim(0, 105)
        ax_cpu.set_ylabel("% of all cores")
        # The run queue is counted at the sample: an interval without a sample stays blank, not held.
        queue = figures.every_interval(machine[["run_queue", "run_queue_max"]], step, fill=np.nan)
        t = queue.index.to_numpy() / scale
        ax_queue.fill_between(
            t, queue["run_queue"], queue["run_queue_max"], step="post", color=THIS, alpha=0.2, lw=0, label="most seen"
        )
        ax_queue.plot(t, queue["run_queue"], color=THIS, lw=1.2, drawstyle="steps-post", label="run queue (mean)")
        if cpus:
            ax_queue.axhline(cpus, color="k", ls="--", lw=1, label=f"{cpus} cores")
        ax_queue.set_ylim(bottom=0)
        ax_queue.set_ylabel("runnable tasks")
    for a in axes:
        _late_shading(a, stretches, scale, label=a is ax)
        _marks(a, tl, scale, label=a is ax)
        _legend_outside(a)
    axes[-1].set_xlabel(f"time since load start ({unit})")
    late = (
        f"{len(stretches):,} late stretch(es), {(stretches['end'] - stretches['start']).sum():.1f} s in all, shaded"
        if not stretches.empty
        else f"never late beyond {max_lag_ms:g} ms"
    )
    where = (
        f"; below, the machine the master ran on: CPU % of all its cores and runnable tasks "
        f"(more than its {f'{cpus} ' if cpus else ''}cores: tasks waiting for a CPU)"
        if not machine.empty
        else "; no machine samples (CPU, run queue) in this run"
    )
    caption = (
        f"The worst event-loop lateness of each Locust process per {_duration(step)} (how late its "
        f"clients' timers, reads and heartbeats ran): {late}{where}. Figures measured while the generator was "
        "late are set aside by the verdicts, neither failing nor passing them: they include the generator's own "
        "delay, not only the backend's."
    )
    return _chart(fig, key, title, caption)


@_styled
def latency_cdf(
    cdfs: dict[str, pd.DataFrame],
    limits: dict[str, float] | None = None,
    baseline: dict[str, pd.DataFrame] | None = None,
    why_empty: str = "no reconnects in this run",
) -> Chart:
    """Reconnect latency CDFs on a log tail axis (90 %, 99 %, 99.9 % equally spaced), per cause of the gap."""
    key, title = "latency-cdf", "Reconnect latency CDF"
    if not cdfs and not baseline:
        return no_data(key, title, why_empty)
    fig, (ax,) = _figure(4.0)
    top = 0.9
    if baseline and "all" in baseline:
        top = max(top, _cdf_line(ax, baseline["all"], "baseline (all)", BASE, lw=2.5, ls="--"))
    colors = iter(["#1b9e77", ORANGE, "#7570b3", "#e7298a", "#66a61e", "#a6761d"])
    for name, cdf in cdfs.items():
        color, lw = (THIS, 2.5) if name == "all" else (next(colors, BASE), 1.2)
        top = max(top, _cdf_line(ax, cdf, name, color, lw=lw))
    for label, ms in (limits or {}).items():
        ax.axvline(ms, color=BAD, ls=":", lw=1)
        ax.annotate(
            label,
            (ms, 0.98),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            color=BAD,
            fontsize=7,
        )
    _tail_axis(ax, top)
    ax.set_xscale("log")
    ax.set_xlabel("reconnect latency (ms, log): disconnect detected -> welcome of the resumed session")
    ax.set_ylabel("share of reconnects at or below")
    ax.set_title(title)
    ax.legend(loc="upper left")
    n = cdfs["all"].attrs.get("n", 0) if "all" in cdfs else 0
    never = cdfs["all"].attrs.get("never", 0) if "all" in cdfs else 0
    caption = (
        f"{n:,} reconnects (every one is a point of the sorted sample; the tail is drawn on a log scale of "
        "1 - share, so 90 %, 99 % and 99.9 % are equally spaced). Dotted: the verdict's p99 limits."
    )
    if never:
        caption += f" {never:,} never came back: the 'all' curve stops below 100 %."
    return _chart(fig, key, title, caption)


@_styled
def latency_over_time(
    pct: pd.DataFrame,
    users: pd.DataFrame,
    tl: Timeline | None = None,
    why_empty: str = "no reconnects in this run",
) -> Chart:
    """Reconnect p50/p95/p99 per interval (log), above the simulated users alive per role."""
    key, title = "latency-over-time", "Reconnect latency percentiles over time, with the user count"
    if pct.empty or pct["n"].sum() == 0:
        return no_data(key, title, why_empty)
    unit, scale = time_unit(_span(pct.index, tl))
    fig, (ax, ax_users) = _figure(5.0, rows=2, heights=(2, 1))
    t = pct.index.to_numpy() / scale
    for column, color in (("p50", "#1b9e77"), ("p95", ORANGE), ("p99", BAD)):
        ax.plot(t, pct[column].replace(np.inf, np.nan), color=color, label=column, drawstyle="steps-post")
    never = pct["never_back"] > 0
    if never.any():
        ax.plot(
            t[never],
            np.full(never.sum(), np.nanmax(pct["p99"].replace(np.inf, np.nan))),
            "v",
            color=BAD,
            label="a reconnect never came back",
        )
    ax.set_yscale("log")
    ax.set_ylabel("ms (log)")
    ax.set_title(title)
    _legend_outside(ax)
    _marks(ax, tl, scale)
    if not users.empty:
        ax_users.stackplot(
            users.index.to_numpy() / scale,
            users.to_numpy().T,
            labels=[str(c) for c in users.columns],
            step="post",
            alpha=0.8,
        )
        _legend_outside(ax_users)
    ax_users.set_ylabel("users alive")
    ax_users.set_xlabel(f"time since load start ({unit})")
    _marks(ax_users, tl, scale, label=False)
    step = _step(pct.index)
    caption = (
        f"Exact percentiles of the reconnects that finished in each {_duration(step)} interval; users alive "
        "per role (first to last event of each simulated user) below."
    )
    return _chart(fig, key, title, caption)


@_styled
def hb_rtt(hb: pd.DataFrame, tl: Timeline | None = None, why_empty: str = "no heartbeat round trips") -> Chart:
    """Heartbeat round trip per interval: p50, p95, p99, max; unanswered heartbeats marked."""
    key, title = "hb-rtt", "Heartbeat round trip"
    if hb.empty or (hb["n"].sum() + hb["unanswered"].sum()) == 0:
        return no_data(key, title, why_empty)
    unit, scale = time_unit(_span(hb.index, tl))
    fig, (ax,) = _figure(3.2)
    t = hb.index.to_numpy() / scale
    for column, color in (("p50", "#1b9e77"), ("p95", ORANGE), ("p99", BAD), ("max", BASE)):
        ax.plot(t, hb[column], color=color, label=column, drawstyle="steps-post", lw=1 if column == "max" else 1.5)
    missed = hb["unanswered"] > 0
    if missed.any():
        ax.plot(t[missed], np.full(missed.sum(), np.nanmax(hb["max"])), "x", color=BAD, label="unanswered")
    ax.set_yscale("log")
    ax.set_ylabel("ms (log)")
    ax.set_xlabel(f"time since load start ({unit})")
    ax.set_title(title)
    _legend_outside(ax)
    _marks(ax, tl, scale)
    caption = (
        f"{int(hb['n'].sum()):,} heartbeats answered, {int(hb['unanswered'].sum()):,} unanswered within two "
        f"intervals; percentiles per {_duration(_step(hb.index))}."
    )
    return _chart(fig, key, title, caption)


@_styled
def errors_and_closes(
    errors: pd.DataFrame,
    closes: pd.DataFrame,
    tl: Timeline | None = None,
    why_empty: str = "no failed event and no close in this run",
) -> Chart:
    """Failed events per kind and closes per classified reason, counted per interval."""
    key, title = "errors", "Errors and close reasons over time"
    if errors.empty and closes.empty:
        return no_data(key, title, why_empty)
    index = errors.index.union(closes.index)
    unit, scale = time_unit(_span(index, tl))
    fig, (ax_err, ax_close) = _figure(5.0, rows=2)
    step = _step(index)
    for ax, frame, what in ((ax_err, errors, "failed events (ok = 0)"), (ax_close, closes, "closes seen by clients")):
        bottom = np.zeros(len(frame))
        for column in frame.columns:
            ax.bar(frame.index / scale, frame[column], width=step / scale, bottom=bottom, align="edge", label=column)
            bottom += frame[column].to_numpy()
        if frame.empty:
            ax.text(0.5, 0.5, f"none: no {what}", transform=ax.transAxes, ha="center", va="center", color=BASE)
        ax.set_ylabel(f"per {_duration(step)}")
        ax.set_title(what, fontsize=9, fontweight="normal", loc="left")
        _marks(ax, tl, scale, label=ax is ax_err)
        if not frame.empty:
            _legend_outside(ax)
    ax_close.set_xlabel(f"time since load start ({unit})")
    fig.suptitle(title, fontsize=10, fontweight="bold")
    failed = int(errors.to_numpy().sum()) if not errors.empty else 0
    closed = int(closes.to_numpy().sum()) if not closes.empty else 0
    caption = f"{failed:,} failed events and {closed:,} closes, counted per {_duration(_step(index))}."
    return _chart(fig, key, title, caption)


@_styled
def throughput(tp: pd.DataFrame, tl: Timeline | None = None, why_empty: str = "no events") -> Chart:
    """Events per second per role, one panel per role, one line per event kind."""
    key, title = "throughput", "Throughput per role"
    if tp.empty:
        return no_data(key, title, why_empty)
    classes = list(dict.fromkeys(tp.columns.get_level_values(0)))
    unit, scale = time_unit(_span(tp.index, tl))
    fig, axes = _figure(1.0 + 1.8 * len(classes), rows=len(classes))
    t = tp.index.to_numpy() / scale
    for ax, cls in zip(axes, classes, strict=True):
        per_kind = tp[cls]
        for kind in per_kind.columns:
            ax.plot(t, per_kind[kind], label=str(kind), lw=1, drawstyle="steps-post")
        ax.set_ylabel("events/s")
        ax.set_title(
            f"{cls}: {per_kind.to_numpy().sum() * _step(tp.index):,.0f} events",
            fontsize=9,
            fontweight="normal",
            loc="left",
        )
        _marks(ax, tl, scale, label=ax is axes[0])
        _legend_outside(ax)
    axes[-1].set_xlabel(f"time since load start ({unit})")
    fig.suptitle(title, fontsize=10, fontweight="bold")
    caption = f"Client protocol events per second, by class and kind, averaged per {_duration(_step(tp.index))}."
    return _chart(fig, key, title, caption)


@_styled
def no_data(key: str, title: str, why: str) -> Chart:
    """A panel that says there is nothing to draw, and why."""
    fig = Figure(figsize=(WIDTH, 1.2))
    fig.text(0.5, 0.62, title, ha="center", va="center", fontsize=10, fontweight="bold")
    fig.text(0.5, 0.3, f"no data: {why}", ha="center", va="center", fontsize=9, color=BASE, wrap=True)
    return _chart(fig, key, title, f"no data: {why}", empty=True)


# -- helpers ------------------------------------------------------------------------------


def time_unit(span_s: float) -> tuple[str, float]:
    """The unit a time axis of ``span_s`` seconds reads best in: (name, seconds per unit)."""
    if span_s > 3 * 3600:
        return "h", 3600.0
    if span_s > 600:
        return "min", 60.0
    return "s", 1.0


def _figure(height: float, rows: int = 1, heights=None) -> tuple[Figure, list]:
    fig = Figure(figsize=(WIDTH, height), layout="constrained")
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    return fig, list(axes)


def _chart(fig: Figure, key: str, title: str, caption: str, empty: bool = False) -> Chart:
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf, metadata={"Software": None})
    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return Chart(key, title, uri, caption, empty)


def _per_process(ax, series: pd.DataFrame, column: str, scale: float, color: str, label: str) -> None:
    """One line per backend process (a restart starts a new one), one legend entry."""
    for i, (_, proc) in enumerate(series.groupby("pid", dropna=False, sort=False)):
        ax.plot(proc.index / scale, proc[column], color=color, lw=1.2, label=label if i == 0 else None)


def _marks(ax, tl: Timeline | None, scale: float, label: bool = True) -> None:
    """Backend restarts and the end of the load, as vertical lines (in the legend when ``label``)."""
    if tl is None:
        return
    for i, t in enumerate(tl.restarts):
        text = "backend restart" if label and i == 0 else None
        ax.axvline(t / scale, color=BAD, lw=0.8, ls="-.", alpha=0.7, label=text)
    if math.isfinite(tl.load_end):
        text = "load end (drain follows)" if label else None
        ax.axvline(tl.load_end / scale, color="k", lw=0.8, ls=":", alpha=0.7, label=text)


def _late_shading(ax, stretches: pd.DataFrame, scale: float, label: bool = True) -> None:
    """The generator's late stretches as shaded bands (edged, so a short one in a long run still shows)."""
    if stretches.empty:
        return
    spans = np.c_[stretches["start"] / scale, (stretches["end"] - stretches["start"]) / scale]
    ax.broken_barh(
        spans,
        (0, 1),
        transform=ax.get_xaxis_transform(),
        facecolor=LATE,
        edgecolor=LATE,
        alpha=0.6,
        lw=0.8,
        zorder=0,
        label="generator late (figures set aside)" if label else None,
    )


def _legend_outside(ax) -> None:
    """The legend to the right of the plot: time series span the whole width, nothing inside is free."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), borderaxespad=0.0)


def _fit_line(ax, points: pd.DataFrame, per_connection_bytes: float | None, color: str, who: str) -> None:
    line = figures.connection_fit_line(points, per_connection_bytes)
    if not line.empty:
        ax.plot(
            line["connections"],
            line["rss_mib"],
            color=color,
            ls="--",
            lw=1.5,
            label=f"{who}: {_kib_text(per_connection_bytes)} per connection",
        )


def _cdf_line(ax, cdf: pd.DataFrame, label: str, color: str, **style) -> float:
    """Draw one CDF (finite latencies only); returns the highest share drawn."""
    finite = cdf[np.isfinite(cdf["latency_ms"]) & (cdf["latency_ms"] > 0)]
    if finite.empty:
        return 0.0
    n = cdf.attrs.get("n", len(cdf))
    ax.plot(finite["latency_ms"], finite["p"], color=color, label=f"{label} (n={n:,})", drawstyle="steps-post", **style)
    return float(finite["p"].max())


def _tail_axis(ax, top: float) -> None:
    """y from 0 to ``top`` on a log scale of 1 - share: 90 %, 99 %, 99.9 % ... equally spaced."""

    def forward(p):
        return -np.log10(np.clip(1 - np.asarray(p, dtype=float), 1e-12, None))

    def inverse(y):
        return 1 - 10 ** -np.asarray(y, dtype=float)

    ticks = [p for p in TAIL_TICKS if p <= top] + [next((p for p in TAIL_TICKS if p > top), TAIL_TICKS[-1])]
    ax.set_yscale("function", functions=(forward, inverse))
    ax.set_ylim(0, ticks[-1])
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_minor_locator(FixedLocator([]))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda p, _: f"{p * 100:.10g} %"))


def _span(index, tl: Timeline | None) -> float:
    if tl is not None and tl.span > 0:
        return tl.span
    return float(np.nanmax(np.asarray(index, dtype=float))) if len(index) else 0.0


def _step(index) -> float:
    values = np.asarray(index, dtype=float)
    return float(np.min(np.diff(values))) if len(values) > 1 else 1.0


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _kib_text(per_connection_bytes: float | None) -> str:
    return f"{per_connection_bytes / 1024:.1f} KiB" if per_connection_bytes is not None else "no fit (ramp too short)"
