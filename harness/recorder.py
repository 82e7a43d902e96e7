"""Protocol events from every user, in every process, into one ``events.csv``.

Single process: the listener writes each event straight to the file.

Distributed: each worker buffers its events and sends them to the master in
batches (at most :data:`BATCH_MAX` events, at least every :data:`BATCH_INTERVAL_S`)
as the custom Locust message :data:`MESSAGE`::

    {"events": [[ts, "", user, role, session, kind, ...], ...],  # rows in contract.events.EVENT_COLUMNS order
     "final": bool,        # true for the last batch of a test (sent on the worker's test_stop)
     "emitted": int,       # events the worker's users produced so far (cumulative)
     "undelivered": int,   # of those, events it could not deliver (buffer full, send failed)
     "pid": int}

The master fills the ``worker`` column with the sender's node id. Events are
never dropped silently: every one is either in ``events.csv`` or counted in
``undelivered`` (reported to the master and into ``meta.json``); a worker that
never sent its final batch is listed as not flushed.

A lost master: Locust's RPC send does not fail when the master is gone (ZeroMQ
queues the message), so a worker judges the master by its heartbeat replies
(one a second). After :data:`MASTER_SILENT_S` without one it stops sending and
keeps buffering (up to ``--record-buffer-max``, beyond that it counts); if it
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

from contract.events import EVENT_COLUMNS
from users.recording import protocol_events

from .rundir import CsvSink

logger = logging.getLogger(__name__)

MESSAGE = "harness_events"
BATCH_MAX = 2_000  #: events per message
BATCH_INTERVAL_S = 0.5  #: a worker sends what it has at least this often
BUFFER_MAX = 200_000  #: default ``--record-buffer-max``: events a worker holds; beyond this they are counted lost
MASTER_SILENT_S = 5.0  #: no heartbeat reply from the master for this long: it is treated as unreachable
DRAIN_TIMEOUT_S = 10.0  #: how long the master waits for the workers' final batches at quit


#: An observer of the rows written to ``events.csv`` (lists of tuples in EVENT_COLUMNS order), e.g. the web UI's tab.
Observer = Callable[[list], None]


class LocalRecorder:
    """Single process: events go straight to ``events.csv`` with ``worker = "local"``."""

    def __init__(self, environment, sink: CsvSink) -> None:
        self.sink = sink
        self.received = 0
        self.observers: list[Observer] = []
        protocol_events(environment).add_listener(self._on_event)

    def _on_event(self, event, **_) -> None:
        row = (event[0], "local", *event[2:])
        self.sink.write(row)
        self.received += 1
        for observe in self.observers:
            observe([row])

    def summary(self) -> dict:
        return {"events_received": self.received, "per_worker": {"local": {"received": self.received}}}


class WorkerRecorder:
    """On a worker: buffer events and ship them to the master in bounded batches."""

    def __init__(self, environment) -> None:
        self.environment = environment
        self.buffer: list = []
        self.buffer_max = BUFFER_MAX
        self.emitted = 0
        self.sent = 0  #: events handed to Locust's RPC without an error (delivered unless the master died)
        self.undelivered = 0
        self.in_flight: deque[tuple[float, int]] = deque()  #: (sent at, events) since the master's last heartbeat
        self.pid = os.getpid()
        self.listening = False
        environment.events.test_start.add_listener(self._on_test_start)
        environment.events.test_stop.add_listener(self._on_test_stop)
        environment.events.quitting.add_listener(self._on_quitting)
        self._loop = gevent.spawn(self._send_loop)

    def _on_test_start(self, environment, **_) -> None:
        # --no-record may come from the master (Locust copies custom options in its spawn message),
        # so it is read here, not at init; off means no listener at all (the benchmark's baseline).
        opts = environment.parsed_options
        record = not getattr(opts, "no_record", False)
        self.buffer_max = getattr(opts, "record_buffer_max", None) or BUFFER_MAX
        hook = protocol_events(environment)
        if record and not self.listening:
            hook.add_listener(self._on_event)
        elif not record and self.listening:
            hook.remove_listener(self._on_event)
        self.listening = record

    def _on_event(self, event, **_) -> None:
        self.emitted += 1
        if len(self.buffer) >= self.buffer_max:
            self.undelivered += 1
            return
        self.buffer.append(event)
        if len(self.buffer) >= BATCH_MAX:
            self.send()

    def _last_heartbeat(self) -> float | None:
        return getattr(self.environment.runner, "last_heartbeat_timestamp", None)

    def master_silent(self) -> bool:
        last = self._last_heartbeat()
        return last is not None and time.time() - last > MASTER_SILENT_S

    def _send_loop(self) -> None:
        while True:
            gevent.sleep(BATCH_INTERVAL_S)
            if self.buffer:
                self.send()

    def _on_test_stop(self, **_) -> None:
        self.send(final=True)

    def _on_quitting(self, **_) -> None:
        self._loop.kill(block=False)
        if self.master_silent():
            # Nothing more can reach the master: what is buffered is lost, and so (perhaps) is
            # what went out after its last heartbeat, which ZeroMQ accepted without complaint.
            self._drop_in_flight()
            self.undelivered += len(self.buffer)
            self.buffer = []
            logger.warning(
                "the master has been silent for over %.0f s: events buffered or sent since its last heartbeat"
                " count as undelivered",
                MASTER_SILENT_S,
            )
        elif self.buffer:
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
        """Send everything buffered, in batches; ``final`` marks the last one (sent even when empty)."""
        if self.master_silent():
            return  # keep buffering (bounded) rather than feed a queue nobody reads
        last_hb = self._last_heartbeat() or 0.0
        while self.in_flight and self.in_flight[0][0] < last_hb:
            self.in_flight.popleft()  # the master answered a heartbeat after these: it was alive to read them
        while True:
            batch, self.buffer = self.buffer[:BATCH_MAX], self.buffer[BATCH_MAX:]
            last = not self.buffer
            data = {
                "events": batch,
                "final": final and last,
                "emitted": self.emitted,
                "undelivered": self.undelivered,
                "pid": self.pid,
            }
            try:
                self.environment.runner.send_message(MESSAGE, data)
            except Exception as e:  # an RPC failure must not kill a user greenlet; count what is lost
                self.undelivered += len(batch)
                logger.warning("could not send %d protocol events to the master: %s", len(batch), e)
            else:
                self.sent += len(batch)
                if batch:
                    self.in_flight.append((time.time(), len(batch)))
            if last:
                return


@dataclass
class Tally:
    """What the master knows about one worker's events."""

    received: int = 0
    emitted: int = 0
    undelivered: int = 0
    final: bool = False
    pid: int | None = None
    last_batch_ts: float | None = None  #: when its last batch arrived: what it did after is unknown if it is lost


