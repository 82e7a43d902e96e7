"""The capacity report and the figures behind it, on small synthetic run directories with known answers."""

from __future__ import annotations

import base64
import re

import matplotlib
import numpy as np
import pandas as pd
import pytest

from analysis import charts, figures, report, thresholds
from analysis.rundir import load
from analysis.stats import quantile
from analysis.verdicts import NAMES, Status, Verdict, judge_all

from .synthetic_run import PEAK_CONNECTIONS, T0, write_run

CHART_KEYS = (
    "rss-vs-connections",
    "resources",
    "latency-cdf",
    "latency-over-time",
    "hb-rtt",
    "generator",
    "errors",
    "throughput",
)
#: The main synthetic run's Locust process: 2 ms late all along, stopped for 3 s at t = 120 s.
LATE_AT, LATE_S = 120.0, 3.0
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def th():
    return thresholds.load()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return load(write_run(tmp_path_factory.mktemp("runs") / "this-run", loop_lag_ms=2.0, late=((LATE_AT, LATE_S),)))


@pytest.fixture(scope="module")
def page(run, th):
    return report.render(run, judge_all(run, th), th)


def rendered(path, th, baseline=None) -> str:
    run = load(path)
    base = (baseline, judge_all(baseline, th)) if baseline is not None else None
    return report.render(run, judge_all(run, th), th, baseline=base)


def png(chart: charts.Chart) -> bytes:
    assert chart.uri.startswith("data:image/png;base64,")
    return base64.b64decode(chart.uri.split(",", 1)[1])


# -- figures: known answers ------------------------------------------------------------------


def test_kib_per_connection_of_rss_that_is_20_kib_per_connection(run):
    assert figures.connection_cost(run) / 1024 == pytest.approx(20.0, rel=1e-3)
    points = figures.rss_vs_connections(run)
    line = figures.connection_fit_line(points, figures.connection_cost(run))
    slope = np.diff(line["rss_mib"]) / np.diff(line["connections"]) * 1024
    assert slope[0] == pytest.approx(20.0, rel=1e-3)
    assert line["rss_mib"].iloc[0] == pytest.approx(50.0, abs=0.01)  # through the idle backend's 50 MiB


def test_unexplained_rss_is_flat_when_connections_explain_it(run):
    series = figures.resource_series(run)
    assert series["rss_mib"].max() == pytest.approx(50 + 20 * PEAK_CONNECTIONS / 1024, abs=0.01)
    assert series["unexplained_mib"].max() - series["unexplained_mib"].min() < 0.01


def test_key_figures_and_baseline_deltas_of_two_runs(tmp_path, th):
    base = load(write_run(tmp_path / "base", kib_per_connection=20))
    this = load(write_run(tmp_path / "this", kib_per_connection=30))
    rows = figures.compare(
        figures.key_figures(base, judge_all(base, th)), figures.key_figures(this, judge_all(this, th))
    )
    kib = rows.loc["KiB per connection"]
    assert (kib["base"], kib["this"]) == pytest.approx((20, 30), rel=1e-3)
    assert kib["delta"] == pytest.approx(10, rel=1e-3)
    assert kib["delta_pct"] == pytest.approx(50, rel=1e-3)
    assert rows.loc["peak RSS (MiB)", "delta"] == pytest.approx(10 * PEAK_CONNECTIONS / 1024, abs=0.01)


def test_compare_says_no_percentage_of_a_zero_baseline():
    rows = figures.compare(pd.Series({"a": 0.0, "b": 0.0, "c": 4.0}), pd.Series({"a": 2.0, "b": 0.0, "c": 3.0}))
    assert np.isnan(rows.loc["a", "delta_pct"])
    assert rows.loc["b", "delta_pct"] == 0
    assert rows.loc["c", "delta_pct"] == pytest.approx(-25)


def test_baseline_deltas_flag_a_verdict_that_got_worse():
    base = [Verdict("leak", Status.PASS, "", figure=1.0), Verdict("zombie", Status.FAIL, "", figure=3.0)]
    this = [Verdict("leak", Status.FAIL, "", figure=3.0), Verdict("zombie", Status.PASS, "", figure=1.0)]
    d = figures.baseline_deltas(base, this)
    assert d.loc["leak", "regressed"] and not d.loc["zombie", "regressed"]
    assert d.loc["leak", "delta"] == 2.0
    assert d.loc["leak", "delta_pct"] == pytest.approx(200)


