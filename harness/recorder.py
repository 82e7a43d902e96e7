"""Protocol events from every user, in every process, into the run directory's tables.

Where events happen (each worker, or the one process of a local run) a
:class:`~harness.tally.Tally` counts the routine ones per interval and keeps
raw rows for the rest (harness/tally.py says which and why). Every
``--record-interval`` (1 s) what it holds is handed over: written to the
``events/``, ``tallies/`` and ``activity/`` tables (harness/columnar.py) in a
local run, sent to the master in a distributed one.

Distributed: each worker sends the custom Locust message :data:`MESSAGE`::

    {"events": [[ts, "", user, role, ..., gap, n], ...],  # raw rows (contract.events.STORED_EVENT_COLUMNS)
     "tallies": [[interval, "", role, kind, ok, detail, reason, gap, bucket, count], ...],
     "activity": [[interval, "", role, users], ...],
     "final": bool,        # true for the last batch of a test (sent on the worker's test_stop)
     "emitted": int,       # events the worker's users produced so far (cumulative)
     "undelivered": int,   # of those, events it could not deliver (buffer full, send failed)
     "pid": int}

at most :data:`BATCH_MAX` raw rows a message. The master fills the ``worker``
column with the sender's node id. Events are never dropped silently: every one
is either in a table (a raw row or a count) or counted in ``undelivered``
(reported to the master and into ``meta.json``); a worker that never sent its
final batch is listed as not flushed. A backend restart opens a *raw window* on
every worker (message :data:`WINDOW_MESSAGE`): around it every event is a raw row.

A lost master: Locust's RPC send does not fail when the master is gone (ZeroMQ
queues the message), so a worker judges the master by its heartbeat replies
(one a second). After :data:`MASTER_SILENT_S` without one it stops sending and
keeps buffering (up to ``--record-buffer-max`` raw rows, beyond that it counts); if it
quits while the master is still silent, the buffer and every batch sent since
the master's last heartbeat count as undelivered (an upper bound: some may have
arrived), and its log says so, since no ``meta.json`` will be closed.

Stop ordering: a worker's ``test_stop`` fires after its users are gone, so the
batch it sends then is complete. On quit the master's runner stops reading
messages 0.5 s after telling the workers to quit, which is too tight to rely on;
:meth:`MasterRecorder.drain` therefore keeps reading the master's socket (feeding
every message to the runner's own handler, so Locust's final stats still land)
until each worker's final batch is in, or :data:`DRAIN_TIMEOUT_S` has passed.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import gevent
import pyarrow as pa

from contract.events import ACTIVITY_COLUMNS, STORED_EVENT_COLUMNS, TALLY_COLUMNS
from users.recording import protocol_events

from .columnar import ChunkedTable, schema
from .tally import EXEMPLAR_S, INTERVAL_S, RING_S, Tally

logger = logging.getLogger(__name__)

MESSAGE = "harness_events"
WINDOW_MESSAGE = "harness_raw_window"  #: master -> workers: {"since": ts, "until": ts}: keep every event raw
BATCH_MAX = 2_000  #: raw rows per message
BUFFER_MAX = 200_000  #: default ``--record-buffer-max``: raw rows a worker holds; beyond this they are counted lost
MASTER_SILENT_S = 5.0  #: no heartbeat reply from the master for this long: it is treated as unreachable
DRAIN_TIMEOUT_S = 10.0  #: how long the master waits for the workers' final batches at quit
#: After a backend restart is ready, events stay raw this long (the restart verdict's bound, 30 s, and its storm).
RESTART_RAW_AFTER_S = 60.0
#: A restart not over after this long: the raw window closes anyway (it is bounded like everything else).
RESTART_RAW_MAX_S = 600.0

_TYPES = {
    "ts": pa.float64(),
    "interval": pa.float64(),
    "ok": pa.int8(),
    "latency_ms": pa.float64(),
    "seq": pa.int64(),
    "idle_timeout_ms": pa.float64(),
    "retry_after_ms": pa.float64(),
    "n": pa.int8(),
    "bucket": pa.int32(),
    "count": pa.int64(),
    "users": pa.int32(),
}
EVENTS_SCHEMA = schema(STORED_EVENT_COLUMNS, _TYPES)
TALLIES_SCHEMA = schema(TALLY_COLUMNS, _TYPES)
ACTIVITY_SCHEMA = schema(ACTIVITY_COLUMNS, _TYPES)


#: An observer of what is written: (raw rows, tally rows), each a list of tuples in the tables' column order.
Observer = Callable[[list, list], None]


@dataclass
class Tables:
    """The run directory's event tables."""

    events: ChunkedTable
    tallies: ChunkedTable
    activity: ChunkedTable

    @classmethod
    def open(cls, directory) -> Tables:
        return cls(
            ChunkedTable(directory / "events", EVENTS_SCHEMA),
            ChunkedTable(directory / "tallies", TALLIES_SCHEMA),
            ChunkedTable(directory / "activity", ACTIVITY_SCHEMA),
        )

    def flush(self) -> None:
        for t in (self.events, self.tallies, self.activity):
            t.flush()

    def close(self) -> None:
        for t in (self.events, self.tallies, self.activity):
            t.close()


