"""The one client for every protocol: connect, resume, heartbeat, refresh, turns, history, for Locust users.

I/O, timing and recording live here; the protocol lives in an adapter
(:mod:`users.protocols`: intents to frames, frames to observations, no sockets).
The user's own greenlet is the reader: every call that waits (:meth:`AgentClient.pump`
and the request methods built on it) reads messages and applies what the adapter
observed until its condition holds or its time is up. There is no reader greenlet
to leak or to kill: when Locust kills the user, ``GreenletExit`` lands in whatever
read is under way, and :meth:`AgentClient.shutdown` (from ``on_stop``) closes the socket.

Every timed operation fires a Locust request event (``contract.events.RequestName``)
and every observation is recorded with :func:`users.recording.emit`. An adapter
that raises is recorded as an ``error`` (its message in ``note``) and its
connection dropped; the user reconnects as after any loss.
"""

from __future__ import annotations

import itertools
import random
from enum import Enum
from time import monotonic, perf_counter, time

import gevent

from contract.events import REQUEST_TYPE, CloseReason, Detail, Kind, RequestName, Role

from .http_api import fetch_token
from .options import Settings
from .outcomes import Lost, PendingTurn, RequestFailed, ws_url_for
from .protocols import load as load_protocol
from .protocols import search_path
from .protocols.base import (
    Adapter,
    Answered,
    Backoff,
    Credentials,
    CredentialsExpiring,
    Failed,
    HeartbeatAnswered,
    HeartbeatDriver,
    Observation,
    Opened,
    ProtocolViolation,
    Send,
)
from .protocols.session import Session
from .recording import emit
from .transport import ABNORMAL, Closed, ConnectError, WebSocket, shared_ssl_context

#: Refresh a token this long before it expires when connecting (an open must not race expiry) ...
TOKEN_MARGIN_S = 1.0
#: ... or this share of its lifetime, if longer: a client that never refreshes over the socket would
#: otherwise open connections that its token's expiry ends (a close mid-turn) within a second or two.
TOKEN_MARGIN_SHARE = 1 / 3
#: A client acknowledges what it received at most this often.
ACK_INTERVAL_S = 1.0


class CloseAction(Enum):
    """What a client does after the server ended the connection, by the reason the adapter classified."""

    RECONNECT = "reconnect"  #: back off with full jitter and resume
    REFRESH_AND_RECONNECT = "refresh_and_reconnect"  #: get new credentials, then resume
    STOP = "stop"  #: do not reconnect


#: Reasons that end the session's retries; credentials expired come back with new ones; the rest
#: (lost, restarting, idle reaped, rate limited with its retry-after floor, ...) back off and resume.
CLOSE_POLICY = {
    CloseReason.NORMAL: CloseAction.STOP,
    CloseReason.PROTOCOL_ERROR: CloseAction.STOP,
    CloseReason.UNAUTHORIZED: CloseAction.STOP,
    CloseReason.TAKEN_OVER: CloseAction.STOP,
    CloseReason.CREDENTIALS_EXPIRED: CloseAction.REFRESH_AND_RECONNECT,
}


def full_jitter_ms(
    attempt: int,
    *,
    base_ms: float,
    cap_ms: float,
    floor_ms: float = 0.0,
    rng: random.Random | None = None,
) -> float:
    """AWS full-jitter backoff: ``random(0, min(cap, base * 2**attempt))``, never below ``floor_ms``."""
    ceiling = min(cap_ms, base_ms * (2 ** min(attempt, 30)))
    return max(floor_ms, (rng or random).uniform(0, ceiling))


class AdapterFailed(Exception):
    """The protocol adapter raised: the connection is dropped and the user reconnects. ``violation``: it
    raised because the server broke the protocol (:class:`ProtocolViolation`), not by a fault of its own."""

    def __init__(self, message: str, violation: bool = False) -> None:
        super().__init__(message)
        self.violation = violation


