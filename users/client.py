"""An agentws/1 client for Locust users: connect, resume, heartbeat, refresh, turns, history.

I/O lives here, protocol state in :mod:`users.session_state`. The user's own
greenlet is the reader: every call that waits (:meth:`AgentClient.pump` and
the request methods built on it) reads and applies frames until its condition
holds or its time is up. There is no reader greenlet to leak or to kill: when
Locust kills the user, ``GreenletExit`` lands in whatever read is under way,
and :meth:`AgentClient.shutdown` (from ``on_stop``) closes the socket.

Every timed operation fires a Locust request event (``agentws.events.RequestName``)
and every protocol observation is recorded with :func:`users.recording.emit`.
"""

from __future__ import annotations

import itertools
from time import monotonic, perf_counter, time

import gevent
import orjson

from agentws.events import REQUEST_TYPE, Kind, RequestName
from agentws.protocol import ACK_INTERVAL_S, Close, CloseAction, T, close_action

from .http_api import fetch_token
from .options import Settings
from .outcomes import Lost, PendingTurn, RequestFailed, ws_url_for
from .recording import emit
from .session_state import Observation, SessionState, full_jitter_ms
from .transport import ABNORMAL, Closed, ConnectError, WebSocket, shared_ssl_context

#: Refresh a token this long before it expires when connecting (a hello must not race expiry) ...
TOKEN_MARGIN_S = 1.0
#: ... or this share of its lifetime, if longer: a client that never refreshes over the socket would
#: otherwise open connections that its token's expiry ends (a 4002 mid-turn) within a second or two.
TOKEN_MARGIN_SHARE = 1 / 3