def test_latency_cdf_reads_the_verdicts_percentiles_off_a_bounded_number_of_points():
    latencies = np.random.default_rng(1).lognormal(3, 1, 1_000_000)
    cdf = figures.latency_cdf(latencies, points=400)
    assert len(cdf) <= 400 + len(figures.CDF_MARKS) + 1
    assert cdf["p"].is_monotonic_increasing and cdf["latency_ms"].is_monotonic_increasing
    assert cdf["p"].max() == pytest.approx(1 - 1e-6)  # the tail goes down to the (n-1)/n point
    for p in (0.5, 0.9, 0.99, 0.999):
        at = cdf.loc[(cdf["p"] - p).abs().idxmin()]
        assert at["p"] == pytest.approx(p, abs=1e-9)
        assert at["latency_ms"] == quantile(latencies, p).value


def test_latency_cdf_of_reconnects_that_never_came_back_stops_below_100_percent():
    cdf = figures.latency_cdf([10.0, 20.0, 30.0, np.inf])
    assert cdf.attrs["never"] == 1
    assert np.isinf(cdf["latency_ms"].iloc[-1]) or cdf["p"].max() < 1
    assert figures.latency_cdf([]).empty


def test_percentiles_over_time_per_interval():
    rec = pd.DataFrame(
        {"ts": T0 + np.r_[np.full(100, 5.0), np.full(100, 15.0)], "latency_ms": np.r_[1:201].astype(float), "n": 1}
    )
    rec.loc[199, "latency_ms"] = np.inf
    out = figures.latency_percentiles_over_time(rec, T0, 10.0)
    assert out.index.tolist() == [0.0, 10.0]
    assert out.loc[0.0, "p50"] == 50 and out.loc[0.0, "p99"] == 99
    assert out.loc[10.0, "n"] == 100 and out.loc[10.0, "never_back"] == 1
    assert out.loc[10.0, "p99"] == 199  # the rank rule of the verdicts: inf is the 100th of 100
    assert out.loc[0.0, "p95"] == quantile(rec["latency_ms"][:100], 0.95).value


def test_percentiles_over_time_weigh_counted_rows_like_the_events_they_count():
    """A row counting 3 events at 10 ms and one at 100 ms: the same percentiles as the four events one by one."""
    counted = pd.DataFrame({"ts": T0 + 1.0, "latency_ms": [10.0, 100.0], "n": [3, 1]})
    single = pd.DataFrame({"ts": T0 + 1.0, "latency_ms": [10.0, 10.0, 10.0, 100.0], "n": 1})
    one = figures.latency_percentiles_over_time(counted, T0, 10.0)
    other = figures.latency_percentiles_over_time(single, T0, 10.0)
    pd.testing.assert_frame_equal(one, other)
    assert one.loc[0.0, "p50"] == 10.0 and one.loc[0.0, "p99"] == 100.0 and one.loc[0.0, "n"] == 4


def test_users_alive_from_first_to_last_event(run):
    """Format 2 has no activity table: users are alive from their first event to their last."""
    users = figures.users_over_time(run.activity, T0, 10.0)
    assert users.loc[0.0].sum() == 20  # 4 users in each of 5 roles, all connected at the start
    assert (users.loc[0.0:290.0, ["flapping", "heartbeat"]] == 4).all().all()  # busy all along
    assert users.loc[10.0, "conversation"] == 1  # only one of them had an event after the start


def test_throughput_errors_and_close_reasons_per_interval(run):
    tp = figures.throughput_per_role(run.events, T0, 10.0)
    assert tp[("heartbeat", "hb_rtt")].loc[10.0:280.0].eq(4 * 2 / 10).all()  # 4 users, one ping per 5 s
    errors = figures.errors_over_time(run.events, T0, 10.0)
    assert errors["connect"].sum() == 1 and errors.loc[150.0, "connect"] == 1
    assert len(errors) == len(tp)  # zeros for every interval, not just the ones with errors
    closes = figures.close_reasons_over_time(run.events, T0, 10.0)
    assert list(closes.columns) == ["idle_reaped"]
    assert closes.to_numpy().sum() == (run.events["kind"] == "close").sum()


def test_loop_lag_machine_load_and_late_stretches_per_interval(run, th):
    tl = figures.timeline(run)
    lag = figures.loop_lag_series(run, tl)
    assert set(lag["source"]) == {"local"} and lag.index.is_unique
    assert lag["lag_ms"].max() == LATE_S * 1000 and lag["lag_ms"].idxmax() == LATE_AT + LATE_S  # reported after it
    assert (lag["lag_ms"].drop(LATE_AT + LATE_S) == 2.0).all()
    assert lag.index.intersection(np.arange(LATE_AT + 1, LATE_AT + LATE_S)).empty  # no sample while stopped
    late = figures.late_stretches(run, th["harness_health"]["max_loop_lag_ms"], tl)
    assert late[["source", "start", "end", "lag_ms"]].values.tolist() == [["local", LATE_AT, LATE_AT + LATE_S, 3000.0]]
    machine = figures.machine_load_series(run, tl)
    assert (machine["run_queue"] == 1).all() and (machine["cpu_percent"] == 30).all()
    assert figures.machine_cpus(run) == 2


