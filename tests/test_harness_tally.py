"""Bounded recording without Locust: events in, raw rows and tallies out (harness/tally.py), and the latency
buckets every worker and the analysis share (contract/histogram.py)."""

from __future__ import annotations

import numpy as np
import pytest

from contract.events import STORED_EVENT_COLUMNS, TALLY_COLUMNS, CloseReason, Detail, Kind
from contract.histogram import (
    EXACT_BELOW,
    OVERFLOW,
    RELATIVE_ERROR,
    bucket_of,
    buckets_of,
    lower_edge,
    midpoint,
    upper_edge,
)
from harness.tally import UNTIMED, Tally
from users.recording import ProtocolEvent

N = STORED_EVENT_COLUMNS.index("n")
GAP = STORED_EVENT_COLUMNS.index("gap")
COUNT = TALLY_COLUMNS.index("count")


def event(ts, user, kind, ok=1, detail="", latency_ms=None, reason="", role="flapping") -> ProtocolEvent:
    return ProtocolEvent(
        ts, "", user, role, "s-" + user, kind, ok, latency_ms, "a", None, "", reason, detail, None, None, ""
    )


def flap(ts: float, user: str = "u1", latency_ms: float = 12.0) -> list[ProtocolEvent]:
    """One routine flapping cycle: connect, welcome resumed, planned close, reconnect."""
    return [
        event(ts, user, Kind.CONNECT, latency_ms=1.0),
        event(ts, user, Kind.WELCOME, detail=Detail.RESUMED),
        event(ts + 0.05, user, Kind.DISCONNECT, detail=Detail.FLAP_CLOSE, reason=CloseReason.CLIENT),
        event(ts + 0.1, user, Kind.RECONNECT, detail=Detail.RESUMED, latency_ms=latency_ms),
    ]


def counted(raw, tallies) -> int:
    return sum(r[N] for r in raw) + sum(t[COUNT] for t in tallies)


def test_routine_events_are_counted_per_interval_key_and_bucket_not_kept():
    tally = Tally("w1")
    for i in range(1000):
        for e in flap(100.0 + i * 0.0008):  # all in the second from 100 s
            tally.add(e)
    raw, tallies = tally.take(101.0)
    assert raw == []  # a healthy second of 4,000 events is a handful of rows
    assert len(tallies) == 4 and counted(raw, tallies) == 4000
    reconnects = [t for t in tallies if t[TALLY_COLUMNS.index("kind")] == Kind.RECONNECT]
    assert reconnects[0][TALLY_COLUMNS.index("gap")] == Detail.FLAP_CLOSE  # the cause travels with the count
    assert reconnects[0][TALLY_COLUMNS.index("bucket")] == bucket_of(12.0)
    untimed = [t for t in tallies if t[TALLY_COLUMNS.index("kind")] == Kind.WELCOME]
    assert untimed[0][TALLY_COLUMNS.index("bucket")] == UNTIMED and untimed[0][1] == "w1"


def test_a_failure_is_a_raw_row_after_the_disconnect_that_explains_it_kept_once():
    tally = Tally()
    for e in flap(10.0):
        tally.add(e)
    tally.add(event(11.0, "u1", Kind.DISCONNECT, detail=Detail.PLANNED_GAP_MEDIUM, reason=CloseReason.CLIENT))
    tally.add(event(13.5, "u1", Kind.HISTORY_CHECK, ok=0, detail=Detail.NOT_RESUMED))
    tally.add(event(13.6, "u1", Kind.ERROR, ok=0, detail=Detail.ERROR_FRAME))
    raw, tallies = tally.take(20.0)
    assert [(r[5], r[12], r[N]) for r in raw] == [
        (Kind.DISCONNECT, Detail.PLANNED_GAP_MEDIUM, 0),  # context: counted in the tallies already
        (Kind.HISTORY_CHECK, Detail.NOT_RESUMED, 1),
        (Kind.ERROR, Detail.ERROR_FRAME, 1),  # the disconnect is not repeated
    ]
    assert raw[1][GAP] == Detail.PLANNED_GAP_MEDIUM
    assert counted(raw, tallies) == 7  # every event counted exactly once


def test_each_timed_key_keeps_its_slowest_event_as_evidence():
    tally = Tally()
    for i, ms in enumerate([5.0, 900.0, 7.0]):
        for e in flap(10.0 + i, latency_ms=ms):
            tally.add(e)
    raw, tallies = tally.take(20.0, exemplars=True)
    slowest = [r for r in raw if r[5] == Kind.RECONNECT]
    assert len(slowest) == 1 and slowest[0][7] == 900.0 and slowest[0][N] == 0 and slowest[0][2] == "u1"
    assert counted(raw, tallies) == 12
    assert tally.take(21.0, exemplars=True) == ([], [])  # each exemplar is handed over once


def test_a_raw_window_keeps_every_event_and_the_look_back_before_it():
    tally = Tally(ring_s=10.0)
    for t in np.arange(0.0, 30.0, 1.0):
        for e in flap(float(t)):
            tally.add(e)
    tally.take(30.0)
    tally.open_window(since=22.0, until=40.0)  # the restart at 32 s, announced with its look-back
    after = flap(35.0)
    for e in after:
        tally.add(e)
    for e in flap(45.0):
        tally.add(e)
    raw, tallies = tally.take(50.0)
    context = [r for r in raw if r[N] == 0]
    assert context and min(r[0] for r in context) >= 22.0  # the ring, from the look-back on
    assert [r[0] for r in raw if r[N] == 1] == [e.ts for e in after]  # in the window: raw, not counted
    assert sum(t[COUNT] for t in tallies) == 4  # after it: counted again


def test_a_close_that_says_the_backend_restarts_opens_a_raw_window_by_itself():
    tally = Tally(ring_s=10.0)
    for e in flap(5.0):
        tally.add(e)
    tally.add(event(8.0, "u2", Kind.CLOSE, detail="", reason=CloseReason.RESTARTING, role="heartbeat"))
    for e in flap(9.0):
        tally.add(e)
    raw, tallies = tally.take(10.0)
    assert counted([], tallies) == 4  # the cycle before the close, counted as it happened
    assert sum(r[N] for r in raw) == 5 and len(raw) == 9  # that cycle again from the ring as context, then all raw


# -- the buckets ----------------------------------------------------------------------------------


def test_buckets_hold_every_value_within_the_stated_error_and_agree_one_by_one_and_vectorised():
    values = np.r_[0.0, 0.0004, 0.255, 0.256, 1.5, np.random.default_rng(1).lognormal(2, 3, 50_000)]
    buckets = buckets_of(values)
    assert (buckets == [bucket_of(v) for v in values]).all()
    micro = np.floor(values * 1000 + 0.5) / 1000
    assert (lower_edge(buckets) <= micro + 1e-12).all() and (micro < upper_edge(buckets)).all()
    exact = micro < EXACT_BELOW / 1000
    assert (midpoint(buckets)[exact] == micro[exact]).all()
    rel = np.abs(midpoint(buckets) - micro)[~exact] / micro[~exact]
    assert rel.max() <= RELATIVE_ERROR


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1e300])
def test_values_that_cannot_be_timed_are_counted_apart(value):
    assert bucket_of(value) == OVERFLOW and buckets_of([value])[0] == OVERFLOW
    assert midpoint(OVERFLOW) == np.inf
