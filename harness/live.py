"""What the master has seen so far, live: the Resilience tab's figures and its verdicts so far.

:class:`Live` keeps a few figures, fed by the recorder (rows as written to ``events.csv``) and the
telemetry (each round): reconnect percentiles, events/s, the backend's latest sample. :class:`SoFar`
judges the verdicts: the analysis itself, run on the run directory as recorded so far, in a child
process; the tab holds no second copy of its rules. The analysis after the test has the last word.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import gevent

from analysis.stats import quantile
from analysis.verdicts import NAMES
from analysis.verdicts.base import format_figure
from analysis.verdicts.causes import STORM_TAIL_S
from contract.events import EVENT_COLUMNS, Detail, Kind

from . import verdicts

logger = logging.getLogger(__name__)

RESERVOIR = 20_000  #: reconnect latencies kept for the percentiles (a uniform sample of them beyond this)
RATE_WINDOW_S = 5.0  #: events/s over this window
WAITING = "waiting"  #: a verdict with nothing to judge yet
EVERY_S = 10.0  #: the verdicts so far are judged at most this often (and at most a fifth of the time)
TIMEOUT_S = 120.0  #: an analysis of what was recorded so far that takes longer is given up
MIB = 1024 * 1024
#: Where each field the tab reads sits in a row of events.csv.
_AT = tuple(EVENT_COLUMNS.index(c) for c in ("ts", "kind", "ok", "latency_ms", "detail"))


class Reservoir:
    """A uniform sample of at most ``size`` values of a stream (Vitter's algorithm R); ``seen`` counts the stream."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.values: list[float] = []
        self.seen = 0
        self._random = random.Random(0)

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.values) < self.size:
            self.values.append(value)
        elif (j := self._random.randrange(self.seen)) < self.size:
            self.values[j] = value


class Live:
    """What the master has seen so far, as figures (not verdicts): fed by the recorder and the telemetry."""

    def __init__(self, thresholds: dict, restarts: Callable[[], list[dict]] = list) -> None:
        self.th = thresholds
        self.restarts = restarts  #: the embedded backend's restarts so far (its records: ts, ready_ts)
        self.events = 0
        self.reconnects = Reservoir(RESERVOIR)
        self.latest: dict = {}  #: the telemetry's last round
        self.duplicates_by_pid: dict = {}  #: the backend's duplicate_agents_total restarts at 0 with each process
        self.max_agents_per_session = 0.0
        self.marks: deque = deque()  #: (monotonic time, events) at each telemetry round: events/s
        self._broken = False

    # -- feeding --------------------------------------------------------------------
    def observe_events(self, rows: list) -> None:
        """Recorder observer: rows in ``events.csv`` column order."""
        self.events += len(rows)
        try:
            ts, kind, ok, latency_ms, detail = _AT
            for r in rows:
                if (
                    r[kind] == Kind.RECONNECT
                    and r[detail] != Detail.STOPPED_BY_CLOSE
                    and not self._through_restart(r[ts])
                ):
                    self.reconnects.add(float(r[latency_ms]) if r[ok] and r[latency_ms] not in (None, "") else math.inf)
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

    def reconnect_quantile(self, p: float):
        return quantile(self.reconnects.values, p, self.th["reconnect_latency"]["confidence"])


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
