"""How late this process's event loop is: the load generator's own lateness, measured.

Every latency a simulated client reports is "when my code saw it" minus "when my
code started waiting". If the process's gevent loop is late (starved of CPU by a
neighbour, stopped by SIGSTOP or a debugger, stuck in a long GC or a busy
greenlet), every such figure includes the lateness, and a live client that could
not send its heartbeat looks like a zombie to the backend. So each Locust process
runs one greenlet that asks to wake every :data:`TICK_S` and measures how much
later than asked it woke: the loop's lag. Cost: :data:`TICK_S` wake-ups a second,
a few microseconds each.

The telemetry takes :meth:`LoopLag.take` once per sample: the worst lag since the
previous take (``loop_lag_ms`` in ``samples.csv``) and when the lateness began
and ended (``loop_late_from``, ``loop_late_until``: see :meth:`LoopLag.take`).
The analysis judges it
(``analysis/verdicts/health.py``): a stretch where the generator was late beyond
its threshold makes every latency figure measured in it inconclusive.
"""

from __future__ import annotations

import time

import gevent

#: Seconds between the lag greenlet's wake-ups: lateness shorter than this still shows, just not its start.
TICK_S = 0.05
#: Lateness (ms) from which a wake-up marks the start of a late stretch: the least lag threshold that places
#: stretches exactly (a smaller ``max_loop_lag_ms`` still finds them, placed from the worst wake-up only).
FLOOR_MS = 50.0


class LoopLag:
    """The worst event-loop lag of this process since the last :meth:`take`."""

    def __init__(self, tick_s: float = TICK_S, clock=time.monotonic, wall=time.time) -> None:
        self.tick_s = tick_s
        self.clock = clock
        self.wall = wall
        self.worst_s = 0.0
        self.late_from: float | None = None  #: wall time the period's lateness began (see take)
        self.late_until: float | None = None  #: ... and ended
        self._past_floor = False
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> LoopLag:
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._loop)
        return self

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=1)
            self._greenlet = None

    def take(self) -> dict:
        """The period since the previous take, and start a new one: ``loop_lag_ms`` (its worst lag), and
        ``loop_late_from`` / ``loop_late_until`` (wall times: from when the first wake-up late by more than
        :data:`FLOOR_MS` was due to when the last one came; the worst one's if none was)."""
        worst, since, until = self.worst_s, self.late_from, self.late_until
        self.worst_s, self.late_from, self.late_until, self._past_floor = 0.0, None, None, False
        return {
            "loop_lag_ms": round(worst * 1000.0, 1),
            "loop_late_from": "" if since is None else round(since, 3),
            "loop_late_until": "" if until is None else round(until, 3),
        }

    def observe(self, asked_at: float, woke_at: float) -> None:
        """One wake-up: asked to wake at ``asked_at``, woke at ``woke_at`` (the monotonic clock)."""
        late = woke_at - asked_at
        now = self.wall()
        began = now - late - self.tick_s  # the stall began at most one tick before the wake-up was due
        if late * 1000.0 > FLOOR_MS:
            if not self._past_floor:
                self.late_from, self._past_floor = began, True
            self.late_until = now
        elif not self._past_floor and late > self.worst_s:
            self.late_from, self.late_until = began, now
        self.worst_s = max(self.worst_s, late)

    def _loop(self) -> None:
        clock, tick = self.clock, self.tick_s
        while True:
            asked_at = clock() + tick
            gevent.sleep(tick)
            self.observe(asked_at, clock())


#: This process's monitor, started by the harness plugin in every Locust process (local, master, worker).
monitor = LoopLag()
