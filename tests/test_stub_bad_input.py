"""Whatever a client sends, the backend answers with the documented error and close, and leaks nothing."""

from __future__ import annotations

import asyncio
import json
import time

import jwt
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agentws.protocol import CLIENT_FRAMES, DEFAULT_MAX_FRAME_BYTES, VERSION, Close, ErrorCode, T
from tests.stubclient import Clients, Closed, get_token, run

#: Codes a server may close with; 1006 is what a client sees when no close frame came at all.
DOCUMENTED_CLOSES = set(Close) - {Close.ABNORMAL}

VALID, OTHER, EXPIRED, FOREIGN, NO_SUB, SESSION = (
    "<valid>",
    "<other>",
    "<expired>",
    "<foreign>",
    "<no-sub>",
    "<session>",
)


@pytest.fixture(scope="module")
def bad_stub(module_stub_factory):
    return module_stub_factory("--chunk-delay-ms", "5", "--chunks-per-reply", "3")


def _tokens(stub, user: str, http_tokens: dict[str, str]) -> dict[str, str]:
    now = time.time()
    return {
        VALID: http_tokens[VALID],
        OTHER: http_tokens[OTHER],
        EXPIRED: jwt.encode({"sub": user, "exp": now - 10, "iat": int(now) - 20}, stub.jwt_secret, "HS256"),
        FOREIGN: jwt.encode({"sub": user, "exp": now + 60}, "not-the-stub-secret-at-all-32-bytes", "HS256"),
        NO_SUB: jwt.encode({"exp": now + 60}, stub.jwt_secret, "HS256"),
    }


def _fill(value, subst: dict[str, str]):
    """Replace placeholders (tokens, the session id) inside a frame by their run-time values."""
    if isinstance(value, str):
        return subst.get(value, value)
    if isinstance(value, dict):
        return {k: _fill(v, subst) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, subst) for v in value]
    return value


async def _open(cs: Clients, user: str, hello: bool):
    """A connected client (with a session when ``hello``) and the placeholder values for its frames."""
    other = await get_token(cs.http, cs.stub.url, f"{user}-other")
    c = await cs.connect(user)
    subst = _tokens(cs.stub, user, {VALID: c.token, OTHER: other})
    if hello:
        await c.hello()
        subst[SESSION] = c.welcome["session"]
    return c, subst


async def _settled(cs: Clients, deadline_s: float = 3.0) -> dict:
    """/stats once every socket's teardown has run (bounded)."""
    deadline = time.monotonic() + deadline_s
    while True:
        stats = await cs.stats()
        if (stats["connections"] == 0 and stats["sessions_attached"] == 0) or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.02)


HELLO = {"t": T.HELLO, "v": VERSION, "token": VALID}

