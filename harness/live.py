"""What the master has seen so far, live: the Resilience tab's figures and its verdicts so far.

:class:`Live` keeps a few figures, fed by the recorder (raw rows and tally rows as written) and the
telemetry (each round): reconnect percentiles (from a latency histogram of every reconnect), events/s,
the backend's latest sample. :class:`SoFar`
judges the verdicts: the analysis itself, run on the run directory as recorded so far, in a child
process; the tab holds no second copy of its rules. The analysis after the test has the last word.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path

import gevent
import numpy as np

from analysis.stats import Quantile, quantile
from analysis.verdicts import NAMES
from analysis.verdicts.base import format_figure
from analysis.verdicts.causes import STORM_TAIL_S
from contract.events import STORED_EVENT_COLUMNS, TALLY_COLUMNS, Detail, Kind
from contract.histogram import RELATIVE_ERROR, bucket_of, midpoint

from . import verdicts

logger = logging.getLogger(__name__)

RATE_WINDOW_S = 5.0  #: events/s over this window
WAITING = "waiting"  #: a verdict with nothing to judge yet
EVERY_S = 10.0  #: the verdicts so far are judged at most this often (and at most a fifth of the time)
TIMEOUT_S = 120.0  #: an analysis of what was recorded so far that takes longer is given up
MIB = 1024 * 1024
#: Where each field the tab reads sits in a raw row, and in a tally row.
_RAW = tuple(STORED_EVENT_COLUMNS.index(c) for c in ("ts", "kind", "ok", "latency_ms", "detail", "n"))
_TALLY = tuple(TALLY_COLUMNS.index(c) for c in ("interval", "kind", "ok", "detail", "bucket", "count"))


class Histogram:
    """Latencies counted per bucket (contract/histogram.py): every one, in memory bounded by the buckets."""

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self.seen = 0

    def add(self, bucket: int, n: int = 1) -> None:
        self.counts[bucket] += n
        self.seen += n

    def quantile(self, p: float, confidence: float) -> Quantile:
        buckets = np.fromiter(self.counts, dtype=np.int64, count=len(self.counts))
        weights = np.fromiter(self.counts.values(), dtype=np.int64, count=len(self.counts))
        return quantile(midpoint(buckets), p, confidence, weights=weights, error=RELATIVE_ERROR)


class Live:
    """What the master has seen so far, as figures (not verdicts): fed by the recorder and the telemetry."""

    def __init__(self, thresholds: dict, restarts: Callable[[], list[dict]] = list) -> None:
        self.th = thresholds
        self.restarts = restarts  #: the embedded backend's restarts so far (its records: ts, ready_ts)
        self.events = 0
        self.reconnects = Histogram()
        self.latest: dict = {}  #: the telemetry's last round
        self.duplicates_by_pid: dict = {}  #: the backend's duplicate_agents_total restarts at 0 with each process
        self.max_agents_per_session = 0.0
        self.marks: deque = deque()  #: (monotonic time, events) at each telemetry round: events/s
        self._broken = False

    # -- feeding --------------------------------------------------------------------
    def observe_events(self, raw: list, tallies: list) -> None:
        """Recorder observer: raw rows and tally rows, in their tables' column order."""
        try:
            ts, kind, ok, latency_ms, detail, n = _RAW
            for r in raw:
                self.events += r[n]
                if r[kind] == Kind.RECONNECT and r[n] and r[detail] != Detail.STOPPED_BY_CLOSE:
                    if not self._through_restart(r[ts]):
                        late = r[latency_ms] if r[ok] and r[latency_ms] is not None else math.inf
                        self.reconnects.add(bucket_of(late))
            at, kind, ok, detail, bucket, count = _TALLY
            for r in tallies:
                self.events += r[count]
                if r[kind] == Kind.RECONNECT and not self._through_restart(r[at]):
                    self.reconnects.add(r[bucket], r[count])
        except Exception:  # never let the tab break the recording (a local run fires this in a user's greenlet)
            if not self._broken:
                logger.exception("the Resilience tab could not count an event; its figures stop here")
            self._broken = True

    def _through_restart(self, ts: float) -> bool:
        """A reconnect that finished during a restart's storm: the restart verdict's, not reconnect-latency's."""
        return any(r["ts"] <= ts <= (r.get("ready_ts") or r["ts"]) + STORM_TAIL_S for r in self.restarts() if "ts" in r)

    def observe_sample(self, latest: dict) -> None:
        """Telemetry observer: one round (backend sample, Locust processes, ``/stats``)."""
        self.latest = latest
        stats = latest["stats"]
        if stats:
            dup = as_number(stats.get("duplicate_agents_total")) or 0.0
            self.duplicates_by_pid[stats.get("pid")] = max(dup, self.duplicates_by_pid.get(stats.get("pid"), 0.0))
            most = as_number(stats.get("max_agents_per_session")) or 0.0
            self.max_agents_per_session = max(self.max_agents_per_session, most)
        now = time.monotonic()
        self.marks.append((now, self.events))
        while now - self.marks[0][0] > RATE_WINDOW_S:
            self.marks.popleft()

    # -- figures --------------------------------------------------------------------
    def events_per_s(self) -> float:
        if not self.marks:
            return 0.0
        since, count = self.marks[0]
        elapsed = time.monotonic() - since
        return (self.events - count) / elapsed if elapsed > 0.5 else 0.0

    def reconnect_quantile(self, p: float) -> Quantile:
        return self.reconnects.quantile(p, self.th["reconnect_latency"]["confidence"])


