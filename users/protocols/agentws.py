"""agentws/1 (``../shared/PROTOCOL.md``), the reference backend's protocol, as a sans-I/O adapter.

JSON text frames with a ``t`` field; the client heartbeats (``hb``/``hb_ack``);
a resume sends the session and the last ``seq`` received, and the server replays
what is missing, then ``replayed``; replies stream as ``chunk`` frames and a
``done`` with their sha256; ``refresh`` swaps the token in place; close codes
(``agentws.protocol.Close``) classify why a connection ended.
"""

from __future__ import annotations

import orjson

from agentws.protocol import WS_PATH, Close, T
from contract.events import CloseReason, Detail, Kind

from .base import (
    Adapter,
    Answered,
    Backoff,
    Capability,
    Connection,
    Credentials,
    CredentialsExpiring,
    Failed,
    Frame,
    HeartbeatAnswered,
    HeartbeatDriver,
    Observation,
    Opened,
    PushRequest,
)

#: Close codes of agentws/1 by the reason they name; any other code is OTHER (reconnect with backoff).
CLOSE_REASONS = {
    Close.BYE: CloseReason.NORMAL,
    Close.GOING_AWAY: CloseReason.RESTARTING,
    Close.SERVICE_RESTART: CloseReason.RESTARTING,
    Close.TRY_AGAIN_LATER: CloseReason.RATE_LIMITED,
    Close.MESSAGE_TOO_BIG: CloseReason.PROTOCOL_ERROR,
    Close.INTERNAL_ERROR: CloseReason.SERVER_ERROR,
    Close.HEARTBEAT_TIMEOUT: CloseReason.IDLE_REAPED,
    Close.TOKEN_EXPIRED: CloseReason.CREDENTIALS_EXPIRED,
    Close.RATE_LIMITED: CloseReason.RATE_LIMITED,
    Close.PROTOCOL_ERROR: CloseReason.PROTOCOL_ERROR,
    Close.UNAUTHORIZED: CloseReason.UNAUTHORIZED,
    Close.FORBIDDEN: CloseReason.UNAUTHORIZED,
    Close.TAKEN_OVER: CloseReason.TAKEN_OVER,
}
#: Duplicates of a sequenced frame, by what it carried.
_DUPLICATE_OF = {T.ACCEPTED: Detail.MESSAGE, T.CHUNK: Detail.PIECE, T.DONE: Detail.STREAM_END, T.NOTIFY: Detail.PUSH}
_ERROR_REASONS = {
    "rate_limited": CloseReason.RATE_LIMITED,
    "unauthorized": CloseReason.UNAUTHORIZED,
    "forbidden": CloseReason.UNAUTHORIZED,
    "token_expired": CloseReason.CREDENTIALS_EXPIRED,
    "internal": CloseReason.SERVER_ERROR,
}
_BAD_FRAME = Observation(Kind.ERROR, False, code="bad_frame", detail=Detail.BAD_FRAME)


def _dumps(frame: dict) -> str:
    return orjson.dumps(frame).decode()


