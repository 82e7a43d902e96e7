"""FlappingUser: a client on an unstable network, connecting and dropping in rapid cycles."""

from __future__ import annotations

import random

import gevent
from locust import constant, task
from locust.exception import StopUser

from contract.events import Detail, Role

from .base import AgentUser
from .protocols.base import Capability

#: A backend ends the older connection as it takes the session over (mosquitto before its CONNACK, the
#: reference backend before its welcome): by this long after the newer one opened, it must have ended.
TAKEOVER_WITHIN_S = 2.0


class FlappingUser(AgentUser):
    """Connects, says hello, holds the connection ~100 ms, drops it, stays away ~50 ms, and again.

    By default every cycle resumes the same session, so the backend must hand
    back the same agent each time; a changed agent id on a successful resume is
    recorded as ``welcome`` ok=0 (the duplicate-agent fault seen from the client).
    A share of the drops cut TCP without a close frame. With ``--flap-takeover-share``
    a share of the cycles first resume the session on a second connection while the
    first is still open: the backend must end the first (recorded as ``close``, ok=0
    when both stayed alive: the MQTT form of a duplicate agent).
    """

    wait_time = constant(0)
    role = Role.FLAPPING
    needs = frozenset({Capability.RESUME})

    def on_start(self) -> None:
        self.cycles = 0

    @task
    def flap(self) -> None:
        s = self.settings
        if not self.connect_for_cycle():
            return
        if not self.client.pump(self.jittered(s.flap_connected_ms)):
            self.ensure_connected()  # the backend ended it: follow the close policy, then flap on
            return
        takeover = self.cycles and s.flap_takeover_share and random.random() < s.flap_takeover_share
        if takeover and not self.take_over():
            return
        if random.random() < s.flap_abrupt_share:
            self.client.abort(Detail.FLAP_ABRUPT)
        else:
            self.client.close(Detail.FLAP_CLOSE)
        gevent.sleep(self.jittered(s.flap_disconnected_ms))
        self.cycles += 1
        if s.flap_cycles and self.cycles >= s.flap_cycles:
            if s.flap_final_turn:
                self.settle()
            raise StopUser()

    def take_over(self) -> bool:
        """A second connection resumes the session while the first is still open: the backend must end
        the first (two live connections of one session are a duplicate). False when the second failed."""
        client = self.client
        old = client.detach()
        if not client.connect(resume=True):
            old.abort()  # the next cycle comes back by the close policy, resuming: the session is not given up
            return False
        client.watch_taken_over(old, min(TAKEOVER_WITHIN_S, self.settings.reply_timeout_s))
        return True

    def settle(self) -> None:
        """The plan's last step: a stable connection that sends a message and gets its whole reply."""
        if self.connect_for_cycle():
            self.client.turn("after flapping")  # recorded: stream_done (ok when complete, sha256 matching)
            self.client.close()

    def connect_for_cycle(self) -> bool:
        client = self.client
        if client.connected:
            return True
        if self.cycles == 0 or self.settings.flap_new_session or not client.session.has_session:
            client.forget_session()
            ok = client.connect(resume=False)
            if not ok:
                self.pause()
            else:
                self._pauses = 0  # or every rate-limited cycle of a long run would back off longer
            return ok
        return self.come_back(self.now(), planned=True)

    def jittered(self, ms: float) -> float:
        """``ms`` +/- the jitter fraction, in seconds (no random draw when there is no jitter: two per cycle)."""
        jitter = self.settings.flap_jitter
        if not jitter:
            return max(0.0, ms) / 1000
        return max(0.0, ms * (1 + random.uniform(-jitter, jitter))) / 1000
