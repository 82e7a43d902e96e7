"""The registry of sessions and agents: get-or-create, attach/detach, expiry, counters.

Exactly one live agent per session is the invariant the duplicate-agent verdict
checks; `live_agents` is kept separately from `Session.agent` so that a bug
that creates a second agent (the ``duplicate-agent`` fault) shows in
``/stats`` as it would in a real backend's introspection.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields

from .model import Agent, Session


@dataclass
class Totals:
    """Monotonic counters reported by ``/stats`` (each name ends in ``_total``)."""

    agents_created_total: int = 0
    agents_destroyed_total: int = 0
    duplicate_agents_total: int = 0
    zombies_reaped_total: int = 0
    takeovers_total: int = 0
    rate_limited_total: int = 0
    token_expired_closes_total: int = 0
    refreshes_total: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Registry:
    def __init__(self, epoch: str, resume_window_s: float, outbox_limit: int) -> None:
        self.epoch = epoch
        self.resume_window_s = resume_window_s
        self.outbox_limit = outbox_limit
        self.sessions: dict[str, Session] = {}
        self.live_agents: dict[str, list[Agent]] = {}
        #: detached session id -> expiry (wall clock); insertion order is expiry order
        self.detached: dict[str, float] = {}
        self.dirty: set[str] = set()
        self.deleted: set[str] = set()
        self.totals = Totals()
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    # -- identity -------------------------------------------------------------
    def epoch_of(self, session_id: str) -> str:
        return session_id.partition(".")[0]

    @asynccontextmanager
    async def locked(self, session_id: str):
        """Serialise hello handling per session: get-or-create of its agent happens under it."""
        lock, users = self._locks.get(session_id, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[session_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[session_id]
            if users == 1:
                del self._locks[session_id]
            else:
                self._locks[session_id] = (lock, users - 1)

    # -- sessions and agents ---------------------------------------------------
    def create_session(self, sub: str) -> Session:
        sid = f"{self.epoch}.{secrets.token_hex(8)}"
        s = Session(sid, sub, time.time(), self.spawn_agent(sid), self.outbox_limit)
        self.sessions[sid] = s
        self.dirty.add(sid)
        return s

    def spawn_agent(self, session_id: str) -> Agent:
        agent = Agent(f"a-{secrets.token_hex(6)}", session_id)
        live = self.live_agents.setdefault(session_id, [])
        live.append(agent)
        self.totals.agents_created_total += 1
        if len(live) > 1:
            self.totals.duplicate_agents_total += 1
        return agent

    def adopt(self, session: Session) -> None:
        """Take in a session restored from the store (its agent becomes live again)."""
        self.sessions[session.id] = session
        self.live_agents[session.id] = [session.agent]
        if session.detached_at is None:
            session.detached_at = time.time()
        self.detached[session.id] = session.detached_at + self.resume_window_s

    def destroy(self, session: Session) -> None:
        """End a session for good: its agent(s), its stream and its stored copy."""
        if session.stream_task is not None:
            session.stream_task.cancel()
            session.stream_task = None
        self.totals.agents_destroyed_total += len(self.live_agents.pop(session.id, ()))
        self.sessions.pop(session.id, None)
        self.detached.pop(session.id, None)
        self.dirty.discard(session.id)
        self.deleted.add(session.id)

    def attach(self, session: Session, conn) -> object | None:
        """Attach a socket; returns the socket it took the session over from, if any."""
        previous = session.conn
        session.conn = conn
        session.detached_at = None
        self.detached.pop(session.id, None)
        self.dirty.add(session.id)
        return previous

    def detach(self, session: Session, conn) -> None:
        """The socket ``conn`` is gone: the session waits for a resume (if it was still theirs)."""
        if session.conn is not conn or session.id not in self.sessions:
            return
        session.conn = None
        self.park(session)

    def park(self, session: Session) -> None:
        """Start (or restart) a detached session's resume window."""
        session.detached_at = now = time.time()
        self.detached.pop(session.id, None)
        self.detached[session.id] = now + self.resume_window_s
        self.dirty.add(session.id)

    def find(self, session_id: str) -> Session | None:
        """The session, or None when it is gone or its window has passed (housekeeping may lag)."""
        session = self.sessions.get(session_id)
        if session is not None and self.detached.get(session_id, float("inf")) <= time.time():
            self.destroy(session)
            return None
        return session

    def expire(self, now: float) -> int:
        """Destroy every session detached longer than the resume window."""
        expired = []
        for sid, deadline in self.detached.items():
            if deadline > now:
                break
            expired.append(sid)
        for sid in expired:
            self.destroy(self.sessions[sid])
        return len(expired)

    # -- figures -----------------------------------------------------------------
    def attached(self) -> Iterator[Session]:
        return (s for s in self.sessions.values() if s.conn is not None)

    def figures(self) -> dict[str, int]:
        live = self.live_agents.values()
        return {
            "sessions_attached": len(self.sessions) - len(self.detached),
            "sessions_detached": len(self.detached),
            "agents_live": sum(map(len, live)),
            "max_agents_per_session": max(map(len, live), default=0),
            "outbox_frames": sum(len(s.outbox.frames) for s in self.sessions.values()),
            "outbox_bytes": sum(s.outbox.bytes for s in self.sessions.values()),
        }

    def take_changes(self) -> tuple[list[dict], list[str]]:
        """Snapshots of sessions changed since the last call, and ids deleted since."""
        snaps = [self.sessions[sid].snapshot() for sid in self.dirty if sid in self.sessions]
        deleted = list(self.deleted)
        self.dirty.clear()
        self.deleted.clear()
        return snaps, deleted
