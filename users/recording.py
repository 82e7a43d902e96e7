"""The one recorder interface: every protocol event a client observes goes through here.

Clients call :func:`emit`; it fires the environment's ``protocol_event`` hook
with one :class:`ProtocolEvent` (a row of ``events.csv``). Who listens decides
where events go: the harness batches them to the master and onto disk, a test
attaches an :class:`EventLog` and reads them back in-process. With nobody
listening an event costs one tuple and one call.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import NamedTuple

from locust.event import EventHook

from contract.events import EVENT_COLUMNS, Kind


class ProtocolEvent(NamedTuple):
    ts: float
    worker: str
    user: str
    role: str
    session: str
    kind: str
    ok: int
    latency_ms: float | None
    agent: str
    seq: int | None
    code: str
    reason: str
    detail: str
    idle_timeout_ms: float | None
    retry_after_ms: float | None
    note: str


assert ProtocolEvent._fields == EVENT_COLUMNS, "ProtocolEvent must match contract.events.EVENT_COLUMNS"


def protocol_events(environment) -> EventHook:
    """The environment's ``protocol_event`` hook (listeners get ``event=ProtocolEvent``)."""
    hook = getattr(environment.events, "protocol_event", None)
    if hook is None:
        hook = environment.events.protocol_event = EventHook()
    return hook


def emit(
    environment,
    kind: Kind,
    *,
    user: str,
    role: str = "",
    session: str = "",
    ok: bool = True,
    latency_ms: float | None = None,
    agent: str = "",
    seq: int | None = None,
    code: int | str = "",
    reason: str = "",
    detail: str = "",
    idle_timeout_ms: float | None = None,
    retry_after_ms: float | None = None,
    note: str = "",
) -> ProtocolEvent:
    """Record one protocol event. ``detail`` is a :class:`~contract.events.Detail` (or ""); ``note`` templated
    text for people: no ids, no timestamps."""
    # kind, reason and detail are str enums (or ""): kept as they are, a str copy per event costs CPU
    event = ProtocolEvent(
        time.time(), "", user, role, session, kind, int(ok), latency_ms, agent, seq,
        code if type(code) is str else str(code), reason, detail, idle_timeout_ms, retry_after_ms, note,
    )  # fmt: skip
    protocol_events(environment).fire(event=event)
    return event


class EventLog:
    """An in-process sink: keeps every event of an environment (for tests and notebooks)."""

    def __init__(self, environment) -> None:
        self.events: list[ProtocolEvent] = []
        protocol_events(environment).add_listener(self._on_event)

    def _on_event(self, event: ProtocolEvent, **_) -> None:
        self.events.append(event)

    def of(self, kind: Kind) -> list[ProtocolEvent]:
        return [e for e in self.events if e.kind == kind]

    def kinds(self) -> Counter:
        return Counter(e.kind for e in self.events)