class AgentClient:
    """One simulated client's session over any number of connections."""

    def __init__(
        self, environment, user_id: str, host: str, settings: Settings | None = None, *, keepalive: bool = True
    ) -> None:
        self.environment = environment
        self.user_id = user_id
        self.host = (host or "").rstrip("/")
        self.settings = settings or Settings.from_environment(environment)
        self.ws_url = ws_url_for(self.host, self.settings.ws_path)
        self.token_url = self.settings.token_url or self.host + "/auth/token"
        self.state = SessionState()
        self.ws: WebSocket | None = None
        self.token = ""
        self.token_exp = 0.0  #: wall clock
        self.token_ttl_s = self.settings.token_ttl_s
        self.token_margin_s = max(TOKEN_MARGIN_S, self.token_ttl_s * TOKEN_MARGIN_SHARE)
        self.lost: Lost | None = None
        self.retry_after_ms = 0.0
        self.last_sent = monotonic()
        self.refresh_required_at: float | None = None
        self.replies: dict[tuple[str, object], dict] = {}
        self.hb_sent: dict[int, float] = {}
        #: Send an ``hb`` whenever nothing was sent for the backend's heartbeat interval while waiting,
        #: as the protocol asks of a live client; False for users that heartbeat themselves or play dead.
        self.keepalive = keepalive
        self._ids = itertools.count(1)
        self._last_ack = 0.0
        self.connections_opened = 0
        self.source_addresses = self.settings.source_address_list()
        secure = self.ws_url.startswith("wss") or self.token_url.startswith("https")
        self.ssl = shared_ssl_context(self.settings.tls_verify, self.settings.ca_file) if secure else None

    # -- recording ----------------------------------------------------------------
    def record(self, kind: Kind, ok: bool = True, **fields) -> None:
        s = self.state
        emit(self.environment, kind, user=self.user_id, session=s.session, agent=s.agent, ok=ok, **fields)

    def _observe(self, obs: Observation) -> None:
        self.record(obs.kind, obs.ok, seq=obs.seq, code=obs.code, detail=obs.detail)

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
            self.record(Kind.ERROR, False, code="token", detail=f"token request failed: {result.error}")
            return None
        return result.body["token"], float(result.body.get("exp") or time() + ttl)

    def new_token(self, ttl_s: float | None = None) -> bool:
        """Replace the token used by the next ``hello``."""
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
        """One attempt: open, ``hello`` (resuming the session when there is one), wait for ``welcome``."""
        asked_resume = resume and self.state.has_session
        name = RequestName.RESUME if asked_resume else RequestName.CONNECT
        started = perf_counter()
        if not self._token_usable() and not self.new_token():
            self.fire(name, started, "no token")
            return False
        s = self.settings
        try:
            self.ws = WebSocket.open(
                self.ws_url,
                timeout=s.connect_timeout_s,
                headers=s.header_dict(),
                subprotocols=s.subprotocol_list(),
                ssl_context=self.ssl,
                source=self.next_source_address(),
            )
        except ConnectError as err:
            self.record(Kind.CONNECT, False, code=err.status or "", detail=str(err))
            self.fire(name, started, f"connect failed: {err}")
            self.lost = Lost(monotonic(), ABNORMAL, by_client=False)
            return False
        self.record(Kind.CONNECT, True, latency_ms=(perf_counter() - started) * 1000)
        self.refresh_required_at = None
        self.replies.clear()
        self.hb_sent.clear()
        failure = self._hello(asked_resume)
        if failure:
            self.fire(name, started, failure)
            return False
        self.lost = None
        self.retry_after_ms = 0.0
        self.fire(name, started)
        return True

    def next_source_address(self) -> str | None:
        """The local address of the next connection: each one from the next of ``--source-addresses``."""
        addresses = self.source_addresses
        if not addresses:
            return None
        self.connections_opened += 1
        return addresses[self.connections_opened % len(addresses)]

    def _hello(self, asked_resume: bool) -> str:
        """Send ``hello`` and read up to ``welcome``; '' on success, else the failure template."""
        try:
            self.send(self.state.hello(self.token, asked_resume))
            deadline = monotonic() + self.settings.connect_timeout_s
            while (left := deadline - monotonic()) > 0:
                text = self.ws.recv_text(left)
                if text is None:
                    break
                frame = self._decode(text)
                if frame is None:
                    continue
                if frame.get("t") == T.WELCOME:
                    self._observe(self.state.on_welcome(frame, asked_resume))
                    return ""
                self._apply(frame)  # an error frame (with retry_after_ms) before the close
        except Closed as closed:
            self.on_lost(closed)
            return f"closed with {closed.code} before welcome"
        self.abort("welcome_timeout")
        return "no welcome within the connect timeout"

    def recover(self, since: float | None = None, *, planned: bool = False) -> bool:
        """Reconnect and resume after the connection ended, by the close policy, with bounded retries.

        ``since`` is when the disconnect was detected (or, for a planned outage,
        when the client decided to come back); the reconnect latency runs from
        there to ``welcome``, backoff sleeps included. ``planned`` skips the
        first backoff sleep (the client chose when to come back).
        """
        s = self.settings
        started_mono = since if since is not None else (self.lost.at if self.lost else monotonic())
        started = self.started_at(started_mono)
        for attempt in range(max(1, s.max_retries)):
            action = close_action(self.lost.code if self.lost and not self.lost.by_client else None)
            if action is CloseAction.STOP:
                self.record(Kind.RECONNECT, False, code=self.lost.code, detail="stopped by close code")
                self.fire(RequestName.RECONNECT, started, "stopped by close code")
                return False
            if action is CloseAction.REFRESH_AND_RECONNECT:
                self.token = ""
            if attempt > 0 or not planned:
                floor = self.retry_after_ms  # from rate_limited or goaway: never come back sooner
                gevent.sleep(
                    full_jitter_ms(attempt, base_ms=s.backoff_base_ms, cap_ms=s.backoff_cap_ms, floor_ms=floor) / 1000
                )
            if self.connect(resume=True):
                latency = self.fire(RequestName.RECONNECT, started)
                self.record(Kind.RECONNECT, True, latency_ms=latency, detail=self.state.welcome_detail)
                return True
        self.record(Kind.RECONNECT, False, detail="gave up")
        self.fire(RequestName.RECONNECT, started, f"gave up after {max(1, s.max_retries)} attempts")
        return False

    # -- sending and reading -----------------------------------------------------------
    def send(self, frame: dict) -> None:
        if self.ws is None:
            raise Closed(ABNORMAL, "not connected", clean=False)
        self.ws.send_text(orjson.dumps(frame).decode())
        self.last_sent = monotonic()

    def pump(self, timeout: float, until=None) -> bool:
        """Read and apply frames for ``timeout`` seconds or until ``until()`` holds, heartbeating
        meanwhile when :attr:`keepalive` is set (each ``hb_ack`` recorded as ``hb_rtt``).

        Returns False when the connection ended (then :attr:`lost` says how).
        """
        if not self.connected:
            return False
        deadline = monotonic() + timeout
        ws = self.ws
        beat_s = self.state.hb_interval_ms / 1000 if self.keepalive else 0
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
                text = ws.recv_text(left)
                if text is not None:
                    frame = self._decode(text)
                    if frame is not None:
                        self._apply(frame)
                self._maybe_ack()
        except Closed as closed:
            self.on_lost(closed)
            return False
        return True

    def _decode(self, text: str) -> dict | None:
        try:
            frame = orjson.loads(text)
        except orjson.JSONDecodeError:
            frame = None
        if type(frame) is not dict:
            self.record(Kind.ERROR, False, code="bad_frame", detail="server frame is not a JSON object")
            return None
        return frame

    def _apply(self, frame: dict) -> None:
        t = frame.get("t")
        if t == T.HB_ACK:
            sent = self.hb_sent.pop(frame.get("id"), None)
            if sent is not None:
                rtt_ms = (monotonic() - sent) * 1000
                self.record(Kind.HB_RTT, True, latency_ms=rtt_ms)
                self.environment.events.request.fire(
                    request_type=REQUEST_TYPE, name=str(RequestName.HB), response_time=rtt_ms,
                    response_length=0, exception=None, context={},
                )  # fmt: skip
        elif t in (T.REFRESHED, T.HISTORY):
            self.replies[(t, frame.get("id"))] = frame
        elif t == T.REFRESH_REQUIRED:
            self.refresh_required_at = monotonic()
            self.record(Kind.REFRESH_REQUIRED, True, latency_ms=None, detail="grace given")
        elif t == T.ERROR:
            # the server's wait goes in latency_ms (a duration in ms), flagged by the detail, so that the
            # analysis can check the next connect came no sooner without a column only this event uses
            self.retry_after_ms = float(frame.get("retry_after_ms") or 0)
            code = str(frame.get("code", ""))
            if self.retry_after_ms:
                self.record(Kind.ERROR, False, code=code, latency_ms=self.retry_after_ms, detail="retry_after_ms")
            else:
                self.record(Kind.ERROR, False, code=code, detail="error frame")
        elif t == T.GOAWAY:
            self.retry_after_ms = float(frame.get("retry_after_ms") or 0)
        else:
            for obs in self.state.on_frame(frame):
                self._observe(obs)

    def _maybe_ack(self) -> None:
        now = monotonic()
        if now - self._last_ack >= ACK_INTERVAL_S:
            seq = self.state.ack_due()
            if seq is not None:
                self.send({"t": T.ACK, "seq": seq})
                self.state.acked_seq = seq
                self._last_ack = now

    def started_at(self, mono: float) -> float:
        """The perf_counter reading matching a monotonic timestamp (for request start times)."""
        return perf_counter() - (monotonic() - mono)

    def on_lost(self, closed: Closed) -> None:
        """Record how the server (or the network) ended the connection."""
        self.lost = Lost(monotonic(), closed.code, by_client=False)
        if closed.clean:
            # The backend's announced idle timeout travels with the close: the zombie verdict's bound.
            reaped = closed.code == Close.HEARTBEAT_TIMEOUT
            detail = f"idle_timeout_ms={self.state.idle_timeout_ms}" if reaped else ""
            self.record(
                Kind.CLOSE, True, code=closed.code, latency_ms=(monotonic() - self.last_sent) * 1000, detail=detail
            )
        self.record(Kind.DISCONNECT, True, code=closed.code, detail="server_close" if closed.clean else "lost")
        self.ws = None

    # -- requests that wait for an answer ------------------------------------------------
    def send_hb(self) -> int:
        hb_id = next(self._ids)
        self.hb_sent[hb_id] = monotonic()
        self.send({"t": T.HB, "id": hb_id})
        return hb_id

    def oldest_unanswered_hb(self) -> float | None:
        return min(self.hb_sent.values()) if self.hb_sent else None

    def _ask(self, name: RequestName, frame: dict, reply: T) -> dict | None:
        request_id = next(self._ids)
        key = (reply, request_id)
        started = perf_counter()
        try:
            self.send({**frame, "id": request_id})
        except Closed as closed:
            self.on_lost(closed)
            self.fire(name, started, "connection lost before the request")
            return None
        alive = self.pump(self.settings.reply_timeout_s, until=lambda: key in self.replies)
        answer = self.replies.pop(key, None)
        if answer is None:
            self.fire(name, started, "no answer within the reply timeout" if alive else "connection lost")
        else:
            self.fire(name, started)
        return answer

    def refresh(self, token: str, token_exp: float) -> bool:
        """Swap the connection's token in place (a ``refresh`` request); True when ``refreshed`` came."""
        started = perf_counter()
        answer = self._ask(RequestName.REFRESH, {"t": T.REFRESH, "token": token}, T.REFRESHED)
        latency = (perf_counter() - started) * 1000
        self.record(Kind.REFRESH, answer is not None, latency_ms=latency, detail="refreshed" if answer else "no answer")
        if answer is not None:
            self.token, self.token_exp = token, float(answer.get("token_exp") or token_exp)
            self.refresh_required_at = None
        return answer is not None

    def renew_token(self) -> bool:
        """A fresh token from the token endpoint, swapped in over the open socket; True when ``refreshed``
        came (False when no token could be had, recorded as an ``error``, or the refresh went unanswered)."""
        fresh = self.fetch_token()
        return fresh is not None and self.refresh(*fresh)

    def history(self) -> list[dict] | None:
        answer = self._ask(RequestName.HISTORY, {"t": T.HISTORY}, T.HISTORY)
        return None if answer is None else list(answer.get("turns") or [])

    def start_turn(self, text: str) -> PendingTurn | None:
        """Send a ``msg``; None when the connection is gone (a failed ``turn`` request)."""
        started = perf_counter()
        cid = f"{self.user_id}-{next(self._ids)}"
        self.state.sent_turn(cid, text)
        try:
            self.send({"t": T.MSG, "cid": cid, "text": text})
        except Closed as closed:
            self.on_lost(closed)
            self.fire(RequestName.TURN, started, "connection lost before the turn")
            return None
        return PendingTurn(cid, started)

    def chunks_of(self, pending: PendingTurn) -> int:
        turn = self.state.cid_turn.get(pending.cid)
        stream = self.state.streams.get(turn) if turn is not None else None
        return len(stream.deltas) if stream is not None else 0

    def turn_done(self, pending: PendingTurn) -> bool:
        turn = self.state.cid_turn.get(pending.cid)
        return turn is not None and not self.state.stream_open(turn)

    def await_turn(self, pending: PendingTurn, stop_after_chunks: int | None = None) -> bool | None:
        """Read until the reply is ``done`` (True: the ``turn`` request succeeded; False: it failed).

        With ``stop_after_chunks`` it returns None as soon as that many chunks of
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
    def close(self, detail: str = "client_close") -> None:
        """Clean close (close frame both ways, bounded); the session stays resumable."""
        if self.ws is not None:
            ws, self.ws = self.ws, None
            ws.close(timeout=self.settings.reply_timeout_s)
            self.lost = Lost(monotonic(), ABNORMAL, by_client=True)
            self.record(Kind.DISCONNECT, True, code=1000, detail=detail)

    def abort(self, detail: str = "client_abort") -> None:
        """Cut TCP without a close frame."""
        if self.ws is not None:
            ws, self.ws = self.ws, None
            ws.abort()
            self.lost = Lost(monotonic(), ABNORMAL, by_client=True)
            self.record(Kind.DISCONNECT, True, code=ABNORMAL, detail=detail)

    def shutdown(self) -> None:
        """For ``on_stop``: close quickly and quietly, whatever state the connection is in."""
        ws, self.ws = self.ws, None
        if ws is not None:
            try:
                ws.close(timeout=0.2)
            except BaseException:
                ws.abort()
                raise
