"""The client's protocol logic without sockets: RFC 6455 bytes and the agentws/1 session state."""

from __future__ import annotations

import hashlib
import random
import struct

import pytest

from agentws.events import Kind
from agentws.protocol import BACKOFF_CAP_MS, T
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
from users.session_state import TURNS_KEPT, SessionState, full_jitter_ms


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
        samples = [full_jitter_ms(attempt, rng=rng) for _ in range(200)]
        assert all(0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling * 0.8  # full jitter: spread over the whole range


def test_full_jitter_never_waits_less_than_the_server_asked():
    assert all(full_jitter_ms(0, floor_ms=1500) >= 1500 for _ in range(100))


# -- session state --------------------------------------------------------------------------
def welcome(session="e.s1", agent="a-1", turns=0, resumed=False, reason=None, ctx="h0"):
    frame = {"t": T.WELCOME, "session": session, "epoch": "e", "resumed": resumed,
             "agent": {"id": agent, "turns": turns, "ctx_hash": ctx}, "head_seq": 0,
             "hb_interval_ms": 300, "idle_timeout_ms": 450, "token_exp": 0, "resume_window_s": 2}  # fmt: skip
    if reason:
        frame["reason"] = reason
    return frame


def reply(state: SessionState, turn: int, deltas: list[str], first_seq: int, sha: str | None = None) -> list:
    out, seq = [], first_seq
    for i, delta in enumerate(deltas):
        out += state.on_frame({"t": T.CHUNK, "seq": seq, "turn": turn, "i": i, "delta": delta})
        seq += 1
    sha = sha or hashlib.sha256("".join(deltas).encode()).hexdigest()
    out += state.on_frame({"t": T.DONE, "seq": seq, "turn": turn, "n": len(deltas), "sha256": sha})
    return out


def test_hello_resumes_with_the_last_seq_received():
    state = SessionState()
    assert "session" not in state.hello("tok", resume=True)
    state.on_welcome(welcome(), asked_resume=False)
    state.on_frame({"t": T.NOTIFY, "seq": 1, "id": 1, "data": {}})
    assert state.hello("tok", resume=True) == {"t": T.HELLO, "v": 1, "token": "tok", "session": "e.s1", "last_seq": 1}
    assert state.ack_due() == 1


def test_a_complete_reply_with_the_right_sha256_is_stream_done_ok():
    state = SessionState()
    state.on_welcome(welcome(), asked_resume=False)
    state.sent_turn("c1", "hi")
    assert state.on_frame({"t": T.ACCEPTED, "seq": 1, "cid": "c1", "turn": 1}) == []
    (done,) = reply(state, 1, ["a", "b", "c"], 2)
    assert (done.kind, done.ok, done.detail) == (Kind.STREAM_DONE, True, "complete")
    assert state.turns[1].reply_sha256 and not state.stream_open()


def test_a_wrong_sha256_or_a_missing_chunk_fails_the_stream():
    state = SessionState()
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
    state = SessionState()
    state.on_welcome(welcome(), asked_resume=False)
    state.on_frame({"t": T.NOTIFY, "seq": 1, "id": 1, "data": {}})
    (dup,) = state.on_frame({"t": T.NOTIFY, "seq": 1, "id": 1, "data": {}})
    assert (dup.kind, dup.ok, dup.seq) == (Kind.DUP_FRAME, False, 1)
    assert state.pushes == {1}


def test_pushes_are_checked_for_order_duplicates_and_absence():
    state = SessionState()
    state.on_welcome(welcome(), asked_resume=False)
    got = [
        state.on_frame({"t": T.NOTIFY, "seq": s, "id": i, "data": {}})[0].detail for s, i in [(1, 2), (2, 1), (3, 2)]
    ]
    assert got == ["received", "out_of_order", "duplicate"]
    assert state.missing_pushes([1, 2, 3]) == [3]


def test_a_resume_with_another_agent_is_a_failed_welcome():
    state = SessionState()
    state.on_welcome(welcome(agent="a-1"), asked_resume=False)
    assert state.on_welcome(welcome(agent="a-1", resumed=True), asked_resume=True).ok
    obs = state.on_welcome(welcome(agent="a-2", resumed=True), asked_resume=True)
    assert (obs.kind, obs.ok, obs.detail) == (Kind.WELCOME, False, "resumed:agent_changed")


def test_a_resume_that_lost_turns_or_changed_context_is_a_failed_welcome():
    state = SessionState()
    state.on_welcome(welcome(), asked_resume=False)
    state.sent_turn("c1", "hi")
    state.on_frame({"t": T.ACCEPTED, "seq": 1, "cid": "c1", "turn": 1})
    assert state.on_welcome(welcome(resumed=True, turns=1, ctx="h1"), asked_resume=True).ok
    assert state.on_welcome(welcome(resumed=True, turns=1, ctx="h2"), asked_resume=True).detail == (
        "resumed:ctx_hash_changed"
    )
    assert state.on_welcome(welcome(resumed=True, turns=0), asked_resume=True).detail == "resumed:turns_differ"


def test_a_resume_after_more_turns_than_the_client_keeps_is_compared_by_turn_number():
    state = SessionState()
    state.on_welcome(welcome(), asked_resume=False)
    for n in range(1, TURNS_KEPT + 11):
        state.sent_turn(f"c{n}", "hi")
        state.on_frame({"t": T.ACCEPTED, "seq": n, "cid": f"c{n}", "turn": n})
    assert len(state.turns) == TURNS_KEPT
    assert state.on_welcome(welcome(resumed=True, turns=TURNS_KEPT + 10), asked_resume=True).ok
    assert state.on_welcome(welcome(resumed=True, turns=TURNS_KEPT), asked_resume=True).detail == "resumed:turns_differ"


def test_a_turn_in_flight_at_the_drop_may_be_counted_by_the_server():
    state = SessionState()
    state.on_welcome(welcome(), asked_resume=False)
    state.sent_turn("c1", "hi")  # accepted by the server, `accepted` lost with the connection
    assert state.on_welcome(welcome(resumed=True, turns=1), asked_resume=True).ok


def test_a_new_session_after_expiry_starts_from_nothing():
    state = SessionState()
    state.on_welcome(welcome(), asked_resume=False)
    state.on_frame({"t": T.NOTIFY, "seq": 1, "id": 1, "data": {}})
    obs = state.on_welcome(welcome(session="e.s2", agent="a-9", reason="expired"), asked_resume=True)
    assert (obs.ok, obs.detail, state.last_seq, state.pushes, state.resumed) == (True, "new:expired", 0, set(), False)


def test_history_is_compared_with_what_the_client_saw():
    state = SessionState()
    state.on_welcome(welcome(), asked_resume=False)
    state.sent_turn("c1", "hi")
    state.on_frame({"t": T.ACCEPTED, "seq": 1, "cid": "c1", "turn": 1})
    reply(state, 1, ["a"], 2)
    sha = state.turns[1].reply_sha256
    good = [{"turn": 1, "cid": "c1", "text": "hi", "reply_sha256": sha}]
    assert state.compare_history(good) == ""
    assert state.compare_history([]) == "turn_missing"
    assert state.compare_history([{**good[0], "text": "other"}]) == "turn_differs"
    assert state.compare_history([{**good[0], "reply_sha256": "x"}]) == "reply_differs"
    assert state.compare_history(good + [{"turn": 2, "cid": "c9", "text": "?"}]) == "turn_count_differs"


def test_replayed_marks_the_end_of_a_replay():
    state = SessionState()
    state.on_welcome(welcome(), asked_resume=False)
    (obs,) = state.on_frame({"t": T.REPLAYED, "through": 7})
    assert (obs.kind, obs.seq, state.replayed_through) == (Kind.REPLAY, 7, 7)