class AgentClient:
    """One simulated client's session over any number of connections, in the protocol ``--protocol`` names."""

    # Tens of thousands live in one process (HeartbeatUsers): no per-instance __dict__.
    __slots__ = (
        "environment", "user_id", "role", "host", "settings", "adapter", "token_url", "ws", "ws_url", "subprotocols",
        "connections_opened", "token", "token_exp", "token_ttl_s", "token_margin_s", "lost", "retry_after_ms",
        "last_sent", "opened_at", "last_server_ping", "refresh_required_at", "replies", "hb_sent", "keepalive",
        "_answers_pings", "_client_beats", "_ids", "_last_ack", "source_addresses", "_next_source", "ssl", "headers",
    )  # fmt: skip

    def __init__(
        self,
        environment,
        user_id: str,
        host: str,
        settings: Settings | None = None,
        *,
        keepalive: bool = True,
        role: Role | str = "",
        adapter: type[Adapter] | None = None,
    ) -> None:
        self.environment = environment
        self.user_id = user_id
        self.role = getattr(role, "value", role)  # the enum's own str: no copy per client
        self.host = (host or "").rstrip("/")
        self.settings = s = settings or Settings.from_environment(environment)
        self.adapter: Adapter = (adapter or load_protocol(s.protocol, search_path(_locustfile(environment))))(user_id)
        self.adapter.configure(s)
        self.token_url = s.token_url or self.host + "/auth/token"
        self.ws: WebSocket | None = None
        self.connections_opened = 0  #: a new connection makes this grow (users notice a new socket by it)
        self.token = ""
        self.token_exp = 0.0  #: wall clock
        self.token_ttl_s = s.token_ttl_s
        self.token_margin_s = max(TOKEN_MARGIN_S, self.token_ttl_s * TOKEN_MARGIN_SHARE)
        self.lost: Lost | None = None
        self.retry_after_ms = 0.0
        self.last_sent = monotonic()
        self.opened_at = 0.0  #: when the session last opened (monotonic)
        self.last_server_ping = 0.0  #: when the server last pinged (a server-driven heartbeat; monotonic)
        self.refresh_required_at: float | None = None
        self.replies: dict[tuple[str, object], dict] = {}
        self.hb_sent: dict[object, float] = {}
        #: Send a heartbeat whenever nothing was sent for the server's heartbeat interval while waiting,
        #: as a client-driven protocol asks of a live client; False for users that heartbeat themselves or
        #: play dead. A server-driven protocol's pings are answered whatever this says, unless playing dead.
        self.keepalive = keepalive
        self._answers_pings = keepalive or role != Role.ZOMBIE
        self._client_beats = self.adapter.heartbeat_driver is HeartbeatDriver.CLIENT
        self._ids = itertools.count(1)
        self._last_ack = 0.0
        self.source_addresses = s.source_address_list()
        self._next_source = 0
        # What a connection needs is the protocol's, fixed for the client's life: worked out once, not per connect.
        wanted = self.adapter.connection(s.ws_path or self.adapter.default_path)
        self.ws_url = ws_url_for(self.host, wanted.path)
        self.subprotocols = s.subprotocol_list() or list(wanted.subprotocols)
        self.headers = s.header_dict()  #: the extra upgrade headers (--ws-headers)
        secure = self.ws_url.startswith("wss") or self.token_url.startswith("https")
        self.ssl = shared_ssl_context(s.tls_verify, s.ca_file) if secure else None

    # -- what the session knows -------------------------------------------------------
    @property
    def session(self) -> Session:
        """The session as the client knows it (position, identity, streams, pushes, the conversation)."""
        return self.adapter.session

    def forget_session(self) -> None:
        """The next connect opens a new session."""
        self.adapter.forget()

    @property
    def heartbeat_interval_s(self) -> float:
        return self.adapter.heartbeat_interval_ms / 1000

    # -- recording ----------------------------------------------------------------
    def record(self, kind: Kind, ok: bool = True, **fields) -> None:
        s = self.adapter.session
        emit(
            self.environment, kind, user=self.user_id, role=self.role, session=s.session, agent=s.agent, ok=ok, **fields
        )

    def fire(self, name: RequestName, started: float, failure: str = "", length: int = 0) -> float:
        elapsed_ms = (perf_counter() - started) * 1000
        self.environment.events.request.fire(
            request_type=REQUEST_TYPE,
            name=str(name),
            response_time=elapsed_ms,
            response_length=length,
            exception=RequestFailed(failure) if failure else None,
            context={},
        )
        return elapsed_ms

    # -- tokens -------------------------------------------------------------------
    def fetch_token(self, ttl_s: float | None = None) -> tuple[str, float] | None:
        """A fresh token and its expiry (wall clock) from the token endpoint; None (recorded) on failure."""
        ttl = ttl_s or self.token_ttl_s
        result = fetch_token(self.token_url, self.user_id, ttl, self.settings.connect_timeout_s, self.ssl)
        if not result.ok:
            self.record(Kind.ERROR, False, code="token", detail=Detail.TOKEN_FAILED, note=str(result.error))
            return None
        return result.body["token"], float(result.body.get("exp") or time() + ttl)

    def new_token(self, ttl_s: float | None = None) -> bool:
        """Replace the token used by the next open."""
        fresh = self.fetch_token(ttl_s)
        if fresh is not None:
            self.token, self.token_exp = fresh
        return fresh is not None

    def _token_usable(self) -> bool:
        return bool(self.token) and (not self.token_exp or self.token_exp - time() > self.token_margin_s)

    # -- connecting ---------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.ws is not None and not self.ws.closed

    def connect(self, resume: bool = True) -> bool:
        """One attempt: open the connection, open (or resume) the session, wait until it is open."""
        asked_resume = resume and self.adapter.session.has_session
        name = RequestName.RESUME if asked_resume else RequestName.CONNECT
        started = perf_counter()
        if self.adapter.uses_token_endpoint and not self._token_usable() and not self.new_token():
            self.fire(name, started, "no token")
            return False
        s = self.settings
        try:
            self.ws = WebSocket.open(
                self.ws_url,
                timeout=s.connect_timeout_s,
                headers=self.headers,
                subprotocols=self.subprotocols,
                ssl_context=self.ssl,
                source=self.next_source_address(),
            )
        except ConnectError as err:
            self.record(Kind.CONNECT, False, code=err.status or "", detail=Detail.CONNECT_FAILED, note=str(err))
            self.fire(name, started, f"connect failed: {err}")
            self.lost = Lost(monotonic(), ABNORMAL, by_client=False)
            return False
        self.connections_opened += 1
        self.record(Kind.CONNECT, True, latency_ms=(perf_counter() - started) * 1000)
        self.last_server_ping = monotonic()  # a server-driven heartbeat's first ping is due an interval from here
        self.refresh_required_at = None
        self.replies.clear()
        self.hb_sent.clear()
        failure = self._open(asked_resume)
        if failure:
            self.fire(name, started, failure)
            return False
        self.lost = None
        self.retry_after_ms = 0.0
        self.opened_at = monotonic()
        self.fire(name, started)
        return True

    def next_source_address(self) -> str | None:
        """The local address of the next connection: each one from the next of ``--source-addresses``."""
        addresses = self.source_addresses
        if not addresses:
            return None
        self._next_source += 1
        return addresses[self._next_source % len(addresses)]

    def _open(self, asked_resume: bool) -> str:
        """Open the session and read until it is open; '' on success, else the failure template."""
        try:
            self._send_all(self._adapter_call(self.adapter.open, Credentials(self.token, self.token_exp), asked_resume))
            deadline = monotonic() + self.settings.connect_timeout_s
            while (left := deadline - monotonic()) > 0:
                message = self.ws.recv(left)
                if message is None:
                    break
                if self._apply(message):
                    return ""
                if self.ws is None:
                    return "the server refused the session"
        except Closed as closed:
            self.on_lost(closed)
            return f"closed with {closed.code} before the session opened"
        except AdapterFailed as e:
            return "the server broke the protocol" if e.violation else "the protocol adapter failed"
        self.abort(Detail.WELCOME_TIMEOUT)
        return "session not opened within the connect timeout"

    def recover(self, since: float | None = None, *, planned: bool = False) -> bool:
        """Reconnect and resume after the connection ended, by the close policy, with bounded retries.

        ``since`` is when the disconnect was detected (or, for a planned outage,
        when the client decided to come back); the reconnect latency runs from
        there to the session's open, backoff sleeps included. ``planned`` skips the
        first backoff sleep (the client chose when to come back).
        """
        s = self.settings
        started_mono = since if since is not None else (self.lost.at if self.lost else monotonic())
        started = self.started_at(started_mono)
        for attempt in range(max(1, s.max_retries)):
            lost = self.lost
            reason = lost.reason if lost is not None and not lost.by_client else CloseReason.LOST
            action = CLOSE_POLICY.get(reason, CloseAction.RECONNECT)
            if action is CloseAction.STOP:
                self.record(Kind.RECONNECT, False, code=lost.code, reason=reason, detail=Detail.STOPPED_BY_CLOSE)
                self.fire(RequestName.RECONNECT, started, "stopped by close code")
                return False
            if action is CloseAction.REFRESH_AND_RECONNECT:
                self.token = ""
            if attempt > 0 or not planned:
                floor = self.retry_after_ms  # from a refusal or a going-away: never come back sooner
                gevent.sleep(
                    full_jitter_ms(attempt, base_ms=s.backoff_base_ms, cap_ms=s.backoff_cap_ms, floor_ms=floor) / 1000
                )
            if self.connect(resume=True):
                latency = self.fire(RequestName.RECONNECT, started)
                self.record(Kind.RECONNECT, True, latency_ms=latency, detail=self.adapter.session.welcome_detail)
                return True
        self.record(Kind.RECONNECT, False, detail=Detail.GAVE_UP)
        self.fire(RequestName.RECONNECT, started, f"gave up after {max(1, s.max_retries)} attempts")
        return False

    # -- sending and reading -----------------------------------------------------------
    def _send_all(self, frames) -> None:
        if self.ws is None:
            raise Closed(ABNORMAL, "not connected", clean=False)
        for frame in frames:
            self.ws.send(frame)
        if frames:
            self.last_sent = monotonic()

    def _adapter_call(self, operation, *args):
        """An adapter operation; when it raises: an ``error`` event with its message, the connection dropped."""
        try:
            return operation(*args)
        except Exception as e:
            self._adapter_failed(operation.__name__, e)
            raise AdapterFailed(str(e), isinstance(e, ProtocolViolation)) from e

    def _adapter_failed(self, operation: str, e: Exception) -> None:
        if isinstance(e, ProtocolViolation):  # the server's fault, as the adapter found it
            self.record(
                Kind.ERROR, False, code="protocol", reason=CloseReason.PROTOCOL_ERROR, detail=Detail.BAD_FRAME,
                note=str(e)[:300],
            )  # fmt: skip
        else:
            note = f"{type(self.adapter).__name__}.{operation}: {type(e).__name__}: {e}"[:300]
            self.record(Kind.ERROR, False, code="adapter", detail=Detail.ADAPTER_ERROR, note=note)
        ws, self.ws = self.ws, None
        if ws is not None:
            ws.abort()
            self.lost = Lost(monotonic(), ABNORMAL, by_client=False)  # reconnect, as after any loss
            self.record(Kind.DISCONNECT, True, code=ABNORMAL, reason=CloseReason.CLIENT, detail=Detail.ADAPTER_FAILED)

    def pump(self, timeout: float, until=None) -> bool:
        """Read and apply messages for ``timeout`` seconds or until ``until()`` holds, heartbeating
        meanwhile when :attr:`keepalive` is set and the client drives the heartbeat (each answer recorded
        as ``hb_rtt``).

        Returns False when the connection ended (then :attr:`lost` says how).
        """
        if not self.connected:
            return False
        deadline = monotonic() + timeout
        ws = self.ws
        beat_s = self.heartbeat_interval_s if self.keepalive and self._client_beats else 0
        try:
            while not (until is not None and until()):
                now = monotonic()
                left = deadline - now
                if left <= 0:
                    break
                if beat_s:
                    if now - self.last_sent >= beat_s:
                        self.send_hb()
                    left = min(left, self.last_sent + beat_s - now)
                message = ws.recv(left)
                if message is not None:
                    self._apply(message)
                    if self.ws is not ws:
                        return False  # the client closed it on what the server said (a refusal)
                self._maybe_ack()
        except Closed as closed:
            self.on_lost(closed)
            return False
        except AdapterFailed:
            return False
        return True

    def _apply(self, message) -> bool:
        """Apply every observation of one message; True when the session (re)opened with it."""
        try:
            observations = self.adapter.receive(message)
        except Exception as e:
            self._adapter_failed("receive", e)
            raise AdapterFailed(str(e), isinstance(e, ProtocolViolation)) from e
        opened = False
        for obs in observations:
            opened = _HANDLERS[type(obs)](self, obs) or opened
        return opened

    # -- what the adapter observed ------------------------------------------------------
    def _on_observation(self, obs: Observation) -> None:
        self.record(obs.kind, obs.ok, seq=obs.seq, code=obs.code, detail=obs.detail)

    def _on_opened(self, opened: Opened) -> bool:
        self._on_observation(opened.observation)
        return True

    def _on_heartbeat_answered(self, answered: HeartbeatAnswered) -> None:
        sent = self.hb_sent.pop(answered.hb_id, None)
        if sent is not None:
            rtt_ms = (monotonic() - sent) * 1000
            self.record(Kind.HB_RTT, True, latency_ms=rtt_ms)
            self.environment.events.request.fire(
                request_type=REQUEST_TYPE, name=str(RequestName.HB), response_time=rtt_ms,
                response_length=0, exception=None, context={},
            )  # fmt: skip

    def _on_answered(self, answered: Answered) -> None:
        self.replies[(answered.request, answered.request_id)] = answered.body

    def _on_send(self, send: Send) -> None:
        if send.server_ping:
            now, last = monotonic(), self.last_server_ping
            self.last_server_ping = now
            if last:  # how late this ping came after the last: a server whose event loop stalls pings late
                self._ping_late((now - last) * 1000 - self.adapter.heartbeat_interval_ms)
            if not self._answers_pings:
                return  # playing dead: the server's pings go unanswered
        self._send_all(send.frames)

    def _on_credentials_expiring(self, _: CredentialsExpiring) -> None:
        self.refresh_required_at = monotonic()
        self.record(Kind.REFRESH_REQUIRED, True, detail=Detail.GRACE_GIVEN)

    def _on_backoff(self, backoff: Backoff) -> None:
        self.retry_after_ms = backoff.retry_after_ms
        if backoff.closing:
            return  # the server going away: its close follows
        self.record(
            Kind.ERROR, False, code=backoff.code, reason=backoff.reason,
            retry_after_ms=backoff.retry_after_ms, detail=Detail.RETRY_AFTER,
        )  # fmt: skip

    def _ping_late(self, late_ms: float) -> None:
        late_ms = max(0.0, late_ms)
        note = f"ping every {self.adapter.heartbeat_interval_ms:.0f} ms"
        self.record(Kind.HB_RTT, True, latency_ms=late_ms, detail=Detail.SERVER_PING, note=note)
        self.environment.events.request.fire(
            request_type=REQUEST_TYPE, name=str(RequestName.SERVER_PING), response_time=late_ms,
            response_length=0, exception=None, context={},
        )  # fmt: skip

    def _on_failed(self, failed: Failed) -> None:
        self.retry_after_ms = 0.0
        self.record(Kind.ERROR, False, code=failed.code, reason=failed.reason, detail=Detail.ERROR_FRAME)
        if failed.ends_connection and self.ws is not None:
            ws, self.ws = self.ws, None
            ws.close(timeout=min(1.0, self.settings.reply_timeout_s))
            self.lost = Lost(monotonic(), 1000, by_client=False, reason=failed.reason)
            self.record(Kind.DISCONNECT, True, code=1000, reason=failed.reason, detail=Detail.REFUSED)

    def _maybe_ack(self) -> None:
        now = monotonic()
        if now - self._last_ack >= ACK_INTERVAL_S:
            try:
                frames = self.adapter.acknowledge()
            except Exception as e:
                self._adapter_failed("acknowledge", e)
                raise AdapterFailed(str(e), isinstance(e, ProtocolViolation)) from e
            if frames:
                self._send_all(frames)
                self._last_ack = now

    def started_at(self, mono: float) -> float:
        """The perf_counter reading matching a monotonic timestamp (for request start times)."""
        return perf_counter() - (monotonic() - mono)

    def on_lost(self, closed: Closed) -> None:
        """Record how the server (or the network) ended the connection, as the adapter classifies it."""
        silent_ms = (monotonic() - self.last_sent) * 1000
        try:
            reason = self.adapter.closed(closed.code if closed.clean else None, closed.reason, silent_ms)
        except Exception as e:
            self._adapter_failed("closed", e)
            reason = CloseReason.OTHER
        self.lost = Lost(monotonic(), closed.code, by_client=False, reason=reason)
        # A reap is the server's close even without a close frame (MQTT brokers close the TCP connection).
        reaped = reason is CloseReason.IDLE_REAPED
        if closed.clean or reaped:
            # The server's announced idle timeout travels with the reap: the zombie verdict's bound.
            self.record(
                Kind.CLOSE, True, code=closed.code, reason=reason, latency_ms=silent_ms,
                idle_timeout_ms=self.adapter.idle_timeout_ms or None if reaped else None,
                detail=Detail.REAPED if reaped else "",
            )  # fmt: skip
        detail = Detail.SERVER_CLOSE if closed.clean or reaped else Detail.LOST
        self.record(Kind.DISCONNECT, True, code=closed.code, reason=reason, detail=detail)
        self.ws = None

    # -- requests that wait for an answer ------------------------------------------------
    def send_hb(self) -> int:
        hb_id = next(self._ids)
        try:
            frames = self.adapter.heartbeat(hb_id)
        except Exception as e:
            self._adapter_failed("heartbeat", e)
            raise AdapterFailed(str(e), isinstance(e, ProtocolViolation)) from e
        self.hb_sent[hb_id] = monotonic()
        self._send_all(frames)
        return hb_id

    def oldest_unanswered_hb(self) -> float | None:
        return min(self.hb_sent.values()) if self.hb_sent else None

    def _ask(self, name: RequestName, request: str, operation, *args) -> dict | None:
        request_id = next(self._ids)
        key = (request, request_id)
        started = perf_counter()
        try:
            self._send_all(self._adapter_call(operation, *args, request_id))
        except Closed as closed:
            self.on_lost(closed)
            self.fire(name, started, "connection lost before the request")
            return None
        except AdapterFailed:
            self.fire(name, started, "the protocol adapter failed")
            return None
        alive = self.pump(self.settings.reply_timeout_s, until=lambda: key in self.replies)
        answer = self.replies.pop(key, None)
        if answer is None:
            self.fire(name, started, "no answer within the reply timeout" if alive else "connection lost")
        else:
            self.fire(name, started)
        return answer

    def refresh(self, token: str, token_exp: float) -> bool:
        """Swap the connection's credentials in place; True when the server answered the refresh."""
        started = perf_counter()
        answer = self._ask(RequestName.REFRESH, "refresh", self.adapter.refresh, Credentials(token, token_exp))
        latency = (perf_counter() - started) * 1000
        detail = Detail.REFRESHED if answer is not None else Detail.NO_ANSWER
        self.record(Kind.REFRESH, answer is not None, latency_ms=latency, detail=detail)
        if answer is not None:
            self.token, self.token_exp = token, float(self.adapter.session.token_exp or token_exp)
            self.refresh_required_at = None
        return answer is not None

    def renew_token(self) -> bool:
        """Fresh credentials from the token endpoint, swapped in over the open socket; True when the server
        answered (False when no token could be had, recorded as an ``error``, or the refresh went unanswered)."""
        self.refresh_required_at = None
        fresh = self.fetch_token()
        return fresh is not None and self.refresh(*fresh)

    def history(self) -> list[dict] | None:
        answer = self._ask(RequestName.HISTORY, "history", self.adapter.ask_history)
        return None if answer is None else list(answer.get("turns") or [])

    def start_turn(self, text: str) -> PendingTurn | None:
        """Send a message; None when the connection is gone (a failed ``turn`` request)."""
        started = perf_counter()
        cid = f"{self.user_id}-{next(self._ids)}"
        try:
            self._send_all(self._adapter_call(self.adapter.send_turn, cid, text))
        except Closed as closed:
            self.on_lost(closed)
            self.fire(RequestName.TURN, started, "connection lost before the turn")
            return None
        except AdapterFailed:
            self.fire(RequestName.TURN, started, "the protocol adapter failed")
            return None
        return PendingTurn(cid, started)

    def chunks_of(self, pending: PendingTurn) -> int:
        s = self.adapter.session
        turn = s.cid_turn.get(pending.cid)
        stream = s.streams.get(turn) if turn is not None else None
        return len(stream.deltas) if stream is not None else 0

    def turn_done(self, pending: PendingTurn) -> bool:
        s = self.adapter.session
        turn = s.cid_turn.get(pending.cid)
        return turn is not None and not s.stream_open(turn)

    def await_turn(self, pending: PendingTurn, stop_after_chunks: int | None = None) -> bool | None:
        """Read until the reply ended (True: the ``turn`` request succeeded; False: it failed).

        With ``stop_after_chunks`` it returns None as soon as that many pieces of
        the reply arrived, leaving the turn open (e.g. to cut the connection mid-stream).
        """

        def enough() -> bool:
            if self.turn_done(pending):
                return True
            return stop_after_chunks is not None and self.chunks_of(pending) >= stop_after_chunks

        alive = self.pump(self.settings.reply_timeout_s, until=enough)
        if self.turn_done(pending):
            self.fire(RequestName.TURN, pending.started)
            return True
        if alive and stop_after_chunks is not None and self.chunks_of(pending) >= stop_after_chunks:
            return None
        self.fire(RequestName.TURN, pending.started, "reply incomplete" if alive else "connection lost during the turn")
        return False

    def turn(self, text: str) -> bool:
        pending = self.start_turn(text)
        return pending is not None and bool(self.await_turn(pending))

    # -- ending --------------------------------------------------------------------------
    def close(self, detail: str = Detail.CLIENT_CLOSE) -> None:
        """Clean close (close frame both ways, bounded); the session stays resumable."""
        if self.ws is not None:
            ws, self.ws = self.ws, None
            ws.close(timeout=self.settings.reply_timeout_s)
            self.lost = Lost(monotonic(), ABNORMAL, by_client=True)
            self.record(Kind.DISCONNECT, True, code=1000, reason=CloseReason.CLIENT, detail=detail)

    def abort(self, detail: str = Detail.CLIENT_ABORT) -> None:
        """Cut TCP without a close frame."""
        if self.ws is not None:
            ws, self.ws = self.ws, None
            ws.abort()
            self.lost = Lost(monotonic(), ABNORMAL, by_client=True)
            self.record(Kind.DISCONNECT, True, code=ABNORMAL, reason=CloseReason.CLIENT, detail=detail)

    def detach(self) -> WebSocket | None:
        """Take the open connection out of the client and leave it open (a takeover probe watches it)."""
        ws, self.ws = self.ws, None
        return ws

    def watch_taken_over(self, old: WebSocket, within_s: float) -> bool:
        """After a newer connection resumed the session, the older one must end within ``within_s`` (at most
        half the server's idle timeout: a later end may be the reap of a silent socket, not a takeover): a
        ``close`` ok=1 (reason taken_over) when it did, ok=0 when both stayed open (a duplicate session)."""
        idle_s = self.adapter.idle_timeout_ms / 1000
        within_s = min(within_s, idle_s / 2) if idle_s else within_s
        started = monotonic()
        deadline = started + within_s
        try:
            while (left := deadline - monotonic()) > 0:
                old.recv(left)  # whatever it is still sent, it is alive: only its end matters
        except Closed as closed:
            self.record(
                Kind.CLOSE, True, code=closed.code, reason=CloseReason.TAKEN_OVER,
                latency_ms=(monotonic() - started) * 1000, detail=Detail.TAKEN_OVER,
            )  # fmt: skip
            return True
        old.abort()
        self.record(Kind.CLOSE, False, latency_ms=within_s * 1000, detail=Detail.NOT_TAKEN_OVER)
        return False

    def shutdown(self) -> None:
        """For ``on_stop``: close quickly and quietly, whatever state the connection is in."""
        ws, self.ws = self.ws, None
        if ws is not None:
            try:
                ws.close(timeout=0.2)
            except BaseException:
                ws.abort()
                raise


#: What the client does with each kind of observation (users/protocols/base.py).
_HANDLERS = {
    Observation: AgentClient._on_observation,
    HeartbeatAnswered: AgentClient._on_heartbeat_answered,
    Answered: AgentClient._on_answered,
    Send: AgentClient._on_send,
    CredentialsExpiring: AgentClient._on_credentials_expiring,
    Backoff: AgentClient._on_backoff,
    Failed: AgentClient._on_failed,
    Opened: AgentClient._on_opened,
}


def _locustfile(environment) -> str | None:
    return getattr(getattr(environment, "parsed_options", None), "locustfile", None)
