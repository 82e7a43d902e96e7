"""One WebSocket connection speaking agentws/1: the per-socket state machine.

States: *awaiting hello* (only ``hello`` is accepted) -> *open* (attached to a
session) -> *closing*. Every refusal is an ``error`` frame followed by the
close code PROTOCOL.md gives it; nothing a client sends can crash the server
or leave a session or agent behind.
"""

from __future__ import annotations

import asyncio
import random
import time

import orjson
from aiohttp import WSMsgType, web

from agentws.protocol import VERSION, Close, ErrorCode, NewSessionReason, T

from .faults import SLOW_RESUME_RANGE_S, Fault
from .model import Session, encode
from .tokens import Claims, TokenExpired, TokenInvalid

#: How long a server-initiated close waits for the client's close frame.
CLOSE_TIMEOUT_S = 2.0
MAX_CID_CHARS = 128
#: Longest user turn kept: the agent holds 200 turns of history per session.
MAX_TEXT_CHARS = 4096


class ProtocolError(Exception):
    """A refused frame: sent as ``error{code, message, ...}`` then closed with ``close``."""

    def __init__(self, code: ErrorCode, message: str, close: Close = Close.PROTOCOL_ERROR, **extra) -> None:
        super().__init__(message)
        self.code, self.message, self.close, self.extra = code, message, close, extra

    def frame(self) -> dict:
        return {"t": T.ERROR, "code": self.code, "message": self.message, **self.extra}


def _str(frame: dict, name: str, *, optional: bool = False, max_len: int | None = None) -> str | None:
    value = frame.get(name)
    if value is None and optional:
        return None
    if type(value) is not str or not value or (max_len and len(value) > max_len):
        limit = f" of at most {max_len} characters" if max_len else ""
        raise ProtocolError(ErrorCode.BAD_FIELD, f"{frame['t']}.{name} must be a non-empty string{limit}")
    return value


def _seq(frame: dict, name: str, *, optional: bool = False) -> int | None:
    value = frame.get(name)
    if value is None and optional:
        return None
    if type(value) is not int or value < 0:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"{frame['t']}.{name} must be an integer >= 0")
    return value


def _id(frame: dict) -> int | str:
    value = frame.get("id")
    if type(value) not in (int, str):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"{frame['t']}.id must be an integer or a string")
    return value