class MasterRecorder:
    """On the master: write every worker's batches to ``events.csv``."""

    def __init__(self, environment, sink: CsvSink) -> None:
        self.sink = sink
        self.tallies: dict[str, Tally] = {}
        self.not_flushed: list[str] = []
        self.lost: dict[str, dict] = {}  #: worker -> when the master saw it go missing, and the users it ran
        self._users: dict[str, dict[str, int]] = {}  #: worker -> its last non-empty user count per class
        self.observers: list[Observer] = []
        environment.runner.register_message(MESSAGE, self._on_batch)
        # A master has no users, but a plugin might emit there: keep those too.
        protocol_events(environment).add_listener(self._on_local_event)

    def _on_local_event(self, event, **_) -> None:
        row = (event[0], "master", *event[2:])
        self.sink.write(row)
        for observe in self.observers:
            observe([row])

    def _on_batch(self, environment, msg, **_) -> None:
        worker = msg.node_id
        data = msg.data
        rows = data["events"]
        width = len(EVENT_COLUMNS)
        written = [(r[0], worker, *r[2:width]) for r in rows]
        self.sink.write_many(written)
        for observe in self.observers:
            observe(written)
        tally = self.tallies.setdefault(worker, Tally())
        tally.received += len(rows)
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
            "events_undelivered": sum(t.undelivered for t in self.tallies.values()),
            "per_worker": {
                w: {
                    "received": t.received,
                    "emitted": t.emitted,
                    "undelivered": t.undelivered,
                    "pid": t.pid,
                    "last_batch_utc": t.last_batch_ts,
                }
                for w, t in self.tallies.items()
            },
            "workers_not_flushed": self.not_flushed,
            "workers_lost": [
                {**entry, "last_batch_utc": (self.tallies.get(w) or Tally()).last_batch_ts}
                for w, entry in self.lost.items()
            ],
        }