class SoFar:
    """The analysis's own verdicts on what has been recorded so far: the tab's live verdict rows.

    No second copy of the rules: every :data:`EVERY_S` while a test runs (and never more
    than a fifth of the time, however long one analysis takes), the run's CSV files are
    flushed and ``python -m analysis RUN_DIR --so-far FILE`` judges them in a child
    process, so the master's event loop (and a local run's users) never waits on pandas.
    One at a time; the rows show the last result and when it was taken.
    """

    def __init__(self, run, every_s: float = EVERY_S) -> None:
        self.run = run
        self.every_s = every_s
        self.result: dict = {}
        self.as_of: float | None = None  #: wall clock of the last analysis's start
        self.took_s = 0.0
        self.error = ""
        self._greenlet: gevent.Greenlet | None = None
        self._next_at = 0.0
        fd, name = tempfile.mkstemp(prefix="so-far-", suffix=".json")
        os.close(fd)
        self.file = Path(name)

    def reset(self) -> None:
        """A new test: what was judged before is of another moment."""
        self.cancel()
        self.result, self.as_of, self.error = {}, None, ""
        self._next_at = time.monotonic() + self.every_s

    def cancel(self) -> None:
        if self._greenlet is not None and not self._greenlet.dead:
            self._greenlet.kill(block=True, timeout=5)
        self._greenlet = None

    def close(self) -> None:
        self.cancel()
        self.file.unlink(missing_ok=True)

    def poke(self) -> None:
        """Start an analysis if one is due and none is running (called as the tab is polled)."""
        now = time.monotonic()
        if now < self._next_at or (self._greenlet is not None and not self._greenlet.dead):
            return
        self._greenlet = gevent.spawn(self._analyse)

    def _analyse(self) -> None:
        run, started, t0 = self.run, time.time(), time.monotonic()
        try:
            for sink in (run.events, run.samples, run.server_stats):
                sink.flush()
            args = [*verdicts.analyser_args(run.options), f"--so-far={self.file}"]
            code, output = verdicts.analyse(run.dir.path, run.options.analyser, args, timeout=TIMEOUT_S)
            document = json.loads(self.file.read_text(encoding="utf-8")) if code in (0, 1, 3) else {}
            if document:
                self.result = {v["name"]: v for v in document.get("verdicts", [])}
                self.as_of, self.error = started, ""
            else:
                self.error = f"the analysis of what was recorded so far failed (exit {code}): {output[-300:]}"
        except Exception as e:  # shown in the tab; the run goes on
            logger.exception("the live analysis failed")
            self.error = f"the analysis of what was recorded so far failed: {type(e).__name__}: {e}"
        finally:
            self.took_s = time.monotonic() - t0
            self._next_at = time.monotonic() + max(self.every_s, 4 * self.took_s)

    def rows(self) -> list[tuple]:
        """(name, status, figure, threshold, n, why) per verdict, from the last analysis (or waiting for one)."""
        if not self.result:
            why = self.error or f"the first analysis of what is recorded runs {self.every_s:.0f} s into the test"
            return [(name, WAITING, "", "", "", why) for name in NAMES]
        age = time.time() - (self.as_of or time.time())
        return [
            (
                name,
                v["status"],
                show(v["figure"], v["unit"]),
                show(v["threshold"]),
                v["n"],
                f"{v['summary']} (as of {age:.0f} s ago)",
            )
            for name, v in self.result.items()
        ]


def as_number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def show(value, unit: str = "") -> str:
    return format_figure(value, unit, missing="")
