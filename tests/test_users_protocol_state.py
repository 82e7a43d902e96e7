"""The client's protocol logic without sockets: RFC 6455 bytes; the agentws/1 adapter: frames in, observations out."""

from __future__ import annotations

import hashlib
import random
import struct

import orjson
import pytest

from agentws.protocol import Close, T
from contract.events import CloseReason, Detail, Kind
from users.client import full_jitter_ms
from users.frames import (
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    FrameReader,
    HandshakeError,
    ProtocolViolation,
    accept_for,
    encode_close,
    encode_frame,
    parse_close,
    parse_upgrade_response,
    upgrade_request,
)
from users.options import BACKOFF_BASE_MS, BACKOFF_CAP_MS
from users.protocols.agentws import AgentWS
from users.protocols.base import Answered, Backoff, Credentials, CredentialsExpiring, Failed, HeartbeatAnswered, Opened
from users.protocols.session import TURNS_KEPT


def server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        return struct.pack("!BB", first, n) + payload
    if n < 65536:
        return struct.pack("!BBH", first, 126, n) + payload
    return struct.pack("!BBQ", first, 127, n) + payload


# -- RFC 6455 ------------------------------------------------------------------------
def test_upgrade_response_is_parsed_from_any_split_and_keeps_the_first_frames():
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    answer = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_for(key)}\r\n\r\n"
    ).encode() + server_frame(OP_TEXT, b'{"t":"welcome"}')
    assert accept_for(key) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 section 1.3
    for split in range(1, len(answer)):
        assert parse_upgrade_response(answer[:split], key) is None or split > answer.index(b"\r\n\r\n")
    upgrade = parse_upgrade_response(answer, key)
    assert FrameReader(upgrade.rest).next_message().payload == b'{"t":"welcome"}'


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", "upgrade refused with HTTP 404"),
        (b"\x16\x03\x01garbage\r\n\r\n", "upgrade response is not HTTP"),
        (b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: nope\r\n\r\n", "wrong Sec-WebSocket-Accept"),
        (b"HTTP/1.1 101 OK\r\nContent-Type: text/html\r\n\r\n", "lacks Upgrade: websocket"),
    ],
)
def test_a_refused_or_broken_upgrade_is_a_templated_handshake_error(answer, message):
    with pytest.raises(HandshakeError, match=message):
        parse_upgrade_response(answer, "k")


def test_upgrade_request_carries_headers_and_subprotocols():
    text = upgrade_request("h:1", "/ws", "k", {"X-Test": "1"}, ["agentws.v1"]).decode()
    assert text.startswith("GET /ws HTTP/1.1\r\nHost: h:1\r\n") and text.endswith("\r\n\r\n")
    assert "Sec-WebSocket-Protocol: agentws.v1\r\n" in text and "X-Test: 1\r\n" in text


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536, 200_000])
def test_masked_client_frames_round_trip_at_every_length_encoding(size):
    payload = random.randbytes(size)
    reader = FrameReader()
    frame = encode_frame(OP_TEXT, payload)
    for i in range(0, len(frame), 7000):  # arrives in pieces
        reader.feed(frame[i : i + 7000])
    assert reader.next_message() == (OP_TEXT, payload)
    assert reader.next_message() is None


def test_fragments_are_joined_and_control_frames_between_them_pass():
    reader = FrameReader(
        server_frame(OP_TEXT, b"ab", fin=False) + server_frame(OP_PING, b"p") + server_frame(0, b"cd", fin=True)
    )
    assert reader.next_message() == (OP_PING, b"p")
    assert reader.next_message() == (OP_TEXT, b"abcd")


@pytest.mark.parametrize(
    "data", [b"\xff\xff", server_frame(0x3, b"x"), server_frame(0, b"x"), server_frame(OP_PING, b"x", fin=False)]
)
def test_garbage_frames_are_protocol_violations(data):
    with pytest.raises(ProtocolViolation):
        FrameReader(data).next_message()


