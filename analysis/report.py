"""report.html: the capacity report, one self-contained file (charts embedded, opens offline).

Order: what ran, the verdict table, the comparison with a baseline (when one is
given), each verdict's definition and evidence, the charts, then what was wrong
with the inputs and the thresholds in force. Inline CSS, PNG data URIs, no
script and no external resource of any kind; every text from the run directory
is escaped.
"""

from __future__ import annotations

import html
import inspect
import math
import numbers
from collections.abc import Iterable

import pandas as pd

from contract.histogram import RELATIVE_ERROR

from . import charts, figures
from . import thresholds as thresholds_module
from .figures import Timeline
from .rundir import Run
from .verdicts import JUDGES, Status, Verdict, exit_code
from .verdicts.base import ExitCode

#: Key figures that measure the load offered rather than the backend's health: no better or worse.
LOAD_FIGURES = ("throughput", "reconnects", "peak connections")
DEFINITIONS = {name: inspect.getdoc(judge) or "" for name, judge in JUDGES}
#: The chart (key, title) that shows a verdict's evidence over time, linked from its evidence.
EVIDENCE_CHARTS = {"harness-health": ("generator", "Load generator: event-loop lag and machine load")}

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;margin:0 auto;max-width:1100px;
padding:0 1.2em 3em}
h1{font-size:1.5em;margin:1em 0 .3em}h2{font-size:1.2em;margin:1.8em 0 .5em;border-bottom:1px solid #ddd;
padding-bottom:.2em}h3{font-size:1em;margin:1.2em 0 .3em}
table{border-collapse:collapse;margin:.4em 0 1em;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.status{font-weight:bold;text-transform:uppercase;white-space:nowrap}
.pass .status,.status.pass{color:#fff;background:#2e7d32}.fail .status,.status.fail{color:#fff;background:#c62828}
.inconclusive .status,.status.inconclusive{color:#222;background:#f9a825}
.skipped .status,.status.skipped{color:#555;background:#e0e0e0}
tr.regressed td{background:#fdecea}td.worse{color:#c62828;font-weight:bold}td.better{color:#2e7d32}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:.5em 0}
dl.meta dt{color:#666}dl.meta dd{margin:0}
.outcome{display:inline-block;padding:4px 10px;border-radius:3px;font-weight:bold}
details{margin:.4em 0;border:1px solid #e3e3e3;border-radius:3px;padding:.3em .7em}
details summary{cursor:pointer}pre{white-space:pre-wrap;background:#fafafa;border:1px solid #eee;padding:.5em;
font-size:12px}
figure.chart{margin:1em 0 1.6em}figure.chart img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:12.5px;margin-top:.2em}.empty figcaption{color:#a15c00}
.note{color:#666}ul.problems li{color:#a15c00}nav a{margin-right:1em}
"""


def render(
    run: Run, verdicts: list[Verdict], thresholds: dict, baseline: tuple[Run, list[Verdict]] | None = None
) -> str:
    """The whole report as one HTML string."""
    tl = figures.timeline(run)
    rec = figures.reconnect_latencies(run)
    base_run, base_verdicts = baseline if baseline is not None else (None, None)
    base_rec = figures.reconnect_latencies(base_run) if base_run is not None else None
    sections = [
        _verdict_table(verdicts),
        _comparison(run, verdicts, rec, base_run, base_verdicts, base_rec, thresholds) if base_run else "",
        _evidence(verdicts),
        _charts(run, verdicts, rec, tl, thresholds),
        _problems(run),
        _thresholds(thresholds),
    ]
    links = [("verdicts", "verdicts"), ("baseline", "baseline"), ("evidence", "evidence"), ("charts", "charts")]
    links += [("inputs", "input problems"), ("thresholds", "thresholds")]
    nav = "".join(f"<a href='#{a}'>{t}</a>" for a, t in links if a != "baseline" or base_run)
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>Capacity report {_e(run.run_id)}</title><style>{CSS}</style></head><body>"
        f"{_header(run, verdicts, base_run)}<nav>{nav}</nav>{''.join(sections)}</body></html>\n"
    )


# -- sections ----------------------------------------------------------------------------


def _header(run: Run, verdicts: list[Verdict], base_run: Run | None) -> str:
    meta = run.meta
    backend = meta.get("backend") or {}
    start, end = run.load_window
    users = meta.get("user_classes") or {}
    code = exit_code(verdicts)
    outcome, status = {
        ExitCode.PASS: ("PASS: every verdict passed or was skipped", Status.PASS),
        ExitCode.FAIL: ("FAIL: at least one verdict failed", Status.FAIL),
    }.get(code, ("INCONCLUSIVE: nothing failed, but not every verdict could be judged", Status.INCONCLUSIVE))
    if backend.get("embedded"):
        where = f"embedded reference backend (server_stub) at {backend.get('url', '?')}, store {backend.get('store')}"
    else:
        where = f"remote backend at {meta.get('host') or backend.get('url') or 'unknown'}"
    pids = backend.get("pids") or ([backend["pid"]] if backend.get("pid") else [])
    restarts = backend.get("restarts") or []
    rows = [
        ("run", run.run_id),
        ("scenario", meta.get("scenario") or "none given"),
        ("directory", str(run.path)),
        ("started", meta.get("start_utc") or "unknown"),
        ("ended", meta.get("end_utc") or "unknown (the run never closed its directory)"),
        ("duration", _duration_text(start, end, run.drain_seconds)),
        ("users per class", _users_text(users)),
        ("load generator", f"{meta.get('runner') or 'unknown'} runner, workers: {len(meta.get('workers') or [])}"),
        ("backend", where),
        ("backend processes", ", ".join(str(p) for p in pids) + f"; {len(restarts)} restart(s)" if pids else "-"),
        ("faults planted", ", ".join(run.faults) or "none"),
        ("run exit", _exit_text(meta, backend)),
        ("events", _events_text(meta, run)),
    ]
    if base_run is not None:
        rows.append(("baseline", f"{base_run.run_id} ({base_run.path})"))
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
    return (
        f"<header><h1>Capacity report: {_e(run.run_id)}</h1>"
        f"<p><span class='outcome status {status}'>{_e(outcome)}</span></p>"
        f"<dl class='meta'>{dl}</dl></header>"
    )


def _verdict_table(verdicts: list[Verdict]) -> str:
    head = _row(["verdict", "status", "figure", "threshold", "n", "bound", "summary"], "th")
    rows = "".join(
        f"<tr class='{_e(v.status)}' data-verdict='{_e(v.name)}' data-status='{_e(v.status)}'>"
        f"<td><a href='#evidence-{_e(v.name)}'>{_e(v.name)}</a></td><td class='status'>{_e(v.status)}</td>"
        f"<td class='num'>{_e(_num(v.figure, v.unit))}</td><td class='num'>{_e(_num(v.threshold, v.unit))}</td>"
        f"<td class='num'>{v.n:,}</td><td>{_e(_bound(v))}</td><td>{_e(v.summary)}</td></tr>"
        for v in verdicts
    )
    return (
        f"<section><h2>Verdicts</h2><table id='verdicts'><thead>{head}</thead><tbody>{rows}</tbody></table></section>"
    )


def _comparison(
    run: Run,
    verdicts: list[Verdict],
    rec: pd.DataFrame,
    base_run: Run,
    base_verdicts: list[Verdict],
    base_rec: pd.DataFrame,
    thresholds: dict,
) -> str:
    """The capacity regression review: every verdict's figure and the key figures, base against this run."""
    deltas = figures.baseline_deltas(base_verdicts, verdicts)
    head = _row(["verdict", "baseline", "this run", "baseline figure", "this figure", "delta", "delta %"], "th")
    rows = "".join(
        f"<tr class='{'regressed' if d.regressed else ''}' data-verdict='{_e(name)}'><td>{_e(name)}</td>"
        f"<td class='status {_e(d.status_base)}'>{_e(d.status_base)}</td>"
        f"<td class='status {_e(d.status)}'>{_e(d.status)}</td>"
        f"<td class='num'>{_e(_num(d.base, d.unit))}</td><td class='num'>{_e(_num(d.this, d.unit))}</td>"
        f"{_delta_cells(d.delta, d.delta_pct, lower_is_better=True)}</tr>"
        for name, d in deltas.iterrows()
    )
    keys = figures.compare(
        figures.key_figures(base_run, base_verdicts, base_rec), figures.key_figures(run, verdicts, rec)
    )
    key_head = _row(["figure", "baseline", "this run", "delta", "delta %"], "th")
    key_rows = "".join(
        f"<tr><td>{_e(name)}</td><td class='num'>{_e(_num(k.base))}</td><td class='num'>{_e(_num(k.this))}</td>"
        f"{_delta_cells(k.delta, k.delta_pct, lower_is_better=not name.startswith(LOAD_FIGURES))}"
        "</tr>"
        for name, k in keys.iterrows()
    )
    regressed = deltas.index[deltas["regressed"]].tolist()
    verdict_note = (
        f"Regressed (worse status than the baseline): {', '.join(regressed)}."
        if regressed
        else "No verdict has a worse status than in the baseline."
    )
    tl, base_tl = figures.timeline(run), figures.timeline(base_run)
    rss = charts.rss_vs_connections(
        figures.rss_vs_connections(run, tl),
        figures.connection_cost(run),
        baseline=(figures.rss_vs_connections(base_run, base_tl), figures.connection_cost(base_run)),
        why_empty=_why_no_samples(run, "backend samples with a connection count"),
    )
    cdf = charts.latency_cdf(
        figures.latency_cdfs(rec),
        figures.latency_limits(thresholds),
        baseline=figures.latency_cdfs(base_rec),
        why_empty="no reconnects in either run",
    )
    return (
        f"<section id='baseline'><h2>Against the baseline {_e(base_run.run_id)}</h2>"
        f"<p>{_e(verdict_note)} Deltas are this run minus the baseline; % of the baseline's figure.</p>"
        f"<table id='baseline-verdicts'><thead>{head}</thead><tbody>{rows}</tbody></table>"
        f"<h3>Key figures</h3><table id='baseline-figures'><thead>{key_head}</thead><tbody>{key_rows}</tbody></table>"
        f"<h3>Overlaid</h3>{rss.to_html()}{cdf.to_html()}</section>"
    )


def _evidence(verdicts: list[Verdict]) -> str:
    blocks = []
    for v in verdicts:
        count = f"{len(v.evidence)} evidence row(s)" if v.evidence else "no evidence rows"
        parts = [f"<p><strong>{_e(v.summary)}</strong></p>"]
        if v.bound is not None:
            parts.append(f"<p>{_e(_bound(v))}</p>")
        if DEFINITIONS.get(v.name):
            parts.append(f"<h3>Definition</h3><pre class='definition'>{_e(DEFINITIONS[v.name])}</pre>")
        if v.evidence:
            parts.append(f"<h3>Evidence</h3>{_records_table(v.evidence)}")
        if v.details:
            parts.append(f"<h3>Figures</h3>{_details_table(v.details)}")
        if v.name in EVIDENCE_CHARTS:
            key, title = EVIDENCE_CHARTS[v.name]
            parts.append(f"<p class='note'>Over time: <a href='#chart-{_e(key)}'>{_e(title)}</a>.</p>")
        blocks.append(
            f"<details id='evidence-{_e(v.name)}' class='{_e(v.status)}'{' open' if v.status is Status.FAIL else ''}>"
            f"<summary><span class='status {_e(v.status)}'>{_e(v.status)}</span> {_e(v.name)}: {_e(count)}</summary>"
            f"{''.join(parts)}</details>"
        )
    return f"<section id='evidence'><h2>Evidence</h2>{''.join(blocks)}</section>"


def _charts(run: Run, verdicts: list[Verdict], rec: pd.DataFrame, tl: Timeline, thresholds: dict) -> str:
    by_name = {v.name: v for v in verdicts}
    ev = run.events
    step = tl.step(figures.MAX_INTERVALS)
    no_events = _why_no_events(run)
    no_samples = _why_no_samples(run, "backend samples")
    max_lag_ms = thresholds["harness_health"]["max_loop_lag_ms"]
    made = [
        charts.rss_vs_connections(
            figures.rss_vs_connections(run, tl),
            figures.connection_cost(run),
            why_empty=_why_no_connections(run),
        ),
        charts.resources(
            figures.resource_series(run, tl),
            figures.leak_trend_lines(run, by_name.get("leak"), tl),
            tl,
            why_empty=no_samples,
        ),
        charts.latency_cdf(
            figures.latency_cdfs(rec),
            figures.latency_limits(thresholds),
            why_empty=no_events or "no reconnects in this run",
        ),
        charts.latency_over_time(
            figures.latency_percentiles_over_time(rec, tl.t0, step),
            figures.users_over_time(run.activity, tl.t0, step),
            tl,
            why_empty=no_events or "no reconnects in this run",
        ),
        charts.hb_rtt(
            figures.hb_rtt_over_time(ev, tl.t0, step),
            tl,
            why_empty=no_events or "no heartbeat round trips (no user waited a heartbeat interval?)",
        ),
        charts.generator_lag(
            figures.loop_lag_series(run, tl),
            figures.late_stretches(run, max_lag_ms, tl),
            figures.machine_load_series(run, tl),
            max_lag_ms,
            figures.machine_cpus(run),
            tl,
            why_empty=_why_no_lag(run),
        ),
        charts.errors_and_closes(
            figures.errors_over_time(ev, tl.t0, step),
            figures.close_reasons_over_time(ev, tl.t0, step),
            tl,
            why_empty=no_events or "no failed event and no close in this run",
        ),
        charts.throughput(figures.throughput_per_role(ev, tl.t0, step), tl, why_empty=no_events or "no events"),
    ]
    toc = "".join(f"<li><a href='#chart-{_e(c.key)}'>{_e(c.title)}</a></li>" for c in made)
    return f"<section id='charts'><h2>Charts</h2><ul>{toc}</ul>{''.join(c.to_html() for c in made)}</section>"


def _problems(run: Run) -> str:
    if run.problems:
        items = "".join(f"<li>{_e(p)}</li>" for p in run.problems)
        body = f"<ul class='problems'>{items}</ul>"
    else:
        body = "<p class='note'>none: every input file was read whole</p>"
    return f"<section id='inputs'><h2>Input problems</h2>{body}</section>"


def _thresholds(thresholds: dict) -> str:
    defaults = thresholds_module.defaults()
    rows = []
    for section, values in thresholds.items():
        for key, value in (values or {}).items():
            default = (defaults.get(section) or {}).get(key)
            note = "default" if default == value else f"overridden (default {_num(default)})"
            rows.append(
                f"<tr><td>{_e(section)}.{_e(key)}</td><td class='num'>{_e(_num(value))}</td><td>{_e(note)}</td></tr>"
            )
    head = _row(["threshold", "value", ""], "th")
    return (
        f"<section id='thresholds'><h2>Thresholds in force</h2><table><thead>{head}</thead>"
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


# -- pieces ------------------------------------------------------------------------------


def _records_table(records: list[dict]) -> str:
    """Evidence rows as a table: one column per key any row has, in first-seen order."""
    columns = list(dict.fromkeys(k for r in records for k in r))
    head = _row(columns, "th")
    body = "".join("<tr>" + "".join(f"<td>{_value(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in records)
    return f"<table class='evidence'><thead>{head}</thead><tbody>{body}</tbody></table>"


def _details_table(details: dict) -> str:
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{_value(v)}</td></tr>" for k, v in details.items())
    return f"<table class='details'><tbody>{rows}</tbody></table>"


def _value(value) -> str:
    """A verdict's detail as HTML: a table of a dict or of a list of records, numbers rounded, text escaped."""
    if isinstance(value, dict):
        return _details_table(value) if value else "-"
    if isinstance(value, list | tuple):
        if value and all(isinstance(r, dict) for r in value):
            return _records_table(list(value))
        return _e(", ".join(_num(v) for v in value)) if value else "none"
    return _e(_num(value))


def _row(cells: Iterable, tag: str = "td") -> str:
    return "<tr>" + "".join(f"<{tag}>{_e(c)}</{tag}>" for c in cells) + "</tr>"


def _delta_cells(delta: float, pct: float, lower_is_better: bool) -> str:
    if delta is None or not math.isfinite(delta):
        return "<td class='num'>-</td><td class='num'>-</td>"
    cls = ""
    if delta and lower_is_better:
        cls = "worse" if delta > 0 else "better"
    pct_text = f"{pct:+.1f} %" if pct is not None and math.isfinite(pct) else "-"
    return f"<td class='num {cls}'>{_e(_num(delta, signed=True))}</td><td class='num {cls}'>{_e(pct_text)}</td>"


def _bound(v: Verdict) -> str:
    if v.bound is None:
        return "-"
    # The label names the bound's unit where it differs from the figure's (the leak's slope bound).
    return f"{_num(v.bound)} ({v.bound_label})" if v.bound_label else _num(v.bound, v.unit)


def _num(value, unit: str = "", signed: bool = False) -> str:
    """A figure for people: 3 significant digits below 1000, thousands separated above; ``-`` if none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"{value} {unit}".strip()
    if math.isinf(value):
        text = "inf" if value > 0 else "-inf"
    elif float(value).is_integer() and abs(value) < 1e15:
        text = f"{int(value):{'+' if signed else ''},}"
    elif abs(value) < 1000:
        text = f"{value:{'+' if signed else ''}.3g}"
    else:
        text = f"{value:{'+' if signed else ''},.0f}"
    return f"{text} {unit}".strip()


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _duration_text(start: float, end: float, drain: float) -> str:
    if not (math.isfinite(start) and math.isfinite(end)):
        return "unknown (no test start or stop recorded, no events)"
    text = f"{_hms(end - start)} of load"
    return text + (f", then {_hms(drain)} of drain" if drain else ", no drain")


def _hms(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m:02d} min {s:02d} s" if h else f"{m} min {s:02d} s" if m else f"{s} s"


def _users_text(users: dict) -> str:
    if not users:
        return "unknown (meta.json has no user classes)"
    return ", ".join(f"{k} {v}" for k, v in users.items()) + f" (total {sum(users.values())})"


def _exit_text(meta: dict, backend: dict) -> str:
    parts = [meta.get("exit_reason") or "no exit reason recorded"]
    if not meta.get("complete"):
        parts.append("the run did not close its directory")
    if "exit_code" in backend:
        parts.append(f"backend exit code {backend['exit_code']}")
    if "verdicts_exit_code" in meta:
        parts.append(f"analysis exit code {meta['verdicts_exit_code']} (at the end of the run)")
    return "; ".join(parts)


def _events_text(meta: dict, run: Run) -> str:
    rec = meta.get("recording") or {}
    raw = int((run.events["span_s"] == 0).sum())
    text = f"{run.counted:,} read"
    if raw != len(run.events):
        text += (
            f" ({raw:,} kept row by row, the rest counted per interval with latency histograms: "
            f"percentiles within {RELATIVE_ERROR:.1%})"
        )
    if rec.get("enabled") is False:
        return text + " (recording was off: --no-record)"
    if rec.get("events_undelivered"):
        text += f", {rec['events_undelivered']:,} never reached the master"
    return text


def _why_no_events(run: Run) -> str | None:
    """Why there are no events at all (None when there are some)."""
    if len(run.events):
        return None
    problem = run.problem_with(run.events_file)
    if problem:
        return str(problem)
    if (run.meta.get("recording") or {}).get("enabled") is False:
        return "events were not recorded (--no-record)"
    return f"{run.events_file} has no rows"


def _why_no_samples(run: Run, what: str) -> str:
    problem = run.problem_with("samples.csv")
    return str(problem) if problem else f"no {what} in samples.csv"


def _why_no_lag(run: Run) -> str:
    problem = run.problem_with("samples.csv")
    if problem:
        return str(problem)
    if run.harness_samples().empty:
        return "no samples of the Locust processes in samples.csv"
    return "no event-loop lag samples in samples.csv: a run recorded before the harness measured its own lateness"


def _why_no_connections(run: Run) -> str:
    if run.backend_samples().empty:
        return _why_no_samples(run, "backend samples")
    problem = run.problem_with("server_stats.csv")
    if problem:
        return str(problem)
    return "server_stats.csv has no live connection counts (no /stats from the backend)"
