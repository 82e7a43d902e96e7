"""The Resilience tab in-process: its live figures, and its verdicts so far, which are the analysis's own
(the browser test drives the real UI)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from analysis import thresholds
from analysis.rundir import load
from analysis.verdicts import judge_all
from contract.histogram import RELATIVE_ERROR, bucket_of
from harness.live import WAITING, Live, SoFar
from tests.synthetic_run import write_run


def _event(user, kind, ok=1, latency_ms=None, detail="", ts=0.0):
    """A raw row (contract.events.STORED_EVENT_COLUMNS)."""
    return (ts, "local", user, "flapping", "s-" + user, kind, ok, latency_ms, "a1", None, "", "", detail, None, None,
            "", "", 1)  # fmt: skip


def _sample(live: Live, ts: float, **stats) -> None:
    live.observe_sample(
        {
            "ts": ts,
            "backend": {"pid": 7, "rss_bytes": 50e6},
            "locust": [{"source": "local", "cpu_percent": 12.0}],
            "stats": {"pid": 7, "connections": 10, **stats},
            "stats_error": "",
        }
    )


def test_reconnect_figures_count_every_reconnect_a_give_up_as_infinite():
    live = Live(thresholds.load())
    rows = [_event(f"FlappingUser-1-{n}", "reconnect", latency_ms=5.0 + n, detail="resumed") for n in range(40)]
    rows += [_event("FlappingUser-1-6", "reconnect", ok=0, detail="gave up")]
    rows += [_event("FlappingUser-1-6", "reconnect", ok=0, detail="stopped by close code")]  # not a latency
    live.observe_events(rows, [])
    assert live.reconnects.seen == 41 and live.reconnect_quantile(0.5).value == pytest.approx(25.0, rel=RELATIVE_ERROR)
    assert live.reconnect_quantile(1.0).value == float("inf")
    _sample(live, 1.0, duplicate_agents_total=2, max_agents_per_session=2)
    assert live.duplicates_by_pid == {7: 2.0} and live.max_agents_per_session == 2


def test_counted_reconnects_weigh_as_many_as_they_count_within_the_histogram_error():
    """A tally row of 1,000 reconnects in one bucket and 10 raw ones: p50 is the tally's, within 0.4 %."""
    live = Live(thresholds.load())
    tally = (0.0, "local", "flapping", "reconnect", 1, "resumed", "", "flap_close", bucket_of(12.0), 1_000)
    live.observe_events([_event("FlappingUser-1-1", "reconnect", latency_ms=900.0) for _ in range(10)], [tally])
    p50, p99 = live.reconnect_quantile(0.5), live.reconnect_quantile(0.999)
    assert live.reconnects.seen == 1_010 and live.events == 1_010
    assert abs(p50.value - 12.0) <= 12.0 * RELATIVE_ERROR and p50.error == RELATIVE_ERROR
    assert abs(p99.value - 900.0) <= 900.0 * RELATIVE_ERROR


def test_reconnects_through_a_restart_are_left_to_the_restart_verdict():
    live = Live(thresholds.load(), lambda: [{"ts": 100.0, "ready_ts": 102.0}])
    live.observe_events(
        [
            _event("FlappingUser-1-1", "reconnect", latency_ms=3000.0, ts=104.0),  # in the storm: not judged here
            _event("FlappingUser-1-1", "reconnect", latency_ms=20.0, ts=120.0),
        ],
        [],
    )
    assert live.reconnects.seen == 1 and live.reconnect_quantile(0.5).value == pytest.approx(20.0, rel=RELATIVE_ERROR)


# -- the verdicts so far: the analysis itself on what is recorded --------------------------------
class _Sink:
    def __init__(self) -> None:
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1


def _open_run(path):
    """A run as the tab sees one: its directory still open (meta.json not complete), its sinks to flush."""
    meta = json.loads((path / "meta.json").read_text())
    meta["complete"] = False
    (path / "meta.json").write_text(json.dumps(meta))
    sinks = [_Sink(), _Sink(), _Sink()]
    run = SimpleNamespace(
        dir=SimpleNamespace(path=path),
        options=SimpleNamespace(analyser="analysis", thresholds="", gate=""),
        events=sinks[0],
        samples=sinks[1],
        server_stats=sinks[2],
    )
    return run, sinks


def test_the_verdicts_so_far_are_the_analysis_own_on_the_run_as_recorded(tmp_path):
    """No second copy of the rules: every row is what the analysis judges of the open run directory."""
    run, sinks = _open_run(write_run(tmp_path / "clean", seconds=120, leak_mib_per_hour=0.0))
    so_far = SoFar(run)
    try:
        assert {status for _, status, *_ in so_far.rows()} == {WAITING}  # before the first analysis
        so_far._analyse()
        rows = {name: (status, n, why) for name, status, _, _, n, why in so_far.rows()}
    finally:
        so_far.close()
    assert all(s.flushes == 1 for s in sinks), "the CSV files are flushed before each analysis"
    expected = judge_all(load(run.dir.path, in_progress=True), thresholds.load())
    assert list(rows) == [v.name for v in expected]
    for v in expected:
        status, n, why = rows[v.name]
        assert (status, n) == (v.status, v.n) and why.startswith(v.summary), (v.name, rows[v.name], v.summary)
    assert "never closed its directory" not in rows["harness-health"][2]  # an open run is expected here
    assert not (run.dir.path / "verdicts.json").exists(), "the final verdicts file is the final analysis's"


def test_a_failure_shows_in_the_verdicts_so_far(tmp_path):
    run, _ = _open_run(write_run(tmp_path / "leaky", seconds=900, leak_mib_per_hour=200.0))
    so_far = SoFar(run)
    try:
        so_far._analyse()
        rows = {name: (status, why) for name, status, _, _, _, why in so_far.rows()}
    finally:
        so_far.close()
    assert rows["leak"][0] == "fail", rows["leak"]


def test_an_analysis_that_cannot_run_is_shown_not_raised(tmp_path):
    run, _ = _open_run(write_run(tmp_path / "run", seconds=60))
    run.options.analyser = "no_such_analyser_module"
    so_far = SoFar(run)
    try:
        so_far._analyse()
        rows = so_far.rows()
    finally:
        so_far.close()
    assert {status for _, status, *_ in rows} == {WAITING}
    assert all("failed" in why for *_, why in rows), rows