#: (name, hello first?, frame, error code, close code)
REFUSED = [
    ("not-json", False, "{nope", ErrorCode.BAD_JSON, Close.PROTOCOL_ERROR),
    ("json-array", False, "[1, 2]", ErrorCode.BAD_JSON, Close.PROTOCOL_ERROR),
    ("json-string", False, '"hello"', ErrorCode.BAD_JSON, Close.PROTOCOL_ERROR),
    ("json-null", False, "null", ErrorCode.BAD_JSON, Close.PROTOCOL_ERROR),
    ("binary", False, b'{"t": "hello"}', ErrorCode.BAD_JSON, Close.PROTOCOL_ERROR),
    ("no-t", False, {"v": 1}, ErrorCode.UNKNOWN_TYPE, Close.PROTOCOL_ERROR),
    ("unknown-t", False, {"t": "nope"}, ErrorCode.UNKNOWN_TYPE, Close.PROTOCOL_ERROR),
    ("t-not-string", False, {"t": 5}, ErrorCode.UNKNOWN_TYPE, Close.PROTOCOL_ERROR),
    ("server-frame-type", False, {"t": T.WELCOME}, ErrorCode.UNKNOWN_TYPE, Close.PROTOCOL_ERROR),
    ("msg-before-hello", False, {"t": T.MSG, "cid": "c", "text": "x"}, ErrorCode.HELLO_REQUIRED, Close.PROTOCOL_ERROR),
    ("hb-before-hello", False, {"t": T.HB, "id": 1}, ErrorCode.HELLO_REQUIRED, Close.PROTOCOL_ERROR),
    ("second-hello", True, HELLO, ErrorCode.DUPLICATE_HELLO, Close.PROTOCOL_ERROR),
    ("hello-v-string", False, {**HELLO, "v": "1"}, ErrorCode.BAD_VERSION, Close.PROTOCOL_ERROR),
    ("hello-v-true", False, {**HELLO, "v": True}, ErrorCode.BAD_VERSION, Close.PROTOCOL_ERROR),
    ("hello-v-2", False, {**HELLO, "v": 2}, ErrorCode.BAD_VERSION, Close.PROTOCOL_ERROR),
    ("hello-no-v", False, {"t": T.HELLO, "token": VALID}, ErrorCode.BAD_VERSION, Close.PROTOCOL_ERROR),
    ("hello-no-token", False, {"t": T.HELLO, "v": 1}, ErrorCode.BAD_FIELD, Close.PROTOCOL_ERROR),
    ("hello-token-int", False, {**HELLO, "token": 5}, ErrorCode.BAD_FIELD, Close.PROTOCOL_ERROR),
    ("hello-last-seq-negative", False, {**HELLO, "last_seq": -1}, ErrorCode.BAD_FIELD, Close.PROTOCOL_ERROR),
    ("hello-last-seq-true", False, {**HELLO, "last_seq": True}, ErrorCode.BAD_FIELD, Close.PROTOCOL_ERROR),
    ("hello-last-seq-string", False, {**HELLO, "last_seq": "3"}, ErrorCode.BAD_FIELD, Close.PROTOCOL_ERROR),
    ("hello-last-seq-float", False, {**HELLO, "last_seq": 1.5}, ErrorCode.BAD_FIELD, Close.PROTOCOL_ERROR),
    ("hello-session-int", False, {**HELLO, "session": 5}, ErrorCode.BAD_FIELD, Close.PROTOCOL_ERROR),
    ("hello-session-empty", False, {**HELLO, "session": ""}, ErrorCode.BAD_FIELD, Close.PROTOCOL_ERROR),
    ("hello-session-long", False, {**HELLO, "session": "s" * 129}, ErrorCode.BAD_FIELD, Close.PROTOCOL_ERROR),
    ("msg-cid-int", True, {"t": T.MSG, "cid": 5, "text": "x"}, ErrorCode.BAD_FIELD, Close.PROTOCOL_ERROR),
    ("msg-no-cid", True, {"t": T.MSG, "text": "x"}, ErrorCode.BAD_FIELD, Close.PROTOCOL_ERROR),
    ("msg-cid-long", True, {"t": T.MSG, "cid": "c" * 129, "text": "x"}, ErrorCode.BAD_FIELD, Close.PROTOCOL_ERROR),
    ("msg-no-text", True, {"t": T.MSG, "cid": "c"}, ErrorCode.BAD_FIELD, Close.PROTOCOL_ERROR),
    ("msg-text-int", True, {"t": T.MSG, "cid": "c", "text": 1}, ErrorCode.BAD_FIELD, Close.PROTOCOL_ERROR),
    ("msg-text-long", True, {"t": T.MSG, "cid": "c", "text": "x" * 4097}, ErrorCode.BAD_FIELD, Close.PROTOCOL_ERROR),
    ("ack-seq-string", True, {"t": T.ACK, "seq": "x"}, ErrorCode.BAD_FIELD, Close.PROTOCOL_ERROR),
    ("ack-seq-negative", True, {"t": T.ACK, "seq": -1}, ErrorCode.BAD_FIELD, Close.PROTOCOL_ERROR),
    ("ack-seq-true", True, {"t": T.ACK, "seq": True}, ErrorCode.BAD_FIELD, Close.PROTOCOL_ERROR),
    ("ack-no-seq", True, {"t": T.ACK}, ErrorCode.BAD_FIELD, Close.PROTOCOL_ERROR),
    ("ack-beyond-head", True, {"t": T.ACK, "seq": 1}, ErrorCode.BAD_ACK, Close.PROTOCOL_ERROR),
    ("hb-no-id", True, {"t": T.HB}, ErrorCode.BAD_FIELD, Close.PROTOCOL_ERROR),
    ("hb-id-float", True, {"t": T.HB, "id": 1.5}, ErrorCode.BAD_FIELD, Close.PROTOCOL_ERROR),
    ("hb-id-list", True, {"t": T.HB, "id": [1]}, ErrorCode.BAD_FIELD, Close.PROTOCOL_ERROR),
    ("history-no-id", True, {"t": T.HISTORY}, ErrorCode.BAD_FIELD, Close.PROTOCOL_ERROR),
    ("refresh-no-id", True, {"t": T.REFRESH, "token": VALID}, ErrorCode.BAD_FIELD, Close.PROTOCOL_ERROR),
    ("refresh-no-token", True, {"t": T.REFRESH, "id": 1}, ErrorCode.BAD_FIELD, Close.PROTOCOL_ERROR),
    ("hello-token-garbage", False, {**HELLO, "token": "abc"}, ErrorCode.UNAUTHORIZED, Close.UNAUTHORIZED),
    ("hello-token-foreign", False, {**HELLO, "token": FOREIGN}, ErrorCode.UNAUTHORIZED, Close.UNAUTHORIZED),
    ("hello-token-no-sub", False, {**HELLO, "token": NO_SUB}, ErrorCode.UNAUTHORIZED, Close.UNAUTHORIZED),
    ("hello-token-expired", False, {**HELLO, "token": EXPIRED}, ErrorCode.TOKEN_EXPIRED, Close.TOKEN_EXPIRED),
    ("refresh-garbage", True, {"t": T.REFRESH, "id": 1, "token": "abc"}, ErrorCode.UNAUTHORIZED, Close.UNAUTHORIZED),
    ("refresh-foreign", True, {"t": T.REFRESH, "id": 1, "token": FOREIGN}, ErrorCode.UNAUTHORIZED, Close.UNAUTHORIZED),
    ("refresh-expired", True, {"t": T.REFRESH, "id": 1, "token": EXPIRED}, ErrorCode.UNAUTHORIZED, Close.UNAUTHORIZED),
    ("refresh-other-user", True, {"t": T.REFRESH, "id": 1, "token": OTHER}, ErrorCode.UNAUTHORIZED, Close.UNAUTHORIZED),
]  # fmt: skip


