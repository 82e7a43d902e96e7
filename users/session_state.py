"""What a client knows about its agentws/1 session, and what each server frame tells it.

Pure logic, no sockets, no Locust: :class:`SessionState` takes decoded frames
and returns :class:`Observation` s (protocol events to record). It keeps the
sequence position (for ``hello.last_seq`` and the cumulative ``ack``), drops
replayed duplicates, assembles streamed replies and checks their sha256,
collects pushes, and remembers the conversation so that a resume can be
checked against it.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import NamedTuple

from agentws.events import Kind
from agentws.protocol import BACKOFF_BASE_MS, BACKOFF_CAP_MS, SEQUENCED_FRAMES, T

#: Turns a client remembers (a backend keeps a bounded history too); older ones are not compared.
TURNS_KEPT = 100


class Observation(NamedTuple):
    kind: Kind
    ok: bool = True
    seq: int | None = None
    code: str = ""
    detail: str = ""


def full_jitter_ms(
    attempt: int,
    *,
    base_ms: float = BACKOFF_BASE_MS,
    cap_ms: float = BACKOFF_CAP_MS,
    floor_ms: float = 0.0,
    rng: random.Random | None = None,
) -> float:
    """AWS full-jitter backoff: ``random(0, min(cap, base * 2**attempt))``, never below ``floor_ms``."""
    ceiling = min(cap_ms, base_ms * (2 ** min(attempt, 30)))
    return max(floor_ms, (rng or random).uniform(0, ceiling))


@dataclass(slots=True)
class Stream:
    """A streamed reply being assembled: the deltas in index order."""

    turn: int
    deltas: list[str] = field(default_factory=list)
    gap: bool = False  #: a chunk index was skipped

    def add(self, i: int, delta: str) -> bool:
        """Append chunk ``i``; False when it is not the next index."""
        in_order = i == len(self.deltas)
        if not in_order:
            self.gap = True
        self.deltas.append(delta)
        return in_order

    def sha256(self) -> str:
        return hashlib.sha256("".join(self.deltas).encode()).hexdigest()


@dataclass(slots=True)
class TurnRecord:
    """One turn as the client remembers it (to compare with ``history``)."""

    turn: int
    cid: str
    text: str
    reply_sha256: str | None = None  #: set once the reply arrived complete and verified


class SessionState:
    """The client side of one agentws/1 session across any number of connections."""

    __slots__ = (
        "session", "agent", "agent_turns", "ctx_hash", "epoch", "hb_interval_ms", "idle_timeout_ms",
        "resume_window_s", "token_exp", "last_seq", "acked_seq", "streams", "turns", "sent_cids", "completed",
        "chunks_per_reply", "pushes", "last_push", "replayed_through", "turns_at_welcome", "cid_turn",
        "resumed", "welcome_detail", "welcome_ok",
    )  # fmt: skip

    def __init__(self) -> None:
        self.session = ""
        self.agent = ""
        self.agent_turns = 0
        self.ctx_hash = ""
        self.epoch = ""
        self.hb_interval_ms = 0
        self.idle_timeout_ms = 0
        self.resume_window_s = 0.0
        self.token_exp = 0.0
        self.last_seq = 0  #: highest sequenced frame received
        self.acked_seq = 0
        self.streams: dict[int, Stream] = {}
        self.turns: dict[int, TurnRecord] = {}
        self.sent_cids: dict[str, str] = {}  #: cid -> text of a msg not yet accepted
        self.completed: set[int] = set()  #: turns whose stream finished
        self.chunks_per_reply = 0  #: n of the last ``done`` (0 until one arrived)
        self.pushes: set = set()  #: push ids received
        self.last_push = None  #: the id of the latest push received
        self.replayed_through: int | None = None
        self.turns_at_welcome = 0  #: turns the client knew of at the last welcome
        self.cid_turn: dict[str, int] = {}  #: cid -> turn number, from `accepted`
        self.resumed = False  #: the last welcome resumed the session
        self.welcome_detail = ""  #: templated summary of the last welcome
        self.welcome_ok = True  #: False when a resume showed another agent or context

    @property
    def has_session(self) -> bool:
        return bool(self.session)

    @property
    def turns_known(self) -> int:
        """The agent's turn count as this client saw it: its latest accepted turn.

        Not ``len(self.turns)``: only the last :data:`TURNS_KEPT` turns are kept.
        """
        return max(self.turns, default=0)

    def hello(self, token: str, resume: bool) -> dict:
        frame = {"t": T.HELLO, "v": 1, "token": token}
        if resume and self.session:
            frame["session"] = self.session
            frame["last_seq"] = self.last_seq
        return frame

    # -- welcome ------------------------------------------------------------------
    def on_welcome(self, frame: dict, asked_resume: bool) -> Observation:
        """Adopt the welcome; ok=0 when a successful resume shows another agent."""
        obs = self._welcome(frame, asked_resume)
        self.welcome_detail, self.welcome_ok = obs.detail, obs.ok
        return obs

    def _welcome(self, frame: dict, asked_resume: bool) -> Observation:
        agent = frame.get("agent") or {}
        agent_id = str(agent.get("id", ""))
        resumed = self.resumed = bool(frame.get("resumed"))
        previous_agent, previous_turns, previous_hash = self.agent, self.turns_known, self.ctx_hash
        if not resumed:
            self._forget_session()
        self.session = str(frame.get("session", ""))
        self.epoch = str(frame.get("epoch", ""))
        self.agent = agent_id
        self.agent_turns = int(agent.get("turns", 0))
        self.ctx_hash = str(agent.get("ctx_hash", ""))
        self.hb_interval_ms = int(frame.get("hb_interval_ms", 0))
        self.idle_timeout_ms = int(frame.get("idle_timeout_ms", 0))
        self.resume_window_s = float(frame.get("resume_window_s", 0.0))
        self.token_exp = float(frame.get("token_exp", 0.0))
        self.replayed_through = None
        turns_before = self.turns_at_welcome
        self.turns_at_welcome = self.turns_known
        if resumed:
            if previous_agent and agent_id != previous_agent:
                return Observation(Kind.WELCOME, False, detail="resumed:agent_changed")
            in_flight = len(self.sent_cids)  # accepted by the server, `accepted` not yet seen
            if not previous_turns <= self.agent_turns <= previous_turns + in_flight:
                return Observation(Kind.WELCOME, False, detail="resumed:turns_differ")
            unchanged = previous_turns == turns_before and not in_flight
            if previous_hash and unchanged and self.ctx_hash != previous_hash:
                return Observation(Kind.WELCOME, False, detail="resumed:ctx_hash_changed")
            return Observation(Kind.WELCOME, True, detail="resumed")
        reason = frame.get("reason")
        if asked_resume:
            return Observation(Kind.WELCOME, True, detail=f"new:{reason or 'none'}")
        return Observation(Kind.WELCOME, True, detail="new")

    def _forget_session(self) -> None:
        self.session = self.agent = self.ctx_hash = ""
        self.last_seq = self.acked_seq = self.agent_turns = 0
        self.streams.clear()
        self.turns.clear()
        self.sent_cids.clear()
        self.cid_turn.clear()
        self.completed.clear()
        self.pushes.clear()
        self.last_push = None

    # -- sequenced frames -----------------------------------------------------------
    def on_frame(self, frame: dict) -> list[Observation]:
        """Apply one server frame after ``welcome``; duplicates are dropped here."""
        t = frame.get("t")
        if t not in SEQUENCED_FRAMES:
            if t == T.REPLAYED:
                self.replayed_through = frame.get("through")
                return [Observation(Kind.REPLAY, True, seq=self.replayed_through)]
            return []
        seq = frame.get("seq")
        if type(seq) is not int:
            return [Observation(Kind.ERROR, False, code="bad_frame", detail="sequenced frame without seq")]
        if seq <= self.last_seq:
            return [Observation(Kind.DUP_FRAME, False, seq=seq, detail=str(t))]
        out: list[Observation] = []
        if seq != self.last_seq + 1:
            out.append(Observation(Kind.CHUNK_GAP, False, seq=seq, detail="seq_gap"))
        self.last_seq = seq
        if t == T.CHUNK:
            out.extend(self._on_chunk(frame, seq))
        elif t == T.DONE:
            out.append(self._on_done(frame, seq))
        elif t == T.ACCEPTED:
            self._on_accepted(frame)
        elif t == T.NOTIFY:
            out.append(self._on_notify(frame, seq))
        return out

    def _on_accepted(self, frame: dict) -> None:
        cid, turn = str(frame.get("cid", "")), int(frame.get("turn", 0))
        text = self.sent_cids.pop(cid, "")
        self.cid_turn[cid] = turn
        self.turns.setdefault(turn, TurnRecord(turn, cid, text))
        if len(self.turns) > TURNS_KEPT:
            oldest = min(self.turns)
            del self.turns[oldest]
            self.completed.discard(oldest)
        self.agent_turns = max(self.agent_turns, turn)

    def _on_chunk(self, frame: dict, seq: int) -> list[Observation]:
        turn = int(frame.get("turn", 0))
        stream = self.streams.get(turn)
        if stream is None:
            stream = self.streams[turn] = Stream(turn)
        if stream.add(int(frame.get("i", -1)), str(frame.get("delta", ""))):
            return []
        return [Observation(Kind.CHUNK_GAP, False, seq=seq, detail="chunk_index_gap")]

    def _on_done(self, frame: dict, seq: int) -> Observation:
        turn = int(frame.get("turn", 0))
        stream = self.streams.pop(turn, None) or Stream(turn)
        n = int(frame.get("n", -1))
        self.completed.add(turn)
        self.chunks_per_reply = n
        record = self.turns.get(turn)
        if len(stream.deltas) != n or stream.gap:
            return Observation(Kind.STREAM_DONE, False, seq=seq, detail="chunks_missing")
        if stream.sha256() != frame.get("sha256"):
            return Observation(Kind.STREAM_DONE, False, seq=seq, detail="sha256_mismatch")
        if record is not None:
            record.reply_sha256 = frame.get("sha256")
        return Observation(Kind.STREAM_DONE, True, seq=seq, detail="complete")

    def _on_notify(self, frame: dict, seq: int) -> Observation:
        push_id = frame.get("id")
        previous, self.last_push = self.last_push, push_id
        if push_id in self.pushes:
            return Observation(Kind.NOTIFY, False, seq=seq, detail="duplicate")
        self.pushes.add(push_id)
        if type(previous) is int and type(push_id) is int and push_id < previous:
            return Observation(Kind.NOTIFY, False, seq=seq, detail="out_of_order")
        return Observation(Kind.NOTIFY, True, seq=seq, detail="received")

    # -- client-side bookkeeping -------------------------------------------------------
    def sent_turn(self, cid: str, text: str) -> None:
        self.sent_cids[cid] = text

    def ack_due(self) -> int | None:
        """The seq to ack now, or None when everything received is acked."""
        return self.last_seq if self.last_seq > self.acked_seq else None

    def missing_pushes(self, expected: list[int]) -> list[int]:
        return [i for i in expected if i not in self.pushes]

    def stream_open(self, turn: int | None = None) -> bool:
        """True while a reply (this turn's, or any) is still being streamed."""
        if turn is None:
            return bool(self.streams) or any(t not in self.completed for t in self.turns)
        return turn not in self.completed

    def compare_history(self, turns: list[dict]) -> str:
        """'' when the server's history matches what the client saw, else what differs."""
        theirs = {int(t.get("turn", 0)): t for t in turns if isinstance(t, dict)}
        for number, mine in self.turns.items():
            other = theirs.get(number)
            if other is None:
                return "turn_missing"
            if other.get("cid") != mine.cid or (mine.text and other.get("text") != mine.text):
                return "turn_differs"
            if mine.reply_sha256 and other.get("reply_sha256") != mine.reply_sha256:
                return "reply_differs"
        oldest_mine = min(self.turns, default=0)
        if sum(1 for number in theirs if number >= oldest_mine) != len(self.turns):
            return "turn_count_differs"
        return ""