class Connection:
    """A socket and, once ``hello`` succeeded, the session it is attached to."""

    __slots__ = (
        "backend",
        "ws",
        "loop",
        "session",
        "sub",
        "token_exp",
        "last_frame",
        "closing",
        "_idle",
        "_expiry",
        "_grace",
        "_backlog",
    )

    def __init__(self, backend, ws: web.WebSocketResponse) -> None:
        self.backend = backend
        self.ws = ws
        self.loop = asyncio.get_running_loop()
        self.session: Session | None = None
        self.sub: str | None = None
        self.token_exp = 0.0
        self.last_frame = self.loop.time()
        self.closing = False
        self._idle = self._expiry = self._grace = None
        self._backlog: list[str] | None = None  #: live frames held back while a replay is sent

    # -- lifecycle ----------------------------------------------------------------
    async def serve(self) -> None:
        self._arm_idle()
        try:
            async for msg in self.ws:
                if msg.type is WSMsgType.TEXT:
                    try:
                        await self._on_text(msg.data)
                    except ProtocolError as err:
                        await self.refuse(err)
                        break
                elif msg.type is WSMsgType.BINARY:
                    await self.refuse(ProtocolError(ErrorCode.BAD_JSON, "binary frames are not agentws/1"))
                    break
                else:  # ERROR: aiohttp has already closed (1009 for an oversize frame)
                    break
        finally:
            self._teardown()

    def _teardown(self) -> None:
        self.closing = True
        for handle in (self._idle, self._expiry, self._grace):
            if handle is not None:
                handle.cancel()
        if self.session is not None:
            self.backend.registry.detach(self.session, self)

    async def refuse(self, err: ProtocolError) -> None:
        await self.send(encode(err.frame()))
        await self.close(err.close, err.message)

    async def close(self, code: Close, reason: str = "") -> None:
        """Close from our side; bounded even when the client has stopped reading."""
        if self.closing:
            return
        self.closing = True
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()[:120]), CLOSE_TIMEOUT_S)
        except (TimeoutError, ConnectionError):
            transport = self.ws._req.transport if self.ws._req is not None else None
            if transport is not None:
                transport.abort()

    def close_soon(self, code: Close, reason: str, frame: dict | None = None) -> None:
        """Close from a timer callback (or another connection's task)."""

        async def _close():
            if frame is not None:
                await self.send(encode(frame))
            await self.close(code, reason)

        if not self.closing:
            self.backend.spawn(_close())

    async def send(self, text: str) -> None:
        if self.closing:
            return
        try:
            await self.ws.send_str(text)
        except (ConnectionError, RuntimeError):
            pass  # the frame stays in the outbox; the client gets it on resume

    async def deliver(self, text: str) -> None:
        """Send a sequenced frame, after the replay when one is under way."""
        if self._backlog is not None:
            self._backlog.append(text)
        else:
            await self.send(text)

    # -- timers ---------------------------------------------------------------------
    def _arm_idle(self) -> None:
        self._idle = self.loop.call_at(self.last_frame + self.backend.idle_timeout_s, self._check_idle)

    def _check_idle(self) -> None:
        due = self.last_frame + self.backend.idle_timeout_s
        if self.loop.time() < due:
            self._idle = self.loop.call_at(due, self._check_idle)
            return
        self._idle = None
        if self.backend.config.has(Fault.NO_REAP):
            return
        self.backend.registry.totals.zombies_reaped_total += 1
        self.close_soon(Close.HEARTBEAT_TIMEOUT, "heartbeat timeout")

    def _arm_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        delay = max(0.0, self.token_exp - time.time())
        self._expiry = self.loop.call_later(delay, self._token_expired)

    def _token_expired(self) -> None:
        grace_ms = self.backend.config.refresh_grace_ms
        self._expiry = None
        self.backend.spawn(self.send(encode({"t": T.REFRESH_REQUIRED, "grace_ms": grace_ms})))
        self._grace = self.loop.call_later(grace_ms / 1000, self._grace_over)

    def _grace_over(self) -> None:
        self._grace = None
        self.backend.registry.totals.token_expired_closes_total += 1
        err = ProtocolError(ErrorCode.TOKEN_EXPIRED, "token expired and was not refreshed", Close.TOKEN_EXPIRED)
        self.close_soon(err.close, err.message, err.frame())

    # -- frames -----------------------------------------------------------------------
    async def _on_text(self, data: str) -> None:
        try:
            frame = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise ProtocolError(ErrorCode.BAD_JSON, "frame is not valid JSON") from None
        if type(frame) is not dict:
            raise ProtocolError(ErrorCode.BAD_JSON, "frame is not a JSON object")
        t = frame.get("t")
        handler = _HANDLERS.get(t) if type(t) is str else None
        if handler is None:
            raise ProtocolError(
                ErrorCode.UNKNOWN_TYPE, "t must name a client frame type (hello, msg, ack, hb, refresh, history, bye)"
            )
        self.last_frame = self.loop.time()
        if self.session is None and t != T.HELLO:
            raise ProtocolError(ErrorCode.HELLO_REQUIRED, "the first frame must be hello")
        if self.session is not None and t == T.HELLO:
            raise ProtocolError(ErrorCode.DUPLICATE_HELLO, "hello was already sent on this socket")
        await handler(self, frame)

    def _verify(self, token: str) -> Claims:
        try:
            return self.backend.issuer.verify(token)
        except TokenExpired:
            raise ProtocolError(ErrorCode.TOKEN_EXPIRED, "token expired", Close.TOKEN_EXPIRED) from None
        except TokenInvalid:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "token is invalid", Close.UNAUTHORIZED) from None

    async def _on_hello(self, frame: dict) -> None:
        if frame.get("v") != VERSION or type(frame.get("v")) is not int:
            raise ProtocolError(ErrorCode.BAD_VERSION, f"hello.v must be {VERSION}")
        token = _str(frame, "token")
        session_id = _str(frame, "session", optional=True, max_len=128)
        last_seq = _seq(frame, "last_seq", optional=True) or 0
        claims = self._verify(token)
        backend = self.backend
        wait_ms = backend.limiter.take(claims.sub)
        if wait_ms:
            backend.registry.totals.rate_limited_total += 1
            raise ProtocolError(
                ErrorCode.RATE_LIMITED, "too many connects for this user", Close.RATE_LIMITED, retry_after_ms=wait_ms
            )
        self.sub, self.token_exp = claims.sub, claims.exp
        if session_id is None:
            session = backend.registry.create_session(claims.sub)
            await self._attach(session, resumed=False, reason=None, last_seq=0)
            return
        async with backend.registry.locked(session_id):
            if backend.config.has(Fault.SLOW_RESUME):
                await asyncio.sleep(random.uniform(*SLOW_RESUME_RANGE_S))
            session, reason = backend.resume(session_id, claims.sub, last_seq)
            await self._attach(session, resumed=reason is None, reason=reason, last_seq=last_seq)

    async def _attach(self, session: Session, *, resumed: bool, reason: NewSessionReason | None, last_seq: int) -> None:
        registry = self.backend.registry
        if self.closing:  # the socket went away while the resume waited
            if session.conn is None:  # never orphaned: it waits for a resume like any detached session
                registry.park(session)
            return
        self.session = session
        self._backlog = []
        previous = registry.attach(session, self)
        if previous is not None and previous is not self:
            registry.totals.takeovers_total += 1
            previous.session = None  # it no longer owns the session: its teardown must not detach it
            if not self.backend.config.has(Fault.NO_TAKEOVER):
                previous.close_soon(Close.TAKEN_OVER, "session taken over by a newer connection")
        welcome = {
            "t": T.WELCOME,
            "session": session.id,
            "epoch": registry.epoch,
            "resumed": resumed,
            "agent": session.agent.summary(),
            "head_seq": session.head_seq,
            "hb_interval_ms": self.backend.config.hb_interval_ms,
            "idle_timeout_ms": self.backend.config.idle_timeout,
            "token_exp": self.token_exp,
            "resume_window_s": self.backend.config.resume_window_s,
        }
        if reason is not None:
            welcome["reason"] = reason
        through, replay = session.head_seq, session.outbox.after(last_seq) if resumed else ()
        await self.send(encode(welcome))
        if resumed:  # frames pushed meanwhile wait in the backlog: they come after `replayed`
            for text in replay:
                await self.send(text)
            await self.send(encode({"t": T.REPLAYED, "through": through}))
        while self._backlog:
            await self.send(self._backlog.pop(0))
        self._backlog = None
        self._arm_expiry()

    async def _on_msg(self, frame: dict) -> None:
        cid = _str(frame, "cid", max_len=MAX_CID_CHARS)
        text = frame.get("text")
        if type(text) is not str or len(text) > MAX_TEXT_CHARS:
            raise ProtocolError(
                ErrorCode.BAD_FIELD, f"msg.text must be a string of at most {MAX_TEXT_CHARS} characters"
            )
        original = self.session.cids.get(cid)
        if original is not None:
            await self.send(original)  # idempotent: the same `accepted`, no second turn
            return
        await self.backend.start_turn(self.session, cid, text)

    async def _on_ack(self, frame: dict) -> None:
        seq = _seq(frame, "seq")
        session = self.session
        if seq > session.head_seq:
            raise ProtocolError(ErrorCode.BAD_ACK, "ack.seq is beyond the session's head_seq")
        session.outbox.ack(seq)
        self.backend.registry.dirty.add(session.id)

    async def _on_hb(self, frame: dict) -> None:
        await self.send(encode({"t": T.HB_ACK, "id": _id(frame)}))

    async def _on_refresh(self, frame: dict) -> None:
        rid = _id(frame)
        token = _str(frame, "token")
        try:
            claims = self.backend.issuer.verify(token)
        except (TokenExpired, TokenInvalid):
            raise ProtocolError(
                ErrorCode.UNAUTHORIZED, "refresh token is invalid or expired", Close.UNAUTHORIZED
            ) from None
        if claims.sub != self.sub:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "refresh token belongs to another user", Close.UNAUTHORIZED)
        self.token_exp = claims.exp
        self._arm_expiry()
        self.backend.registry.totals.refreshes_total += 1
        await self.send(encode({"t": T.REFRESHED, "id": rid, "token_exp": claims.exp}))
        if self.backend.config.has(Fault.REFRESH_BREAKS):
            await self.close(Close.INTERNAL_ERROR, "refresh failed")

    async def _on_history(self, frame: dict) -> None:
        turns = [t.as_history() for t in self.session.agent.history]
        await self.send(encode({"t": T.HISTORY, "id": _id(frame), "turns": turns}))

    async def _on_bye(self, frame: dict) -> None:
        session, self.session = self.session, None
        self.backend.registry.destroy(session)
        await self.close(Close.BYE, "bye")


_HANDLERS = {
    T.HELLO: Connection._on_hello,
    T.MSG: Connection._on_msg,
    T.ACK: Connection._on_ack,
    T.HB: Connection._on_hb,
    T.REFRESH: Connection._on_refresh,
    T.HISTORY: Connection._on_history,
    T.BYE: Connection._on_bye,
}