@pytest.mark.parametrize("hello, frame, code, close", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_refused_frame_gets_its_error_then_its_close_and_leaks_nothing(bad_stub, user, hello, frame, code, close):
    async def go():
        async with Clients(bad_stub) as cs:
            before = await _settled(cs)
            c, subst = await _open(cs, user, hello)
            await c.send(_fill(frame, subst))
            assert await c.recv_closed() == close
            error = c.frames[-1]
            assert error["t"] == T.ERROR and error["code"] == code and error["message"]
            after = await _settled(cs)
            assert after["connections"] == 0 and after["sessions_attached"] == 0
            assert after["agents_live"] == before["agents_live"] + (1 if hello else 0)
            assert after["max_agents_per_session"] <= 1

    run(go())
    assert bad_stub.alive


def test_oversize_frame_is_closed_1009(bad_stub, user):
    async def go():
        async with Clients(bad_stub) as cs:
            c = await cs.session(user)
            await c.send({"t": T.MSG, "cid": "c", "text": "x" * DEFAULT_MAX_FRAME_BYTES})
            assert await c.recv_closed() == Close.MESSAGE_TOO_BIG
            assert (await _settled(cs))["sessions_attached"] == 0

    run(go())
    assert bad_stub.alive


def test_resuming_another_users_session_is_forbidden_4403_and_leaves_it_alone(bad_stub, user):
    async def go():
        async with Clients(bad_stub) as cs:
            owner = await cs.session(user)
            before = await cs.stats()
            thief = await cs.connect(f"{user}-thief")
            await thief.send({"t": T.HELLO, "v": VERSION, "token": thief.token, "session": owner.welcome["session"]})
            assert await thief.recv_closed() == Close.FORBIDDEN
            assert thief.frames == [{"t": T.ERROR, "code": ErrorCode.FORBIDDEN, "message": thief.frames[0]["message"]}]
            await owner.send({"t": T.HB, "id": 1})
            await owner.recv(T.HB_ACK)
            after = await cs.stats()
            assert (
                after["agents_live"] == before["agents_live"] and after["takeovers_total"] == before["takeovers_total"]
            )

    run(go())


# -- property: random frames never crash the backend nor make it close with an undocumented code --

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
tokens = st.sampled_from([VALID, OTHER, EXPIRED, FOREIGN, NO_SUB]) | st.text(max_size=20)
field_values = {
    "v": st.sampled_from([VERSION, 0, "1", True, None]) | json_values,
    "token": tokens | json_values,
    "session": st.sampled_from([SESSION, "00000000.0123456789abcdef"]) | st.text(max_size=20) | json_values,
    "last_seq": st.integers(-3, 2**64) | json_values,
    "seq": st.integers(-3, 2**64) | json_values,
    "cid": st.text(max_size=8) | json_values,
    "text": st.text(max_size=30) | json_values,
    "id": st.integers() | st.text(max_size=8) | json_values,
}
typed_frames = st.builds(
    lambda t, fields: {"t": t, **fields},
    st.sampled_from(sorted(CLIENT_FRAMES)),
    st.fixed_dictionaries({}, optional=field_values),
)
ids = st.integers(0, 9) | st.text(min_size=1, max_size=6)
small_seqs = st.integers(0, 12)
valid_frames = st.one_of(
    st.fixed_dictionaries(
        {"t": st.just(T.HELLO), "v": st.just(VERSION), "token": tokens},
        optional={"session": st.sampled_from([SESSION, "00000000.0123456789abcdef"]), "last_seq": small_seqs},
    ),
    st.fixed_dictionaries({"t": st.just(T.MSG), "cid": st.text(min_size=1, max_size=4), "text": st.text(max_size=20)}),
    st.fixed_dictionaries({"t": st.just(T.ACK), "seq": small_seqs}),
    st.fixed_dictionaries({"t": st.just(T.HB), "id": ids}),
    st.fixed_dictionaries({"t": st.just(T.REFRESH), "id": ids, "token": tokens}),
    st.fixed_dictionaries({"t": st.just(T.HISTORY), "id": ids}),
    st.just({"t": T.BYE}),
)
#: a well-formed frame with one field replaced by anything
mutated_frames = st.builds(
    lambda frame, key, value: {**frame, key: value},
    valid_frames,
    st.sampled_from(["t", "v", "token", "session", "last_seq", "cid", "text", "seq", "id"]),
    json_values,
)
wire_frames = st.one_of(
    valid_frames.map(json.dumps),
    mutated_frames.map(json.dumps),
    typed_frames.map(json.dumps),
    json_values.map(json.dumps),
    st.binary(max_size=40),
    st.text(max_size=40),
)


@settings(max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(hello=st.booleans(), frames=st.lists(wire_frames, min_size=1, max_size=5))
def test_random_frames_never_crash_the_backend_or_use_undocumented_closes(bad_stub, hello, frames):
    async def go():
        async with Clients(bad_stub) as cs:
            c, subst = await _open(cs, f"fuzz-{time.monotonic_ns()}", hello)
            code = None
            try:
                for frame in frames:
                    await c.send(json.dumps(_fill(json.loads(frame), subst)) if _is_json(frame) else frame)
                # a sync point: answered with hb_ack on a healthy session, else it closes the socket
                await c.send({"t": T.HB, "id": "sync"})
                await c.recv(T.HB_ACK)
            except Closed as closed:
                code = closed.code
            except ConnectionError:
                code = await c.recv_closed()
            if code is None and c.of(T.ERROR):
                code = await c.recv_closed()
            event(f"close {code}" if code else "healthy")
            assert code is None or code in DOCUMENTED_CLOSES, (code, c.frames)
            for error in c.of(T.ERROR):
                assert error["code"] in set(ErrorCode), error
            if c.of(T.ERROR):
                assert code is not None, "every error frame is followed by a close"
            await c.close()

    run(go())
    assert bad_stub.alive, "the backend process died"


def _is_json(frame) -> bool:
    if not isinstance(frame, str):
        return False
    try:
        json.loads(frame)
    except ValueError:
        return False
    return True


def test_after_the_fuzzing_the_backend_answers_and_holds_no_attached_session(bad_stub, user):
    async def go():
        async with Clients(bad_stub) as cs:
            stats = await _settled(cs)
            assert stats["connections"] == 0 and stats["sessions_attached"] == 0
            assert stats["max_agents_per_session"] <= 1 and stats["duplicate_agents_total"] == 0
            c = await cs.session(user)
            await c.reply("c1")

    run(go())


def test_a_client_gone_in_the_middle_of_its_upgrade_is_no_error(stub_factory):
    """Clients that send the upgrade and reset the connection at once (a user stopped mid-connect, a network
    drop): the backend lets each go quietly (stub_factory fails the test on any traceback in its log)."""
    import socket
    import struct
    from urllib.parse import urlsplit

    stub = stub_factory()
    host, port = urlsplit(stub.url).hostname, urlsplit(stub.url).port
    request = (
        f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: {VERSION}\r\n\r\n"
    ).encode()
    for _ in range(200):
        with socket.create_connection((host, port), timeout=2) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset
            s.sendall(request)
    import urllib.request

    body = json.dumps({"user": "after-the-resets"}).encode()
    asked = urllib.request.Request(f"{stub.url}/auth/token", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(asked, timeout=5) as answer:
        assert answer.status == 200  # and it still serves