def test_backend_heap_is_drawn_beside_rss_when_its_metrics_show_one(tmp_path, run):
    heap_run = load(write_run(tmp_path / "heap", seconds=120, heap_mib=30.0))
    series = figures.resource_series(heap_run)
    assert series["heap_mib"].min() == pytest.approx(30.0) and series["heap_mib"].max() > 30.0
    with_heap, without = charts.resources(series), charts.resources(figures.resource_series(run))
    assert "heap in use" in with_heap.caption and not with_heap.empty
    assert figures.resource_series(run)["heap_mib"].isna().all()
    assert "heap" not in without.caption and not without.empty


def test_a_day_of_one_second_samples_is_drawn_from_at_most_a_few_thousand_points(tmp_path):
    day = load(write_run(tmp_path / "day", seconds=86_400, events=False))
    tl = figures.timeline(day)
    assert len(day.backend_samples()) > 86_400
    assert len(figures.resource_series(day, tl)) <= figures.MAX_POINTS
    assert len(figures.rss_vs_connections(day, tl)) <= figures.MAX_POINTS
    assert tl.step() == 60.0 and tl.step(figures.MAX_INTERVALS) == 300.0
    assert charts.resources(figures.resource_series(day, tl), tl=tl).empty is False


# -- charts -----------------------------------------------------------------------------------


def test_every_chart_draws_nothing_as_a_panel_that_says_why():
    empty = pd.DataFrame()
    made = [
        charts.rss_vs_connections(pd.DataFrame(columns=["t", "pid", "connections", "rss_mib"]), None),
        charts.resources(empty),
        charts.latency_cdf({}),
        charts.latency_over_time(pd.DataFrame(columns=["p50", "p95", "p99", "n", "never_back"]), empty),
        charts.hb_rtt(pd.DataFrame(columns=["p50", "p95", "p99", "max", "n", "unanswered"])),
        charts.generator_lag(pd.DataFrame(columns=["source", "lag_ms"]), empty, empty, 250.0),
        charts.errors_and_closes(empty, empty),
        charts.throughput(empty, why_empty="events.csv: missing"),
    ]
    assert [c.key for c in made] == list(CHART_KEYS)
    for c in made:
        assert c.empty and c.caption.startswith("no data: ")
        assert png(c).startswith(PNG)
    assert made[-1].caption == "no data: events.csv: missing"


def test_generator_chart_without_machine_samples_draws_the_lag_alone(run, th):
    chart = charts.generator_lag(
        figures.loop_lag_series(run), figures.late_stretches(run, 250.0), pd.DataFrame(), 250.0
    )
    assert not chart.empty and png(chart).startswith(PNG)
    assert "no machine samples" in chart.caption and "1 late stretch(es), 3.0 s in all" in chart.caption


def test_charts_leave_matplotlibs_global_state_alone(run):
    before = dict(matplotlib.rcParams)
    chart = charts.resources(figures.resource_series(run))
    assert dict(matplotlib.rcParams) == before
    assert png(chart).startswith(PNG) and not chart.empty


# -- report -----------------------------------------------------------------------------------


def test_report_puts_the_verdict_table_first_then_evidence_charts_problems_thresholds(page):
    positions = [page.index(marker) for marker in ("id='verdicts'", "id='evidence'", "id='charts'", "id='inputs'")]
    assert positions == sorted(positions)
    assert page.index("id='thresholds'") > positions[-1]
    assert page.index("<header>") < positions[0]
    assert "<img" not in page[: positions[0]]


def test_report_rows_name_each_verdict_and_its_status(page, run, th):
    rows = re.findall(r"<tr class='(\w+)' data-verdict='([\w-]+)' data-status='(\w+)'>", page)
    assert [name for _, name, _ in rows] == list(NAMES)
    statuses = {v.name: str(v.status) for v in judge_all(run, th)}
    assert all(statuses[name] == status == cls for cls, name, status in rows)
    for name in NAMES:
        assert f"<details id='evidence-{name}'" in page


