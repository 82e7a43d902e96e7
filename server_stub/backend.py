"""The backend's behaviour across sessions: resume, sequenced pushes, streamed replies, notify.

`Backend` owns the registry, the store, the token issuer and the open
connections; `Connection` calls into it for everything that outlives a socket.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Coroutine

import psutil

from agentws.protocol import Close, ErrorCode, NewSessionReason, T

from .config import Config
from .connection import ProtocolError
from .faults import LEAK_BYTES_PER_CONNECTION, Fault
from .model import Session, Turn, encode, reply_delta, reply_sha256
from .ratelimit import ConnectLimiter
from .registry import Registry
from .tokens import TokenIssuer

#: Idempotency keys remembered per session (the newest).
CID_MEMORY = 256


class Backend:
    def __init__(self, config: Config, registry: Registry, issuer: TokenIssuer) -> None:
        self.config = config
        self.registry = registry
        self.issuer = issuer
        self.limiter = ConnectLimiter(config.rate_limit)
        self.idle_timeout_s = config.idle_timeout / 1000
        self.connections: set = set()
        self.started = time.monotonic()
        self.draining = False
        self._tasks: set[asyncio.Task] = set()
        self._process = psutil.Process()
        self.leaked: list = []  #: what the leak / fd-leak faults keep

    def spawn(self, coro: Coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- connections ------------------------------------------------------------------
    def opened(self, conn, transport) -> None:
        self.connections.add(conn)
        if self.config.has(Fault.LEAK):
            self.leaked.append(b"L" * LEAK_BYTES_PER_CONNECTION)  # written, so resident
        if self.config.has(Fault.FD_LEAK):
            sock = transport.get_extra_info("socket") if transport is not None else None
            if sock is not None:
                self.leaked.append(os.dup(sock.fileno()))

    def closed(self, conn) -> None:
        self.connections.discard(conn)

    # -- sessions ---------------------------------------------------------------------
    def resume(self, session_id: str, sub: str, last_seq: int) -> tuple[Session, NewSessionReason | None]:
        """The session a ``hello`` resumes, or a new one and why (reason is None on a resume)."""
        registry = self.registry
        session = registry.find(session_id)
        if session is None:
            expired = registry.epoch_of(session_id) == registry.epoch
            reason = NewSessionReason.EXPIRED if expired else NewSessionReason.EPOCH
            return registry.create_session(sub), reason
        if session.sub != sub:
            raise ProtocolError(ErrorCode.FORBIDDEN, "session belongs to another user", Close.FORBIDDEN)
        if last_seq > session.head_seq or not session.outbox.covers(last_seq):
            if session.conn is None:
                registry.destroy(session)
            return registry.create_session(sub), NewSessionReason.GAP
        session.resumes += 1
        if self.config.has(Fault.DUPLICATE_AGENT):
            session.agent = registry.spawn_agent(session.id)
        return session, None

    async def push(self, session: Session, frame: dict) -> str:
        """Number a frame, hold it in the outbox, and send it if the session is attached."""
        session.head_seq += 1
        frame["seq"] = session.head_seq
        text = encode(frame)
        conn = session.conn
        if not (conn is None and frame["t"] == T.CHUNK and self.config.has(Fault.STREAM_GAP)):
            session.outbox.append(session.head_seq, text)
        self.registry.dirty.add(session.id)
        if conn is not None:
            await conn.deliver(text)
        return text

    async def start_turn(self, session: Session, cid: str, text: str) -> None:
        turn = session.agent.new_turn(cid, text)
        session.pending.append(turn)
        accepted = await self.push(session, {"t": T.ACCEPTED, "cid": cid, "turn": turn.turn})
        session.cids[cid] = accepted
        if len(session.cids) > CID_MEMORY:
            del session.cids[next(iter(session.cids))]
        self.ensure_streaming(session)

    def ensure_streaming(self, session: Session) -> None:
        if session.pending and session.stream_task is None:
            session.stream_task = self.spawn(self._stream(session))

    async def _stream(self, session: Session) -> None:
        """Generate the pending replies chunk by chunk; goes on while the client is away."""
        delay = self.config.chunk_delay_ms / 1000
        n = self.config.chunks_per_reply
        try:
            while session.pending:
                turn: Turn = session.pending[0]
                while turn.produced < n:
                    await asyncio.sleep(delay)
                    i = turn.produced
                    turn.produced += 1
                    delta = reply_delta(session.id, turn.turn, i, turn.text)
                    await self.push(session, {"t": T.CHUNK, "turn": turn.turn, "i": i, "delta": delta})
                turn.reply_sha256 = reply_sha256(session.id, turn.turn, turn.text, n)
                session.pending.popleft()
                await self.push(session, {"t": T.DONE, "turn": turn.turn, "n": n, "sha256": turn.reply_sha256})
        finally:
            if session.stream_task is asyncio.current_task():
                session.stream_task = None

    async def notify(self, session_id: str, push_id: int, data: dict) -> int | None:
        """Queue a push for a session; returns its seq (None when the fault drops it)."""
        session = self.registry.sessions[session_id]
        if session.conn is None and self.config.has(Fault.LOSE_OFFLINE):
            return None
        text = await self.push(session, {"t": T.NOTIFY, "id": push_id, "data": data})
        return session.head_seq if text else None

    # -- introspection ------------------------------------------------------------------
    def stats(self) -> dict:
        proc = self._process
        with proc.oneshot():
            rss, fds, threads = proc.memory_info().rss, proc.num_fds(), proc.num_threads()
        return {
            "pid": proc.pid,
            "epoch": self.registry.epoch,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "connections": len(self.connections),
            **self.registry.figures(),
            **self.registry.totals.as_dict(),
            "rss_bytes": rss,
            "open_fds": fds,
            "threads": threads,
            "tasks": len(asyncio.all_tasks()),
        }