class AgentWS(Adapter):
    """agentws/1: every capability; the client drives the heartbeat."""

    __slots__ = ("_asked_resume",)
    name = "agentws"
    default_path = WS_PATH
    close_reasons = CLOSE_REASONS
    capabilities = frozenset(Capability)
    heartbeat_driver = HeartbeatDriver.CLIENT

    def __init__(self, user_id: str) -> None:
        super().__init__(user_id)
        self._asked_resume = False

    def connection(self, path: str) -> Connection:
        return Connection(path)

    # -- intents -> frames ----------------------------------------------------------------------
    def open(self, credentials: Credentials, resume: bool) -> list[Frame]:
        s = self.session
        frame = {"t": T.HELLO, "v": 1, "token": credentials.token}
        self._asked_resume = resume and s.has_session
        if self._asked_resume:
            frame["session"] = s.session
            frame["last_seq"] = s.last_seq
        return [_dumps(frame)]

    def heartbeat(self, hb_id: int) -> list[Frame]:
        return [_dumps({"t": T.HB, "id": hb_id})]

    def refresh(self, credentials: Credentials, request_id: int) -> list[Frame]:
        return [_dumps({"t": T.REFRESH, "token": credentials.token, "id": request_id})]

    def send_turn(self, cid: str, text: str) -> list[Frame]:
        self.session.sent_turn(cid, text)
        return [_dumps({"t": T.MSG, "cid": cid, "text": text})]

    def ask_history(self, request_id: int) -> list[Frame]:
        return [_dumps({"t": T.HISTORY, "id": request_id})]

    def push_request(self, session: str, push_id: int, data: dict) -> PushRequest:
        return PushRequest("/admin/notify", {"session": session, "id": push_id, "data": data})

    def acknowledge(self) -> list[Frame]:
        s = self.session
        seq = s.ack_due()
        if seq is None:
            return []
        s.acked_seq = seq
        return [_dumps({"t": T.ACK, "seq": seq})]

    def leave(self) -> list[Frame]:
        return [_dumps({"t": T.BYE})]

    # -- frames -> observations ----------------------------------------------------------------
    def receive(self, frame: Frame) -> list:
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return [_BAD_FRAME]
        if type(msg) is not dict:
            return [_BAD_FRAME]
        t = msg.get("t")
        if t in _SEQUENCED:
            return self._sequenced(t, msg)
        if t == T.HB_ACK:
            return [HeartbeatAnswered(msg.get("id"))]
        if t == T.WELCOME:
            return [self._welcome(msg)]
        if t == T.REPLAYED:
            return [self.session.replayed(msg.get("through"))]
        if t == T.REFRESHED:
            token_exp = float(msg.get("token_exp") or 0)
            if token_exp:
                self.session.token_exp = token_exp
            return [Answered("refresh", msg.get("id"), msg)]
        if t == T.HISTORY:
            return [Answered("history", msg.get("id"), msg)]
        if t == T.REFRESH_REQUIRED:
            return [CredentialsExpiring(float(msg.get("grace_ms") or 0))]
        if t == T.ERROR:
            code = str(msg.get("code", ""))
            reason = _ERROR_REASONS.get(code, CloseReason.OTHER)
            retry_after = float(msg.get("retry_after_ms") or 0)
            return [Backoff(retry_after, code, reason) if retry_after else Failed(code, reason)]
        if t == T.GOAWAY:
            return [Backoff(float(msg.get("retry_after_ms") or 0), "goaway", CloseReason.RESTARTING, closing=True)]
        return []

    def _welcome(self, msg: dict) -> Opened:
        s = self.session
        agent = msg.get("agent") or {}
        resumed = bool(msg.get("resumed"))
        obs = s.opened(
            session=str(msg.get("session", "")),
            resumed=resumed,
            asked_resume=self._asked_resume,
            identity=str(agent.get("id", "")),
            turns=int(agent.get("turns", 0)),
            ctx_hash=str(agent.get("ctx_hash", "")),
            why_new=str(msg.get("reason") or ""),
            hb_interval_ms=int(msg.get("hb_interval_ms", 0)),
            idle_timeout_ms=int(msg.get("idle_timeout_ms", 0)),
            resume_window_s=float(msg.get("resume_window_s", 0.0)),
            token_exp=float(msg.get("token_exp", 0.0)),
        )
        return Opened(resumed, obs)

    def _sequenced(self, t: str, msg: dict) -> list:
        s = self.session
        deliver, out = s.sequenced(msg.get("seq"), _DUPLICATE_OF[t])
        if not deliver:
            return out
        seq = msg["seq"]
        if t == T.CHUNK:
            out.extend(s.piece(int(msg.get("turn", 0)), int(msg.get("i", -1)), str(msg.get("delta", "")), seq))
        elif t == T.DONE:
            out.append(s.stream_end(int(msg.get("turn", 0)), int(msg.get("n", -1)), msg.get("sha256"), seq))
        elif t == T.ACCEPTED:
            s.accepted(str(msg.get("cid", "")), int(msg.get("turn", 0)))
        else:
            out.append(s.push(msg.get("id"), seq))
        return out


_SEQUENCED = frozenset(_DUPLICATE_OF)