def _recording_options(environment) -> tuple[float, int]:
    opts = environment.parsed_options
    return (getattr(opts, "record_interval", None) or INTERVAL_S), (
        getattr(opts, "record_buffer_max", None) or BUFFER_MAX
    )


def _activity(environment, interval: float, worker: str = "") -> list[tuple]:
    """Users running per role at ``interval``, from the runner's own counts (a role: the class's ``role``)."""
    runner = environment.runner
    counts = getattr(runner, "user_classes_count", None) or {}
    roles: dict[str, int] = {}
    classes = {c.__name__: c for c in environment.user_classes or []}
    for name, n in counts.items():
        role = str(getattr(classes.get(name), "role", "") or "")
        if role and n:
            roles[role] = roles.get(role, 0) + n
    return [(interval, worker, role, n) for role, n in roles.items()]


class _Handover:
    """What a local run and a worker share: the tally, fed by the hook, emptied every interval."""

    def __init__(self, environment, worker: str) -> None:
        self.environment = environment
        self.interval_s, self.buffer_max = _recording_options(environment)
        self.tally = Tally(worker, self.interval_s, RING_S)
        self.emitted = 0
        self._next_exemplars = time.time() + EXEMPLAR_S

    def _on_event(self, event, **_) -> None:
        self.emitted += 1
        self.tally.add(event)

    def take(self, final: bool = False) -> tuple[list, list, list]:
        now = time.time()
        exemplars = final or now >= self._next_exemplars
        if exemplars:
            self._next_exemplars = now + EXEMPLAR_S
        raw, tallies = self.tally.take(now, exemplars)
        interval = now - now % self.interval_s
        return raw, tallies, _activity(self.environment, interval, self.tally.worker)

    def open_window(self, since: float, until: float) -> None:
        self.tally.open_window(since, until)


