"""What a client knows about its session, whatever the protocol: one definition of loss, duplicates and order.

Pure logic, no sockets, no frames: an adapter parses a frame and calls the
method for what it found (an opened session, a sequenced message at a position,
a piece or the end of a streamed reply, a push); :class:`Session` answers with
the :class:`~users.protocols.base.Observation` s to record. It keeps the position
(for resuming and acknowledging), drops replayed duplicates, assembles streamed
replies and checks their sha256, collects pushes, and remembers the conversation
so that a resume can be checked against it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import NamedTuple

from contract.events import Detail, Kind

#: Turns a client remembers (a backend keeps a bounded history too); older ones are not compared.
TURNS_KEPT = 100


class Observation(NamedTuple):
    """A fact to record as it is: one row of ``events.csv`` (a sequenced message, a gap, a push, ...)."""

    kind: Kind
    ok: bool = True
    seq: int | None = None
    code: str = ""
    detail: str = ""


@dataclass(slots=True)
class Stream:
    """A streamed reply being assembled: the deltas in index order."""

    turn: int
    deltas: list[str] = field(default_factory=list)
    gap: bool = False  #: a piece index was skipped

    def add(self, i: int, delta: str) -> bool:
        """Append piece ``i``; False when it is not the next index."""
        in_order = i == len(self.deltas)
        if not in_order:
            self.gap = True
        self.deltas.append(delta)
        return in_order

    def sha256(self) -> str:
        return hashlib.sha256("".join(self.deltas).encode()).hexdigest()


@dataclass(slots=True)
class TurnRecord:
    """One turn as the client remembers it (to compare with the server's history)."""

    turn: int
    cid: str
    text: str
    reply_sha256: str | None = None  #: set once the reply arrived complete and verified


class Session:
    """The client side of one session across any number of connections."""

    __slots__ = (
        "session", "agent", "agent_turns", "ctx_hash", "hb_interval_ms", "idle_timeout_ms",
        "resume_window_s", "token_exp", "last_seq", "acked_seq", "streams", "turns", "sent_cids", "completed",
        "chunks_per_reply", "pushes", "last_push", "replayed_through", "turns_at_welcome", "cid_turn",
        "resumed", "welcome_detail", "welcome_ok", "generation",
    )  # fmt: skip

    def __init__(self) -> None:
        self.session = ""  #: the session's id as the server named it
        self.agent = ""  #: the identity the server gave the session (an agent id, a client id)
        self.agent_turns = 0
        self.ctx_hash = ""
        self.hb_interval_ms = 0
        self.idle_timeout_ms = 0
        self.resume_window_s = 0.0
        self.token_exp = 0.0
        self.last_seq = 0  #: highest sequenced message received
        self.acked_seq = 0
        self.streams: dict[int, Stream] = {}
        self.turns: dict[int, TurnRecord] = {}
        self.sent_cids: dict[str, str] = {}  #: cid -> text of a message not yet accepted
        self.completed: set[int] = set()  #: turns whose stream finished
        self.chunks_per_reply = 0  #: pieces of the last complete reply (0 until one arrived)
        self.pushes: set = set()  #: push ids received
        self.last_push = None  #: the id of the latest push received
        self.replayed_through: int | None = None
        self.turns_at_welcome = 0  #: turns the client knew of when the session last opened
        self.cid_turn: dict[str, int] = {}  #: cid -> turn number, once the server accepted it
        self.resumed = False  #: the last open resumed the session
        self.welcome_detail = ""  #: templated summary of the last open
        self.welcome_ok = True  #: False when a resume showed another identity or context
        #: Grows with every session that opened new (not resumed), under whatever name the server gave it.
        self.generation = 0

    @property
    def has_session(self) -> bool:
        return bool(self.session)

    @property
    def turns_known(self) -> int:
        """The agent's turn count as this client saw it: its latest accepted turn.

        Not ``len(self.turns)``: only the last :data:`TURNS_KEPT` turns are kept.
        """
        return max(self.turns, default=0)

    # -- opened --------------------------------------------------------------------------------
    def opened(
        self,
        *,
        session: str,
        resumed: bool,
        asked_resume: bool,
        identity: str = "",
        turns: int = 0,
        ctx_hash: str = "",
        why_new: str = "",
        hb_interval_ms: float = 0,
        idle_timeout_ms: float = 0,
        resume_window_s: float = 0.0,
        token_exp: float = 0.0,
    ) -> Observation:
        """Adopt an opened session and what the server announced with it (its heartbeat interval, how long
        it lets a silent connection live, how long a session outlives its connection, when the credentials
        expire; 0 where it said nothing); ok=0 when a successful resume shows another identity or context."""
        obs = self._opened(session, resumed, asked_resume, identity, turns, ctx_hash, why_new)
        self.hb_interval_ms, self.idle_timeout_ms = hb_interval_ms, idle_timeout_ms
        self.resume_window_s, self.token_exp = resume_window_s, token_exp
        self.welcome_detail, self.welcome_ok = obs.detail, obs.ok
        return obs

    def _opened(self, session, resumed, asked_resume, identity, turns, ctx_hash, why_new) -> Observation:
        self.resumed = resumed
        previous_agent, previous_turns, previous_hash = self.agent, self.turns_known, self.ctx_hash
        if not resumed:
            self._forget_session()
        self.session = session
        self.agent = identity
        self.agent_turns = turns
        self.ctx_hash = ctx_hash
        self.replayed_through = None
        turns_before = self.turns_at_welcome
        self.turns_at_welcome = self.turns_known
        if resumed:
            if previous_agent and identity != previous_agent:
                return Observation(Kind.WELCOME, False, detail=Detail.RESUMED_AGENT_CHANGED)
            in_flight = len(self.sent_cids)  # accepted by the server, not yet seen accepted
            if not previous_turns <= turns <= previous_turns + in_flight:
                return Observation(Kind.WELCOME, False, detail=Detail.RESUMED_TURNS_DIFFER)
            unchanged = previous_turns == turns_before and not in_flight
            if previous_hash and unchanged and ctx_hash != previous_hash:
                return Observation(Kind.WELCOME, False, detail=Detail.RESUMED_CTX_HASH_CHANGED)
            return Observation(Kind.WELCOME, True, detail=Detail.RESUMED)
        if asked_resume:
            return Observation(Kind.WELCOME, True, detail=Detail.new_because(why_new))
        return Observation(Kind.WELCOME, True, detail=Detail.NEW)

    def _forget_session(self) -> None:
        self.generation += 1
        self.session = self.agent = self.ctx_hash = ""
        self.last_seq = self.acked_seq = self.agent_turns = 0
        self.streams.clear()
        self.turns.clear()
        self.sent_cids.clear()
        self.cid_turn.clear()
        self.completed.clear()
        self.pushes.clear()
        self.last_push = None

    # -- sequenced messages -----------------------------------------------------------------------
    def sequenced(self, seq: object, label: str = "") -> tuple[bool, list[Observation]]:
        """A sequenced message at position ``seq``: (deliver it to the application?, what to record).

        Not delivered: a duplicate (at or below the position), or no integer position.
        A position skipped is recorded as a gap; the message is delivered all the same.
        """
        if type(seq) is not int:
            return False, [Observation(Kind.ERROR, False, code="bad_frame", detail=Detail.NO_SEQ)]
        if seq <= self.last_seq:
            return False, [Observation(Kind.DUP_FRAME, False, seq=seq, detail=label)]
        out = [] if seq == self.last_seq + 1 else [Observation(Kind.CHUNK_GAP, False, seq=seq, detail=Detail.SEQ_GAP)]
        self.last_seq = seq
        return True, out

    def replayed(self, through: int | None) -> Observation:
        """The server finished replaying what was missed, through position ``through``."""
        self.replayed_through = through
        return Observation(Kind.REPLAY, True, seq=through)

    def accepted(self, cid: str, turn: int) -> None:
        """The server accepted the message ``cid`` as turn number ``turn``."""
        text = self.sent_cids.pop(cid, "")
        self.cid_turn[cid] = turn
        self.turns.setdefault(turn, TurnRecord(turn, cid, text))
        if len(self.turns) > TURNS_KEPT:
            oldest = min(self.turns)
            del self.turns[oldest]
            self.completed.discard(oldest)
        self.agent_turns = max(self.agent_turns, turn)

    def piece(self, turn: int, i: int, delta: str, seq: int | None) -> list[Observation]:
        """Piece ``i`` of turn ``turn``'s streamed reply."""
        stream = self.streams.get(turn)
        if stream is None:
            stream = self.streams[turn] = Stream(turn)
        if stream.add(i, delta):
            return []
        return [Observation(Kind.CHUNK_GAP, False, seq=seq, detail=Detail.CHUNK_INDEX_GAP)]

    def stream_end(self, turn: int, n: int, sha256: str, seq: int | None) -> Observation:
        """The end of turn ``turn``'s streamed reply: ``n`` pieces whose text has this sha256."""
        stream = self.streams.pop(turn, None) or Stream(turn)
        self.completed.add(turn)
        self.chunks_per_reply = n
        record = self.turns.get(turn)
        if len(stream.deltas) != n or stream.gap:
            return Observation(Kind.STREAM_DONE, False, seq=seq, detail=Detail.CHUNKS_MISSING)
        if stream.sha256() != sha256:
            return Observation(Kind.STREAM_DONE, False, seq=seq, detail=Detail.SHA256_MISMATCH)
        if record is not None:
            record.reply_sha256 = sha256
        return Observation(Kind.STREAM_DONE, True, seq=seq, detail=Detail.COMPLETE)

    def push(self, push_id: object, seq: int | None) -> Observation:
        """A push with the publisher's id ``push_id`` (integers: increasing in the order sent)."""
        previous, self.last_push = self.last_push, push_id
        if push_id in self.pushes:
            return Observation(Kind.NOTIFY, False, seq=seq, detail=Detail.DUPLICATE)
        self.pushes.add(push_id)
        if type(previous) is int and type(push_id) is int and push_id < previous:
            return Observation(Kind.NOTIFY, False, seq=seq, detail=Detail.OUT_OF_ORDER)
        return Observation(Kind.NOTIFY, True, seq=seq, detail=Detail.RECEIVED)

    # -- client-side bookkeeping -------------------------------------------------------------------
    def sent_turn(self, cid: str, text: str) -> None:
        self.sent_cids[cid] = text

    def ack_due(self) -> int | None:
        """The position to acknowledge now, or None when everything received is acknowledged."""
        return self.last_seq if self.last_seq > self.acked_seq else None

    def missing_pushes(self, expected: list[int]) -> list[int]:
        return [i for i in expected if i not in self.pushes]

    def stream_open(self, turn: int | None = None) -> bool:
        """True while a reply (this turn's, or any) is still being streamed."""
        if turn is None:
            return bool(self.streams) or any(t not in self.completed for t in self.turns)
        return turn not in self.completed

    def compare_history(self, turns: list[dict]) -> str:
        """'' when the server's history matches what the client saw, else what differs (a :class:`Detail`)."""
        theirs = {int(t.get("turn", 0)): t for t in turns if isinstance(t, dict)}
        for number, mine in self.turns.items():
            other = theirs.get(number)
            if other is None:
                return Detail.TURN_MISSING
            if other.get("cid") != mine.cid or (mine.text and other.get("text") != mine.text):
                return Detail.TURN_DIFFERS
            if mine.reply_sha256 and other.get("reply_sha256") != mine.reply_sha256:
                return Detail.REPLY_DIFFERS
        oldest_mine = min(self.turns, default=0)
        if sum(1 for number in theirs if number >= oldest_mine) != len(self.turns):
            return Detail.TURN_COUNT_DIFFERS
        return ""
