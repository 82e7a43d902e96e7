"""Sessions, agents and their outbox: plain state, no I/O.

A session belongs to one user (the token's ``sub``), owns exactly one live
agent, numbers its sequenced frames from 1 without ever resetting, and keeps
those frames in a bounded outbox until the client acks them.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field

import orjson


def reply_delta(session_id: str, turn: int, i: int, text: str) -> str:
    """The i-th piece of the agent's reply: deterministic, so a client can check the sha256."""
    digest = hashlib.blake2b(f"{session_id}|{turn}|{i}|{text}".encode(), digest_size=6).hexdigest()
    return f"[{turn}.{i}] {digest} "


def reply_sha256(session_id: str, turn: int, text: str, n: int) -> str:
    joined = "".join(reply_delta(session_id, turn, i, text) for i in range(n))
    return hashlib.sha256(joined.encode()).hexdigest()


@dataclass(slots=True)
class Turn:
    turn: int
    cid: str
    text: str
    reply_sha256: str | None = None  #: set when the reply is complete
    produced: int = 0  #: chunks generated so far

    def as_history(self) -> dict:
        return {"turn": self.turn, "cid": self.cid, "text": self.text, "reply_sha256": self.reply_sha256}


#: Turns an agent keeps in its history (the turn count goes on past it).
HISTORY_LIMIT = 200


@dataclass(slots=True)
class Agent:
    """The per-session agent: its id, its turn count and its (recent) conversation."""

    id: str
    session_id: str
    turns: int = 0
    history: deque[Turn] = field(default_factory=lambda: deque(maxlen=HISTORY_LIMIT))

    def new_turn(self, cid: str, text: str) -> Turn:
        self.turns += 1
        turn = Turn(self.turns, cid, text)
        self.history.append(turn)
        return turn

    @property
    def ctx_hash(self) -> str:
        """A digest of the agent's context: equal hashes mean the same agent and conversation."""
        h = hashlib.sha256(f"{self.id}|{self.turns}".encode())
        for t in self.history:
            h.update(f"|{t.turn}|{t.cid}|{t.text}".encode())
        return h.hexdigest()[:16]

    def summary(self) -> dict:
        return {"id": self.id, "turns": self.turns, "ctx_hash": self.ctx_hash}


class Outbox:
    """The session's sequenced frames not yet acked, oldest first, at most ``limit``.

    ``floor`` is the lowest seq a resume can still ask for without a gap: every
    frame above ``floor - 1`` that was ever sent and not acked is held.
    """

    __slots__ = ("frames", "limit", "floor", "bytes")

    def __init__(self, limit: int, floor: int = 1) -> None:
        self.frames: deque[tuple[int, str]] = deque()
        self.limit = limit
        self.floor = floor
        self.bytes = 0

    def append(self, seq: int, text: str) -> int:
        """Hold a frame; returns how many bytes the outbox changed by (overflow drops the oldest)."""
        self.frames.append((seq, text))
        delta = len(text)
        if len(self.frames) > self.limit:
            old_seq, old = self.frames.popleft()
            self.floor = old_seq + 1
            delta -= len(old)
        self.bytes += delta
        return delta

    def ack(self, seq: int) -> tuple[int, int]:
        """Drop every frame <= seq; returns (frames dropped, bytes dropped)."""
        n = dropped = 0
        frames = self.frames
        while frames and frames[0][0] <= seq:
            dropped += len(frames.popleft()[1])
            n += 1
        self.floor = max(self.floor, seq + 1)
        self.bytes -= dropped
        return n, dropped

    def after(self, seq: int) -> list[str]:
        return [text for s, text in self.frames if s > seq]

    def covers(self, last_seq: int) -> bool:
        """True when every frame after ``last_seq`` is still held."""
        return last_seq + 1 >= self.floor


class Session:
    """One user's conversation with its agent, attached to at most one socket."""

    __slots__ = (
        "id",
        "sub",
        "created",
        "agent",
        "head_seq",
        "outbox",
        "conn",
        "detached_at",
        "cids",
        "pending",
        "stream_task",
        "resumes",
    )

    def __init__(self, id: str, sub: str, created: float, agent: Agent, outbox_limit: int) -> None:
        self.id = id
        self.sub = sub
        self.created = created
        self.agent = agent
        self.head_seq = 0
        self.outbox = Outbox(outbox_limit)
        self.conn = None  #: the attached Connection, or None while detached
        self.detached_at: float | None = None  #: wall clock
        self.cids: dict[str, str] = {}  #: idempotency key -> the original `accepted` frame
        self.pending: deque[Turn] = deque()  #: turns whose reply is not complete
        self.stream_task = None
        self.resumes = 0

    def snapshot(self) -> dict:
        """Everything needed to restore the session after a restart."""
        a = self.agent
        return {
            "id": self.id,
            "sub": self.sub,
            "created": self.created,
            "detached_at": self.detached_at,
            "head_seq": self.head_seq,
            "floor": self.outbox.floor,
            "outbox": list(self.outbox.frames),
            "agent": {
                "id": a.id,
                "turns": a.turns,
                "history": [[t.turn, t.cid, t.text, t.reply_sha256, t.produced] for t in a.history],
            },
            # Whole rows: a pending turn need not be in the agent's history (a resume under the
            # duplicate-agent fault replaces the agent; more pending turns than HISTORY_LIMIT).
            "pending": [[t.turn, t.cid, t.text, t.reply_sha256, t.produced] for t in self.pending],
            "cids": self.cids,
            "resumes": self.resumes,
        }

    @classmethod
    def restore(cls, snap: dict, outbox_limit: int) -> Session:
        a = snap["agent"]
        agent = Agent(
            a["id"], snap["id"], a["turns"], deque((Turn(*row) for row in a["history"]), maxlen=HISTORY_LIMIT)
        )
        s = cls(snap["id"], snap["sub"], snap["created"], agent, outbox_limit)
        s.detached_at = snap["detached_at"]
        s.head_seq = snap["head_seq"]
        s.outbox.floor = snap["floor"]
        for seq, text in snap["outbox"]:
            s.outbox.frames.append((seq, text))
            s.outbox.bytes += len(text)
        by_turn = {t.turn: t for t in agent.history}
        s.pending.extend(_pending_turn(row, by_turn) for row in snap["pending"])
        s.cids = dict(snap["cids"])
        s.resumes = snap.get("resumes", 0)
        return s


def _pending_turn(row: list, by_turn: dict[int, Turn]) -> Turn:
    """The pending turn of a snapshot: the history's own object when it is there (so the reply, once
    complete, shows in the history), else one rebuilt from its row."""
    found = by_turn.get(row[0])
    return found if found is not None and found.cid == row[1] else Turn(*row)


def encode(frame: dict) -> str:
    return orjson.dumps(frame).decode()