def test_close_frames_carry_code_and_reason():
    msg = FrameReader(encode_close(4001, "bye")).next_message()
    assert msg.opcode == OP_CLOSE and parse_close(msg.payload) == (4001, "bye")
    assert parse_close(b"") == (None, "")


# -- backoff --------------------------------------------------------------------------------
def test_full_jitter_stays_under_the_doubling_ceiling_and_the_cap():
    rng = random.Random(1)
    for attempt in range(12):
        ceiling = min(BACKOFF_CAP_MS, 500 * 2**attempt)
        samples = [full_jitter_ms(attempt, base_ms=BACKOFF_BASE_MS, cap_ms=BACKOFF_CAP_MS, rng=rng) for _ in range(200)]
        assert all(0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling * 0.8  # full jitter: spread over the whole range


def test_full_jitter_never_waits_less_than_the_server_asked():
    assert all(full_jitter_ms(0, base_ms=500, cap_ms=20_000, floor_ms=1500) >= 1500 for _ in range(100))


# -- the agentws/1 adapter --------------------------------------------------------------------------
def welcome(session="e.s1", agent="a-1", turns=0, resumed=False, reason=None, ctx="h0"):
    frame = {"t": T.WELCOME, "session": session, "epoch": "e", "resumed": resumed,
             "agent": {"id": agent, "turns": turns, "ctx_hash": ctx}, "head_seq": 0,
             "hb_interval_ms": 300, "idle_timeout_ms": 450, "token_exp": 0, "resume_window_s": 2}  # fmt: skip
    if reason:
        frame["reason"] = reason
    return frame


class Wire:
    """An agentws/1 adapter fed JSON frames: ``on`` returns what it observed, ``welcome`` the open's observation."""

    def __init__(self) -> None:
        self.adapter = AgentWS("user-1")

    @property
    def session(self):
        return self.adapter.session

    def on_frame(self, frame: dict) -> list:
        return self.adapter.receive(orjson.dumps(frame).decode())

    def on_welcome(self, frame: dict, asked_resume: bool):
        self.adapter.open(Credentials("tok"), asked_resume)
        (opened,) = self.on_frame(frame)
        assert isinstance(opened, Opened)
        return opened.observation

    def hello(self, resume: bool) -> dict:
        (frame,) = self.adapter.open(Credentials("tok"), resume)
        return orjson.loads(frame)

    def sent_turn(self, cid: str, text: str) -> None:
        self.adapter.send_turn(cid, text)


def reply(state: Wire, turn: int, deltas: list[str], first_seq: int, sha: str | None = None) -> list:
    out, seq = [], first_seq
    for i, delta in enumerate(deltas):
        out += state.on_frame({"t": T.CHUNK, "seq": seq, "turn": turn, "i": i, "delta": delta})
        seq += 1
    sha = sha or hashlib.sha256("".join(deltas).encode()).hexdigest()
    out += state.on_frame({"t": T.DONE, "seq": seq, "turn": turn, "n": len(deltas), "sha256": sha})
    return out


def test_hello_resumes_with_the_last_seq_received():
    state = Wire()
    assert "session" not in state.hello(resume=True)
    state.on_welcome(welcome(), asked_resume=False)
    state.on_frame({"t": T.NOTIFY, "seq": 1, "id": 1, "data": {}})
    assert state.hello(resume=True) == {"t": T.HELLO, "v": 1, "token": "tok", "session": "e.s1", "last_seq": 1}
    assert [orjson.loads(f) for f in state.adapter.acknowledge()] == [{"t": T.ACK, "seq": 1}]
    assert state.adapter.acknowledge() == []  # nothing new since


def test_a_complete_reply_with_the_right_sha256_is_stream_done_ok():
    state = Wire()
    state.on_welcome(welcome(), asked_resume=False)
    state.sent_turn("c1", "hi")
    assert state.on_frame({"t": T.ACCEPTED, "seq": 1, "cid": "c1", "turn": 1}) == []
    (done,) = reply(state, 1, ["a", "b", "c"], 2)
    assert (done.kind, done.ok, done.detail) == (Kind.STREAM_DONE, True, "complete")
    assert state.session.turns[1].reply_sha256 and not state.session.stream_open()


def test_a_wrong_sha256_or_a_missing_chunk_fails_the_stream():
    state = Wire()
    state.on_welcome(welcome(), asked_resume=False)
    assert reply(state, 1, ["a"], 1, sha="0" * 64)[-1].detail == "sha256_mismatch"
    out = state.on_frame({"t": T.CHUNK, "seq": 3, "turn": 2, "i": 0, "delta": "x"})
    out += state.on_frame({"t": T.CHUNK, "seq": 5, "turn": 2, "i": 2, "delta": "z"})  # seq 4 / i 1 never came
    out += state.on_frame({"t": T.DONE, "seq": 6, "turn": 2, "n": 3, "sha256": "whatever"})
    assert [(o.kind, o.detail) for o in out] == [
        (Kind.CHUNK_GAP, "seq_gap"),
        (Kind.CHUNK_GAP, "chunk_index_gap"),
        (Kind.STREAM_DONE, "chunks_missing"),
    ]


def test_replayed_duplicates_are_dropped_and_counted():
    state = Wire()
    state.on_welcome(welcome(), asked_resume=False)
    state.on_frame({"t": T.NOTIFY, "seq": 1, "id": 1, "data": {}})
    (dup,) = state.on_frame({"t": T.NOTIFY, "seq": 1, "id": 1, "data": {}})
    assert (dup.kind, dup.ok, dup.seq) == (Kind.DUP_FRAME, False, 1)
    assert state.session.pushes == {1}


def test_pushes_are_checked_for_order_duplicates_and_absence():
    state = Wire()
    state.on_welcome(welcome(), asked_resume=False)
    got = [
        state.on_frame({"t": T.NOTIFY, "seq": s, "id": i, "data": {}})[0].detail for s, i in [(1, 2), (2, 1), (3, 2)]
    ]
    assert got == ["received", "out_of_order", "duplicate"]
    assert state.session.missing_pushes([1, 2, 3]) == [3]


def test_a_resume_with_another_agent_is_a_failed_welcome():
    state = Wire()
    state.on_welcome(welcome(agent="a-1"), asked_resume=False)
    assert state.on_welcome(welcome(agent="a-1", resumed=True), asked_resume=True).ok
    obs = state.on_welcome(welcome(agent="a-2", resumed=True), asked_resume=True)
    assert (obs.kind, obs.ok, obs.detail) == (Kind.WELCOME, False, "resumed:agent_changed")


def test_a_resume_that_lost_turns_or_changed_context_is_a_failed_welcome():
    state = Wire()
    state.on_welcome(welcome(), asked_resume=False)
    state.sent_turn("c1", "hi")
    state.on_frame({"t": T.ACCEPTED, "seq": 1, "cid": "c1", "turn": 1})
    assert state.on_welcome(welcome(resumed=True, turns=1, ctx="h1"), asked_resume=True).ok
    assert state.on_welcome(welcome(resumed=True, turns=1, ctx="h2"), asked_resume=True).detail == (
        "resumed:ctx_hash_changed"
    )
    assert state.on_welcome(welcome(resumed=True, turns=0), asked_resume=True).detail == "resumed:turns_differ"


def test_a_resume_after_more_turns_than_the_client_keeps_is_compared_by_turn_number():
    state = Wire()
    state.on_welcome(welcome(), asked_resume=False)
    for n in range(1, TURNS_KEPT + 11):
        state.sent_turn(f"c{n}", "hi")
        state.on_frame({"t": T.ACCEPTED, "seq": n, "cid": f"c{n}", "turn": n})
    assert len(state.session.turns) == TURNS_KEPT
    assert state.on_welcome(welcome(resumed=True, turns=TURNS_KEPT + 10), asked_resume=True).ok
    assert state.on_welcome(welcome(resumed=True, turns=TURNS_KEPT), asked_resume=True).detail == "resumed:turns_differ"


def test_a_turn_in_flight_at_the_drop_may_be_counted_by_the_server():
    state = Wire()
    state.on_welcome(welcome(), asked_resume=False)
    state.sent_turn("c1", "hi")  # accepted by the server, `accepted` lost with the connection
    assert state.on_welcome(welcome(resumed=True, turns=1), asked_resume=True).ok


def test_a_new_session_after_expiry_starts_from_nothing():
    state = Wire()
    state.on_welcome(welcome(), asked_resume=False)
    state.on_frame({"t": T.NOTIFY, "seq": 1, "id": 1, "data": {}})
    obs = state.on_welcome(welcome(session="e.s2", agent="a-9", reason="expired"), asked_resume=True)
    assert (obs.ok, obs.detail, state.session.last_seq, state.session.pushes, state.session.resumed) == (
        True,
        "new:expired",
        0,
        set(),
        False,
    )


def test_history_is_compared_with_what_the_client_saw():
    state = Wire()
    state.on_welcome(welcome(), asked_resume=False)
    state.sent_turn("c1", "hi")
    state.on_frame({"t": T.ACCEPTED, "seq": 1, "cid": "c1", "turn": 1})
    reply(state, 1, ["a"], 2)
    sha = state.session.turns[1].reply_sha256
    good = [{"turn": 1, "cid": "c1", "text": "hi", "reply_sha256": sha}]
    assert state.session.compare_history(good) == ""
    assert state.session.compare_history([]) == "turn_missing"
    assert state.session.compare_history([{**good[0], "text": "other"}]) == "turn_differs"
    assert state.session.compare_history([{**good[0], "reply_sha256": "x"}]) == "reply_differs"
    assert state.session.compare_history(good + [{"turn": 2, "cid": "c9", "text": "?"}]) == "turn_count_differs"


def test_replayed_marks_the_end_of_a_replay():
    state = Wire()
    state.on_welcome(welcome(), asked_resume=False)
    (obs,) = state.on_frame({"t": T.REPLAYED, "through": 7})
    assert (obs.kind, obs.seq, state.session.replayed_through) == (Kind.REPLAY, 7, 7)


def test_control_frames_become_what_the_client_acts_on():
    wire = Wire()
    wire.on_welcome(welcome(), asked_resume=False)
    assert wire.on_frame({"t": T.HB_ACK, "id": 7}) == [HeartbeatAnswered(7)]
    (answer,) = wire.on_frame({"t": T.REFRESHED, "id": 3, "token_exp": 123.0})
    assert isinstance(answer, Answered) and (answer.request, answer.request_id) == ("refresh", 3)
    assert wire.session.token_exp == 123.0
    assert wire.on_frame({"t": T.REFRESH_REQUIRED, "grace_ms": 5000}) == [CredentialsExpiring(5000.0)]
    (limited,) = wire.on_frame({"t": T.ERROR, "code": "rate_limited", "retry_after_ms": 1500})
    assert limited == Backoff(1500.0, "rate_limited", CloseReason.RATE_LIMITED)
    assert wire.on_frame({"t": T.ERROR, "code": "bad_field"}) == [Failed("bad_field", CloseReason.OTHER)]
    (going,) = wire.on_frame({"t": T.GOAWAY, "retry_after_ms": 250})
    assert going.closing and going.reason is CloseReason.RESTARTING and going.retry_after_ms == 250
    assert wire.adapter.receive("not json")[0].detail == Detail.BAD_FRAME
    assert wire.adapter.receive("[1, 2]")[0].detail == Detail.BAD_FRAME


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (Close.HEARTBEAT_TIMEOUT, CloseReason.IDLE_REAPED),
        (Close.TAKEN_OVER, CloseReason.TAKEN_OVER),
        (Close.TOKEN_EXPIRED, CloseReason.CREDENTIALS_EXPIRED),
        (Close.RATE_LIMITED, CloseReason.RATE_LIMITED),
        (Close.UNAUTHORIZED, CloseReason.UNAUTHORIZED),
        (Close.SERVICE_RESTART, CloseReason.RESTARTING),
        (Close.PROTOCOL_ERROR, CloseReason.PROTOCOL_ERROR),
        (Close.BYE, CloseReason.NORMAL),
        (None, CloseReason.LOST),
        (4999, CloseReason.OTHER),
    ],
)
def test_agentws_close_codes_are_classified(code, reason):
    assert AgentWS("u").closed(code, "") is reason