def test_report_has_every_chart_embedded(page):
    for key in CHART_KEYS:
        match = re.search(rf"id='chart-{key}'><img src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
        assert match, key
        assert base64.b64decode(match.group(1)).startswith(PNG)
    assert "no data" not in page


def test_report_shows_when_the_generator_was_late_and_why_it_matters(page):
    chart = re.search(r"<figure class='chart' id='chart-generator'>.*?</figure>", page).group(0)
    assert "alt='Load generator: event-loop lag and machine load'" in chart
    caption = re.search(r"<figcaption>(.*?)</figcaption>", chart).group(1)
    assert "1 late stretch(es), 3.0 s in all, shaded" in caption
    assert "more than its 2 cores" in caption
    assert "Figures measured while the generator was late are set aside by the verdicts" in caption
    assert "<a href='#chart-generator'>" in page[page.index("<details id='evidence-harness-health'") :]
    toc = page[page.index("<section id='charts'>") : page.index("<figure")]
    assert toc.index("chart-hb-rtt") < toc.index("chart-generator") < toc.index("chart-errors")


def test_report_of_an_older_run_without_loop_lag_or_heap_columns(tmp_path, th):
    path = write_run(tmp_path / "old", seconds=120)
    assert "loop_lag_ms" not in (path / "samples.csv").read_text().splitlines()[0]
    assert "heap_bytes" not in (path / "samples.csv").read_text().splitlines()[0]
    run = load(path)
    assert run.problems == []
    page = rendered(path, th)
    assert "no data: no event-loop lag samples in samples.csv: a run recorded before" in page
    assert "<figure class='chart empty' id='chart-generator'>" in page
    assert page.count("no data") == 1  # every other chart is drawn
    resources = re.search(r"id='chart-resources'>.*?<figcaption>(.*?)</figcaption>", page).group(1)
    assert "heap" not in resources


def test_report_loads_nothing_from_anywhere(page):
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.IGNORECASE)
    assert not re.search(r"<script|<link|<iframe|<object|@import|url\(", page, re.IGNORECASE)
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r"src='([^']*)'", page))


def test_report_header_says_what_ran(page):
    header = page[: page.index("</header>")]
    for text in ("this-run", "synthetic", "ConversationUser 4", "total 20", "embedded", "faults planted", "none"):
        assert text in header, text
    assert "run-time limit reached" in header
    assert "5 min 00 s of load" in header


def test_report_escapes_what_the_run_directory_says(tmp_path, th):
    path = write_run(tmp_path / "x", scenario="<script>alert(1)</script>", seconds=60)
    page = rendered(path, th)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


@pytest.mark.parametrize(
    "missing, why",
    [
        ({"events": False}, "events.csv: missing"),
        ({"samples": False}, "samples.csv: missing"),
        ({"server_stats": False}, "server_stats.csv: missing"),
        ({"events": False, "samples": False, "server_stats": False}, "events.csv: missing"),
    ],
)
def test_report_without_an_input_says_why_each_chart_is_empty(tmp_path, th, missing, why):
    page = rendered(write_run(tmp_path / "partial", seconds=120, **missing), th)
    assert f"no data: {why}" in page
    assert "id='verdicts'" in page and "class='problems'" in page
    for key in CHART_KEYS:
        assert f"id='chart-{key}'" in page


def test_report_of_an_empty_directory(tmp_path, th):
    (tmp_path / "empty").mkdir()
    page = rendered(tmp_path / "empty", th)
    assert "meta.json: missing" in page
    assert "no data: samples.csv: missing" in page and "no data: events.csv: missing" in page
    assert re.findall(r"data-verdict='([\w-]+)'", page) == list(NAMES)


def test_report_with_a_baseline_compares_every_verdict_and_the_key_figures(tmp_path, th):
    base = load(write_run(tmp_path / "base", kib_per_connection=20, reconnect_ms=20))
    page = rendered(write_run(tmp_path / "this", kib_per_connection=30, reconnect_ms=40), th, baseline=base)
    section = page[page.index("<section id='baseline'>") : page.index("id='evidence'")]
    assert page.index("id='verdicts'") < page.index("<section id='baseline'>")
    assert "Against the baseline base" in section
    assert re.findall(r"<tr class='[\w]*' data-verdict='([\w-]+)'>", section) == list(NAMES)
    row = re.search(r"<td>KiB per connection</td>(.*?)</tr>", section).group(1)
    assert re.findall(r">([^<]*)</td>", row) == ["20", "30", "+10", "+50.0 %"]
    for name in ("reconnect p50 (ms)", "reconnect p95 (ms)", "reconnect p99 (ms)", "leak slope (MiB/h)"):
        assert f"<td>{name}</td>" in section
    assert "throughput (events/s)" in section and "peak RSS (MiB)" in section
    assert "id='chart-rss-vs-connections'" in section and "id='chart-latency-cdf'" in section
    assert "Baseline: 20.0 KiB per connection" in section