class LocalRecorder(_Handover):
    """Single process: the tally's rows go straight to the tables with ``worker = "local"``."""

    def __init__(self, environment, tables: Tables) -> None:
        super().__init__(environment, "local")
        self.tables = tables
        self.received = 0
        self.undelivered = 0
        self.observers: list[Observer] = []
        protocol_events(environment).add_listener(self._on_event)
        environment.events.test_stop.add_listener(lambda **_: self.hand_over(final=True))
        self._loop = gevent.spawn(self._hand_over_loop)

    def _hand_over_loop(self) -> None:
        while True:
            gevent.sleep(self.interval_s)
            try:
                self.hand_over()
            except Exception:  # never let the loop die: what is not written is counted
                logger.exception("could not write the protocol events")

    def hand_over(self, final: bool = False) -> None:
        raw, tallies, activity = self.take(final)
        self.tables.events.write_many(raw)
        self.tables.tallies.write_many(tallies)
        self.tables.activity.write_many(activity)
        self.tables.flush()  # on disk as soon as handed over: a crash loses at most the interval being counted
        self.received += len(raw)
        for observe in self.observers:
            observe(raw, tallies)

    def stop(self) -> None:
        self._loop.kill(block=False)
        self.hand_over(final=True)

    def summary(self) -> dict:
        t = self.tally
        return {
            "events_received": t.events,
            "events_counted": t.counted,
            "raw_rows": self.received,
            "per_worker": {"local": {"received": t.events, "counted": t.counted, "raw_rows": self.received}},
        }


class WorkerRecorder(_Handover):
    """On a worker: count and keep events in a tally, and ship what it holds to the master every interval."""

    def __init__(self, environment) -> None:
        super().__init__(environment, "")
        self.buffer: list = []  #: raw rows not sent yet
        self.tallies: list = []  #: tally and activity rows not sent yet
        self.activity: list = []
        self.sent = 0  #: events handed to Locust's RPC without an error (delivered unless the master died)
        self.undelivered = 0
        self.in_flight: deque[tuple[float, int]] = deque()  #: (sent at, events) since the master's last heartbeat
        self.pid = os.getpid()
        self.listening = False
        environment.events.test_start.add_listener(self._on_test_start)
        environment.events.test_stop.add_listener(self._on_test_stop)
        environment.events.quitting.add_listener(self._on_quitting)
        if environment.runner is not None:
            environment.runner.register_message(WINDOW_MESSAGE, self._on_window)
        self._loop = gevent.spawn(self._send_loop)

    def _on_test_start(self, environment, **_) -> None:
        # --no-record may come from the master (Locust copies custom options in its spawn message),
        # so it is read here, not at init; off means no listener at all (the benchmark's baseline).
        opts = environment.parsed_options
        record = not getattr(opts, "no_record", False)
        self.interval_s, self.buffer_max = _recording_options(environment)
        self.tally.interval_s = self.interval_s
        hook = protocol_events(environment)
        if record and not self.listening:
            hook.add_listener(self._on_event)
        elif not record and self.listening:
            hook.remove_listener(self._on_event)
        self.listening = record

    def _on_window(self, environment, msg, **_) -> None:
        self.open_window(float(msg.data["since"]), float(msg.data["until"]))

    def _last_heartbeat(self) -> float | None:
        return getattr(self.environment.runner, "last_heartbeat_timestamp", None)

    def master_silent(self) -> bool:
        last = self._last_heartbeat()
        return last is not None and time.time() - last > MASTER_SILENT_S

    def _collect(self, final: bool = False) -> None:
        raw, tallies, activity = self.take(final)
        room = max(0, self.buffer_max - len(self.buffer))
        if len(raw) > room:
            self.undelivered += sum(r[-1] for r in raw[room:])
            raw = raw[:room]
        self.buffer.extend(raw)
        self.tallies.extend(tallies)
        self.activity.extend(activity)

    def _send_loop(self) -> None:
        while True:
            gevent.sleep(self.interval_s)
            if self.listening:
                self._collect()
                self.send()

    def _on_test_stop(self, **_) -> None:
        self._collect(final=True)
        self.send(final=True)

    def _on_quitting(self, **_) -> None:
        self._loop.kill(block=False)
        self._collect(final=True)
        if self.master_silent():
            # Nothing more can reach the master: what is buffered is lost, and so (perhaps) is
            # what went out after its last heartbeat, which ZeroMQ accepted without complaint.
            self._drop_in_flight()
            self.undelivered += _events_in(self.buffer, self.tallies)
            self.buffer, self.tallies, self.activity = [], [], []
            logger.warning(
                "the master has been silent for over %.0f s: events buffered or sent since its last heartbeat"
                " count as undelivered",
                MASTER_SILENT_S,
            )
        elif self.buffer or self.tallies:
            self.send(final=True)
        # Always logged: when the master is gone this line is the only record of the worker's events.
        log = logger.warning if self.undelivered else logger.info
        log("protocol events: emitted %d, sent %d, undelivered %d", self.emitted, self.sent, self.undelivered)

    def _drop_in_flight(self) -> None:
        last = self._last_heartbeat() or 0.0
        lost = sum(n for at, n in self.in_flight if at >= last)
        self.sent -= lost
        self.undelivered += lost
        self.in_flight.clear()

    def send(self, final: bool = False) -> None:
        """Send everything held, raw rows in batches; ``final`` marks the last message (sent even when empty)."""
        if self.master_silent():
            return  # keep buffering (bounded) rather than feed a queue nobody reads
        last_hb = self._last_heartbeat() or 0.0
        while self.in_flight and self.in_flight[0][0] < last_hb:
            self.in_flight.popleft()  # the master answered a heartbeat after these: it was alive to read them
        tallies, activity, self.tallies, self.activity = self.tallies, self.activity, [], []
        while True:
            batch, self.buffer = self.buffer[:BATCH_MAX], self.buffer[BATCH_MAX:]
            last = not self.buffer
            events = _events_in(batch, tallies)
            data = {
                "events": batch,
                "tallies": tallies,
                "activity": activity,
                "final": final and last,
                "emitted": self.emitted,
                "undelivered": self.undelivered,
                "pid": self.pid,
            }
            try:
                self.environment.runner.send_message(MESSAGE, data)
            except Exception as e:  # an RPC failure must not kill a user greenlet; count what is lost
                self.undelivered += events
                logger.warning("could not send %d protocol events to the master: %s", events, e)
            else:
                self.sent += events
                if events:
                    self.in_flight.append((time.time(), events))
            tallies, activity = [], []
            if last:
                return