def test_binary_frames_reach_the_reader_as_bytes():
    reader = FrameReader(server_frame(0x2, b"\x10\x00binary"))
    assert reader.next_message() == (0x2, b"\x10\x00binary")


# -- --protocol: loading an adapter and checking what the users need ------------------------------
def test_built_in_and_module_class_adapters_load(tmp_path):
    from users import protocols

    assert protocols.load("agentws") is AgentWS
    (tmp_path / "team_proto.py").write_text(
        "from users.protocols.agentws import AgentWS\nclass Team(AgentWS):\n    name = 'team'\n"
    )
    assert protocols.load("team_proto:Team", str(tmp_path)).name == "team"


@pytest.mark.parametrize(
    ("spec", "source", "message"),
    [
        ("amqp", None, "not a built-in protocol"),
        ("missing_mod_xyz:Adapter", None, "did not load: ModuleNotFoundError"),
        ("broken_proto:X", "raise RuntimeError('boom')\n", "did not load: RuntimeError: boom"),
        ("broken_proto:X", "X = 1\n", "is not a users.protocols.base.Adapter subclass"),
        ("broken_proto:Y", "X = 1\n", "does not exist"),
        (
            "broken_proto:X",
            "from users.protocols.base import Adapter, Capability\n"
            "class X(Adapter):\n    name = 'x'\n    capabilities = frozenset({Capability.REFRESH})\n"
            "    def connection(self, path): ...\n    def open(self, c, r): ...\n",
            "does not implement receive, refresh, heartbeat",
        ),
    ],
)
def test_an_unusable_protocol_is_refused_naming_what_is_wrong(tmp_path, monkeypatch, spec, source, message):
    import sys

    from users import protocols

    protocols.load.cache_clear()
    monkeypatch.delitem(sys.modules, "broken_proto", raising=False)
    if source is not None:
        (tmp_path / "broken_proto.py").write_text(source)
    with pytest.raises(protocols.ProtocolError, match=message):
        protocols.load(spec, str(tmp_path))
    monkeypatch.delitem(sys.modules, "broken_proto", raising=False)


def test_user_classes_needing_what_the_protocol_lacks_are_refused():
    from users import protocols
    from users.conversation import ConversationUser
    from users.flapping import FlappingUser
    from users.refresh import TokenRefreshUser
    from users.zombie import ZombieUser

    class StreamlessAgentWS(AgentWS):
        name = "streamless"
        capabilities = AgentWS.capabilities - {protocols.Capability.STREAM}

    protocols.check(StreamlessAgentWS, [FlappingUser, ZombieUser, ConversationUser])
    with pytest.raises(protocols.ProtocolError, match="TokenRefreshUser needs stream"):
        protocols.check(StreamlessAgentWS, [FlappingUser, TokenRefreshUser])
    mqtt = protocols.load("mqtt")
    protocols.check(mqtt, [FlappingUser, ZombieUser, ConversationUser])
    with pytest.raises(protocols.ProtocolError, match="TokenRefreshUser needs refresh, stream"):
        protocols.check(mqtt, [TokenRefreshUser])
