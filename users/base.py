"""What every simulated user shares, whatever the protocol: an :class:`AgentClient`, the settings, a clean stop."""

from __future__ import annotations

import itertools
import secrets
from time import monotonic

import gevent
from locust import User

from contract.events import Kind, Role, user_id

from .client import AgentClient, full_jitter_ms
from .options import Settings
from .protocols.base import Capability

#: Distinguishes the users of different worker processes in one run.
_PROCESS_TAG = secrets.token_hex(3)
_numbers = itertools.count(1)


class AgentUser(User):
    """A user with one session, in the protocol ``--protocol`` names. Subclasses say what the user does with it:
    their ``role`` (the events' ``role`` column) and the protocol capabilities they ``need`` (a run whose
    protocol lacks one is refused before load)."""

    abstract = True
    #: The client heartbeats by itself while the user waits on the socket (see AgentClient.keepalive).
    keepalive = True
    role: Role
    needs: frozenset[Capability] = frozenset()

    def __init__(self, environment) -> None:
        super().__init__(environment)
        self.settings = Settings.from_environment(environment)
        self.user_id = user_id(type(self).__name__, _PROCESS_TAG, next(_numbers))
        self.client = AgentClient(
            environment, self.user_id, self.host or "", self.settings, keepalive=self.keepalive, role=self.role
        )
        self._pauses = 0

    def on_stop(self) -> None:
        self.client.shutdown()

    # -- shared steps -----------------------------------------------------------------
    def ensure_connected(self, *, resume: bool = True) -> bool:
        """Connected, by resuming after a loss (close policy, backoff) or a first connect."""
        client = self.client
        if client.connected:
            return True
        if client.lost is not None and resume and client.session.has_session:
            ok = client.recover()
        else:
            ok = client.connect(resume=resume)
        if not ok:
            self.pause()
        else:
            self._pauses = 0
        return ok

    def pause(self) -> None:
        """After giving up on the backend: wait a growing full-jitter time, then start a new session."""
        s = self.settings
        floor = self.client.retry_after_ms
        delay_ms = full_jitter_ms(self._pauses + 1, base_ms=s.backoff_base_ms, cap_ms=s.backoff_cap_ms, floor_ms=floor)
        self._pauses += 1
        self.client.lost = None
        self.client.forget_session()
        gevent.sleep(delay_ms / 1000)

    def come_back(self, since: float | None = None, *, planned: bool = False) -> bool:
        """Reconnect after a disconnect; the latency runs from ``since`` (default: the detection)."""
        ok = self.client.recover(since, planned=planned)
        if not ok:
            self.pause()
        else:
            self._pauses = 0
        return ok

    def now(self) -> float:
        return monotonic()

    def note(self, kind: Kind, ok: bool = True, **fields) -> None:
        self.client.record(kind, ok, **fields)
