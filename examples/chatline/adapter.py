"""The chatline protocol (examples/chatline/server.py) as a harness adapter: the worked example of docs/ADAPTERS.md.

Load it with ``--protocol examples.chatline.adapter:Chatline``. Everything the
harness judges comes from the shared :class:`~users.protocols.session.Session`:
the adapter only parses chatline's frames and says what each one is.
"""

from __future__ import annotations

import itertools
import json

from contract.events import CloseReason, Detail, Kind
from users.protocols.base import (
    Adapter,
    Answered,
    Capability,
    Connection,
    Credentials,
    CredentialsExpiring,
    Frame,
    HeartbeatDriver,
    Observation,
    Opened,
    PushRequest,
    Send,
)

#: chatline's close codes by what they mean.
CLOSE_REASONS = {
    1000: CloseReason.NORMAL,
    1001: CloseReason.RESTARTING,
    4000: CloseReason.IDLE_REAPED,
    4001: CloseReason.CREDENTIALS_EXPIRED,
    4002: CloseReason.TAKEN_OVER,
    4003: CloseReason.UNAUTHORIZED,
}
#: A duplicate of a numbered frame, by what it carried.
DUPLICATE_OF = {"part": Detail.PIECE, "end": Detail.STREAM_END, "push": Detail.PUSH}
NOT_UNDERSTOOD = Observation(Kind.ERROR, False, code="bad_frame", detail=Detail.BAD_FRAME)


def _dumps(frame: dict) -> str:
    return json.dumps(frame, separators=(",", ":"))


class Chatline(Adapter):
    """chatline: resume after a message number, streamed replies, pushes, reauth in place; the server pings."""

    name = "chatline"
    default_path = "/chat"
    close_reasons = CLOSE_REASONS
    capabilities = frozenset(
        {Capability.RESUME, Capability.STREAM, Capability.PUSH, Capability.REFRESH, Capability.HISTORY}
    )
    heartbeat_driver = HeartbeatDriver.SERVER

    def __init__(self, user_id: str) -> None:
        super().__init__(user_id)
        self._asked_resume = False
        self._refs = itertools.count(1)
        self._cid_of_ref: dict[int, str] = {}  #: chatline's numeric refs <- the harness's message ids

    def connection(self, path: str) -> Connection:
        return Connection(path)

    # -- intents -> frames ------------------------------------------------------------------------
    def open(self, credentials: Credentials, resume: bool) -> list[Frame]:
        s = self.session
        self._asked_resume = resume and s.has_session
        frame = {"op": "auth", "bearer": credentials.token}
        if self._asked_resume:
            frame |= {"sid": s.session, "after": s.last_seq}
        return [_dumps(frame)]

    def refresh(self, credentials: Credentials, request_id: int) -> list[Frame]:
        return [_dumps({"op": "reauth", "bearer": credentials.token, "ref": request_id})]

    def send_turn(self, cid: str, text: str) -> list[Frame]:
        ref = next(self._refs)
        self._cid_of_ref[ref] = cid
        self.session.sent_turn(cid, text)
        return [_dumps({"op": "say", "ref": ref, "text": text})]

    def ask_history(self, request_id: int) -> list[Frame]:
        return [_dumps({"op": "history", "ref": request_id})]

    def push_request(self, session: str, push_id: int, data: dict) -> PushRequest:
        return PushRequest("/inject", {"sid": session, "id": push_id, "body": data})

    def acknowledge(self) -> list[Frame]:
        s = self.session
        upto = s.ack_due()
        if upto is None:
            return []
        s.acked_seq = upto
        return [_dumps({"op": "seen", "upto": upto})]

    def leave(self) -> list[Frame]:
        return [_dumps({"op": "quit"})]

    # -- frames -> observations -----------------------------------------------------------------------
    def receive(self, frame: Frame) -> list:
        try:
            msg = json.loads(frame)
        except ValueError:
            return [NOT_UNDERSTOOD]
        if not isinstance(msg, dict):
            return [NOT_UNDERSTOOD]
        op = msg.get("op")
        if op == "ping":
            return [Send((_dumps({"op": "pong", "n": msg.get("n")}),), server_ping=True)]
        if op in DUPLICATE_OF:
            return self._numbered(op, msg)
        if op == "ready":
            return [self._ready(msg)]
        if op == "caught_up":
            return [self.session.replayed(msg.get("no"))]
        if op == "reauthed":
            self.session.token_exp = float(msg.get("exp") or 0)
            return [Answered("refresh", msg.get("ref"), msg)]
        if op == "log":
            return [Answered("history", msg.get("ref"), {"turns": self._turns(msg.get("turns") or [])})]
        if op == "expiring":
            return [CredentialsExpiring(float(msg.get("grace_ms") or 0))]
        return [NOT_UNDERSTOOD]

    def _ready(self, msg: dict) -> Opened:
        s = self.session
        restored = bool(msg.get("restored"))
        obs = s.opened(
            session=str(msg.get("sid", "")),
            resumed=restored,
            asked_resume=self._asked_resume,
            identity=str(msg.get("agent", "")),
            turns=int(msg.get("turns", 0)),
            why_new=str(msg.get("why") or ""),
            hb_interval_ms=int(msg.get("ping_every_ms", 0)),
            idle_timeout_ms=int(msg.get("idle_after_ms", 0)),
            resume_window_s=float(msg.get("keep_s", 0.0)),
            token_exp=float(msg.get("exp", 0.0)),
        )
        return Opened(restored, obs)

    def _numbered(self, op: str, msg: dict) -> list:
        s = self.session
        deliver, out = s.sequenced(msg.get("no"), DUPLICATE_OF[op])
        if not deliver:
            return out
        no = msg["no"]
        if op == "push":
            out.append(s.push(msg.get("id"), no))
            return out
        turn = int(msg.get("turn", 0))
        cid = self._cid_of_ref.get(msg.get("ref"), "")
        if cid and cid not in s.cid_turn:
            s.accepted(cid, turn)
        if op == "part":
            out.extend(s.piece(turn, int(msg.get("idx", -1)), str(msg.get("text", "")), no))
        else:
            out.append(s.stream_end(turn, int(msg.get("parts", -1)), str(msg.get("digest", "")), no))
        return out

    def _turns(self, log: list) -> list[dict]:
        """chatline's log in the shape the session compares: the harness's message ids, not chatline's refs."""
        return [
            {"turn": t.get("turn"), "cid": self._cid_of_ref.get(t.get("ref"), ""), "text": t.get("text"),
             "reply_sha256": t.get("digest")}
            for t in log
            if isinstance(t, dict)
        ]  # fmt: skip

    def forget(self) -> None:
        super().forget()
        self._cid_of_ref.clear()
