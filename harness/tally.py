"""Bounded recording: routine outcomes counted per interval, raw rows kept for what a verdict may cite.

A :class:`Tally` sits where events happen (each worker, or the one process of a
local run) and takes every :class:`~users.recording.ProtocolEvent`. It owns no
socket, file or clock of its own: the recorder feeds it events and asks it for
rows (:meth:`Tally.take`), with the time passed in.

- An event whose (kind, ok, detail) is in :data:`contract.events.ROUTINE` is
  *counted*: one tally row per interval, worker and key (role, kind, ok, detail,
  reason, gap) and latency bucket (contract/histogram.py), whatever the number of
  events. A healthy day of 10,000 users is a few rows a second.
- Every other event is a *raw row*: failures, gaps, duplicates, identity
  changes, server closes, expiries, refusals. ``n`` = 1.
- Context a raw row needs, kept raw with ``n`` = 0 (its event is counted in the
  tallies already):

  - the same user's last disconnect before it, once (why the user was away);
  - per :data:`EXEMPLAR_S` and key, the slowest timed event (the evidence a
    latency verdict names: a user, a session, a time);
  - in a *raw window* (a backend restart: :meth:`open_window`), every event is
    raw, and the :data:`RING_S` before the window opened are replayed from a
    ring of recent events: the restart verdict needs who held a session just
    before it and how each one came back.

Reconnects and history checks carry ``gap``: the detail of the same user's last
disconnect (a brief flap, a planned medium gap, an unplanned loss ...), so the
analysis can tell their causes apart without the routine disconnect rows.
"""

from __future__ import annotations

import math
from collections import deque

from contract.events import GAP_KINDS, ROUTINE, CloseReason, Kind
from contract.histogram import bucket_of

INTERVAL_S = 1.0  #: default ``--record-interval``: tallies are counted per this many seconds
EXEMPLAR_S = 60.0  #: the slowest event of each timed key is kept raw once per this many seconds
RING_S = 10.0  #: recent routine events kept for a raw window opened after them (the restart verdict's look-back)
#: A client told the backend is restarting keeps its worker's events raw this long (and the ring before it).
RESTART_SEEN_RAW_S = 60.0
UNTIMED = -1  #: the bucket of an event without a latency
_NO_LATENCY = -math.inf


class Tally:
    """Counts routine events and keeps raw rows; :meth:`take` hands over what it holds.

    Rows are tuples in :data:`contract.events.STORED_EVENT_COLUMNS` order (raw) and
    :data:`contract.events.TALLY_COLUMNS` order (tallies), with ``worker`` as given.
    """

    def __init__(self, worker: str = "", interval_s: float = INTERVAL_S, ring_s: float = RING_S) -> None:
        self.worker = worker
        self.interval_s = interval_s
        self.ring_s = ring_s
        self.counts: dict[tuple, int] = {}  #: (interval, (role, kind, ok, detail, reason, gap), bucket) -> events
        self.raw: list[tuple] = []
        self.exemplars: dict[tuple, tuple[float, object, str]] = {}  #: key -> (latency, event, gap) slowest
        self.ring: deque = deque()  #: (event, gap) of recent routine events, oldest first
        self.raw_until = 0.0  #: every event up to this time is kept raw (a raw window is open)
        self._gone: dict[str, object] = {}  #: user -> its last disconnect event
        self._gone_kept: set[str] = set()  #: users whose last disconnect is already a raw row
        self.events = 0
        self.counted = 0

    # -- feeding ----------------------------------------------------------------------
    def add(self, e) -> None:
        """One event (a ProtocolEvent or a tuple in its field order)."""
        self.events += 1
        ts, _, user, role, _, kind, ok, latency, _, _, _, reason, detail = e[:13]
        gap = ""
        if kind == Kind.DISCONNECT:
            self._gone[user] = e
            self._gone_kept.discard(user)
        elif kind in GAP_KINDS and (last := self._gone.get(user)) is not None:
            gap = last[12]
        if reason == CloseReason.RESTARTING:
            # the backend says it is going away (a restart nobody told the harness of): the same window
            self.open_window(ts - self.ring_s, ts + RESTART_SEEN_RAW_S)
        if (kind, ok, detail) in ROUTINE and ts > self.raw_until:
            self._count(e, ts, role, kind, ok, detail, reason, gap, latency)
            if self.ring_s:
                self.ring.append((e, gap))
            return
        if user in self._gone and user not in self._gone_kept and kind != Kind.DISCONNECT:
            last = self._gone[user]
            self._keep(last, "", 0)
            self._gone_kept.add(user)
        elif kind == Kind.DISCONNECT:
            self._gone_kept.add(user)
        self._keep(e, gap, 1)

    def _count(self, e, ts, role, kind, ok, detail, reason, gap, latency) -> None:
        self.counted += 1
        key = (role, kind, ok, detail, reason, gap)
        if latency is None:
            bucket = UNTIMED
        else:
            bucket = bucket_of(latency)
            slowest = self.exemplars.get(key)
            if slowest is None or latency > slowest[0]:
                self.exemplars[key] = (latency, e, gap)
        k = (ts - ts % self.interval_s, key, bucket)
        self.counts[k] = self.counts.get(k, 0) + 1

    def _keep(self, e, gap: str, n: int) -> None:
        self.raw.append((*e[:1], self.worker, *e[2:16], gap, n))

    # -- raw windows --------------------------------------------------------------------
    def open_window(self, since: float, until: float) -> None:
        """Keep every event raw until ``until``, and those since ``since`` still in the ring (as context)."""
        self.raw_until = max(self.raw_until, until)
        for e, gap in self.ring:
            if e[0] >= since:
                self._keep(e, gap, 0)
                if self._gone.get(e[2]) is e:
                    self._gone_kept.add(e[2])  # the user's last disconnect is a row now: not kept twice
        self.ring.clear()

    # -- handing over -------------------------------------------------------------------
    def take(self, now: float, exemplars: bool = False) -> tuple[list[tuple], list[tuple]]:
        """(raw rows, tally rows) held so far; ``exemplars``: also each timed key's slowest since the last time.

        A tally row of an interval still open is handed over as it stands; the
        rest of that interval comes in a later row with the same key: readers add
        counts up.
        """
        while self.ring and self.ring[0][0][0] < now - self.ring_s:
            self.ring.popleft()
        if exemplars:
            for _, e, gap in self.exemplars.values():
                self._keep(e, gap, 0)
            self.exemplars = {}
        raw, self.raw = self.raw, []
        worker = self.worker
        tallies = [(interval, worker, *key, bucket, n) for (interval, key, bucket), n in self.counts.items()]
        self.counts = {}
        return raw, tallies

    def forget(self, user: str) -> None:
        """A user that stopped: its last disconnect is no longer needed."""
        self._gone.pop(user, None)
        self._gone_kept.discard(user)