def _events_in(raw: list, tallies: list) -> int:
    """How many events rows stand for: raw rows count their ``n``, tally rows their ``count``."""
    return sum(r[-1] for r in raw) + sum(r[-1] for r in tallies)


@dataclass
class Received:
    """What the master knows about one worker's events."""

    received: int = 0  #: events arrived (raw rows counting their n, tally rows their count)
    raw_rows: int = 0
    emitted: int = 0
    undelivered: int = 0
    final: bool = False
    pid: int | None = None
    last_batch_ts: float | None = None  #: when its last batch arrived: what it did after is unknown if it is lost


class MasterRecorder:
    """On the master: write every worker's rows to the tables; open raw windows on every worker."""

    def __init__(self, environment, tables: Tables) -> None:
        self.environment = environment
        self.tables = tables
        self.tallies: dict[str, Received] = {}
        self.not_flushed: list[str] = []
        self.lost: dict[str, dict] = {}  #: worker -> when the master saw it go missing, and the users it ran
        self._users: dict[str, dict[str, int]] = {}  #: worker -> its last non-empty user count per class
        self.observers: list[Observer] = []
        environment.runner.register_message(MESSAGE, self._on_batch)
        # A master has no users, but a plugin might emit there: those few are kept raw.
        protocol_events(environment).add_listener(self._on_local_event)

    def _on_local_event(self, event, **_) -> None:
        row = (event[0], "master", *event[2:], "", 1)
        self.tables.events.write(row)
        for observe in self.observers:
            observe([row], [])

    def open_window(self, since: float, until: float) -> None:
        """Every worker keeps every event raw from ``since`` (what its ring still holds) until ``until``."""
        try:
            self.environment.runner.send_message(WINDOW_MESSAGE, {"since": since, "until": until})
        except Exception as e:  # the run goes on; the restart verdict then sees fewer raw rows, and says so
            logger.warning("could not ask the workers to keep raw rows around a restart: %s", e)

    def _on_batch(self, environment, msg, **_) -> None:
        worker = msg.node_id
        data = msg.data
        raw = [(r[0], worker, *r[2:]) for r in data["events"]]
        tallies = [(r[0], worker, *r[2:]) for r in data.get("tallies") or ()]
        self.tables.events.write_many(raw)
        self.tables.tallies.write_many(tallies)
        self.tables.activity.write_many([(r[0], worker, *r[2:]) for r in data.get("activity") or ()])
        for observe in self.observers:
            observe(raw, tallies)
        tally = self.tallies.setdefault(worker, Received())
        tally.received += _events_in(raw, tallies)
        tally.raw_rows += len(raw)
        tally.emitted = data["emitted"]
        tally.undelivered = data["undelivered"]
        tally.final = data["final"]
        tally.pid = data.get("pid")
        tally.last_batch_ts = time.time()

    def watch(self, runner) -> None:
        """Note each worker that goes missing (no heartbeat), with the users it ran; called every telemetry round.

        Locust clears a missing worker's user counts, so the last counts seen while it was alive are kept.
        """
        for node in list(runner.clients.all):
            if node.state == "missing":
                if node.id not in self.lost:
                    self.lost[node.id] = {"worker": node.id, "lost_utc": time.time(), "users": self._users.get(node.id)}
                    logger.warning("worker %s went missing with %s users", node.id, self._users.get(node.id) or "its")
            elif node.user_classes_count and any(node.user_classes_count.values()):
                self._users[node.id] = {c: n for c, n in node.user_classes_count.items() if n}

    def pending(self, expected) -> list[str]:
        known = set(expected) | set(self.tallies)
        return sorted(w for w in known if not (w in self.tallies and self.tallies[w].final))

    def drain(self, runner, expected, timeout: float = DRAIN_TIMEOUT_S) -> None:
        """After ``runner.quit()``: read the master's socket until every worker has said goodbye.

        A worker sends, in order, its final event batch, its final stats report
        and ``quit``, so waiting for both its final batch and its ``quit``
        (which removes it from ``runner.clients``) means nothing it sent is left
        unread. Every message goes to the runner's own handler, so Locust's
        final stats land too; ours reach :meth:`_on_batch` through it.
        """
        deadline = time.monotonic() + timeout

        def waiting() -> bool:
            return bool(self.pending(expected)) or any(w in runner.clients for w in expected)

        while waiting() and (left := deadline - time.monotonic()) > 0:
            received = None
            with gevent.Timeout(left, False):
                try:
                    received = runner.server.recv_from_client()
                except Exception as e:  # a broken socket: nothing more will come
                    logger.warning("stopped waiting for the workers' final messages: %s", e)
                    break
            if received is None:
                break
            try:
                runner.handle_message(*received)
            except Exception:
                logger.exception("error handling %s from %s while draining", received[1].type, received[0])
        self.not_flushed = self.pending(expected)
        if self.not_flushed:
            logger.warning("no final event batch from %s (waited %.0f s)", ", ".join(self.not_flushed), timeout)

    def summary(self) -> dict:
        return {
            "events_received": sum(t.received for t in self.tallies.values()),
            "raw_rows": sum(t.raw_rows for t in self.tallies.values()),
            "events_undelivered": sum(t.undelivered for t in self.tallies.values()),
            "per_worker": {
                w: {
                    "received": t.received,
                    "raw_rows": t.raw_rows,
                    "emitted": t.emitted,
                    "undelivered": t.undelivered,
                    "pid": t.pid,
                    "last_batch_utc": t.last_batch_ts,
                }
                for w, t in self.tallies.items()
            },
            "workers_not_flushed": self.not_flushed,
            "workers_lost": [
                {**entry, "last_batch_utc": (self.tallies.get(w) or Received()).last_batch_ts}
                for w, entry in self.lost.items()
            ],
        }
