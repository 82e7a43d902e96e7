"""Socket.IO without a server: the Engine.IO / Socket.IO codec's text, and the SocketIO adapter's exchange, frames
in, frames and observations out (recovery by sid and pid, missed events before the CONNECT, offsets, refusals)."""

from __future__ import annotations

import orjson
import pytest

from contract.events import CloseReason, Detail, Kind
from users import protocols
from users.options import Settings
from users.protocols import socketio_codec as codec
from users.protocols.base import (
    Answered,
    Backoff,
    Capability,
    Credentials,
    CredentialsExpiring,
    Failed,
    HeartbeatDriver,
    Observation,
    Opened,
    ProtocolViolation,
    Send,
)
from users.protocols.socketio import REAP_TOLERANCE, SocketIO
from users.protocols.socketio_codec import MalformedPacket, Packet, SocketType

TOKEN = Credentials("tok")
OPEN = '0{"sid":"eio1","upgrades":[],"pingInterval":300,"pingTimeout":200,"maxPayload":1000000}'


def ev(name: str, body: dict, offset: str | None = None) -> str:
    args = [name, body] + ([offset] if offset is not None else [])
    return "42" + orjson.dumps(args).decode()


def connected(sid: str = "s1", pid: str = "p1") -> str:
    return "40" + orjson.dumps({"sid": sid, "pid": pid}).decode()


def start(adapter: SocketIO, *, resume: bool = False, sid: str = "s1", pid: str = "p1", before=()) -> list:
    """One connection: open, the server's open packet, events it sends before its CONNECT, its CONNECT."""
    assert adapter.open(TOKEN, resume) == []
    sent = adapter.receive(OPEN)
    assert len(sent) == 1 and isinstance(sent[0], Send)
    out = [o for frame in before for o in adapter.receive(frame)]
    assert out == []  # held until the CONNECT says whose they are
    return adapter.receive(connected(sid, pid))


def connect_auth(adapter: SocketIO, resume: bool) -> dict:
    adapter.open(TOKEN, resume)
    (send,) = adapter.receive(OPEN)
    frame = send.frames[0]
    assert frame.startswith("40")
    return orjson.loads(frame[2:])


# -- the codec -----------------------------------------------------------------------------------------
def test_packets_encode_as_the_specification_writes_them():
    assert codec.connect({"token": "t"}) == '40{"token":"t"}'
    assert codec.connect({"token": "t"}, "/chat") == '40/chat,{"token":"t"}'
    assert codec.event("msg", {"a": 1}) == '42["msg",{"a":1}]'
    assert codec.event("refresh", {"token": "t"}, ack_id=12) == '4212["refresh",{"token":"t"}]'
    assert codec.event("history", ack_id=3, namespace="/chat") == '42/chat,3["history"]'
    assert codec.disconnect() == "41" and codec.disconnect("/chat") == "41/chat,"
    assert codec.PONG == "3"


@pytest.mark.parametrize(
    ("payload", "packet"),
    [
        ('0{"sid":"x","pid":"y"}', Packet(SocketType.CONNECT, "/", None, {"sid": "x", "pid": "y"})),
        ('2["push",{"seq":1},"off"]', Packet(SocketType.EVENT, "/", None, ["push", {"seq": 1}, "off"])),
        ('2/chat,7["e"]', Packet(SocketType.EVENT, "/chat", 7, ["e"])),
        ("317[{}]", Packet(SocketType.ACK, "/", 17, [{}])),
        ('4{"message":"unauthorized"}', Packet(SocketType.CONNECT_ERROR, "/", None, {"message": "unauthorized"})),
        ("1", Packet(SocketType.DISCONNECT)),
        ("1/chat,", Packet(SocketType.DISCONNECT, "/chat")),
    ],
)
def test_socket_packets_parse(payload, packet):
    assert codec.socket_packet(payload) == packet


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        ("", "empty"),
        ("9", "unknown Socket.IO packet type"),
        ("2{nope", "not JSON"),
        ('2{"a":1}', "without an array"),
        ("2[1]", "without an event name"),
        ('51-["e",{"_placeholder":true,"num":0}]', "binary"),
    ],
)
def test_malformed_socket_packets_are_named(payload, says):
    with pytest.raises(MalformedPacket, match=says):
        codec.socket_packet(payload)


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        ("{", "not JSON"),
        ("[]", "not a JSON object"),
        ('{"sid":"x","pingInterval":1}', "lacks pingTimeout"),
        ('{"sid":"x","upgrades":[],"pingInterval":25000,"pingTimeout":5000}', "Engine.IO 3"),
        ('{"sid":"x","pingInterval":"25","pingTimeout":5,"maxPayload":1}', "bad pingInterval"),
    ],
)
def test_bad_open_packets_are_named(payload, says):
    with pytest.raises(MalformedPacket, match=says):
        codec.handshake(payload)


# -- the adapter -----------------------------------------------------------------------------------------
def test_it_is_built_in_with_a_server_driven_heartbeat():
    cls = protocols.load("socketio")
    assert cls is SocketIO and cls.heartbeat_driver is HeartbeatDriver.SERVER
    assert {Capability.RESUME, Capability.PUSH, Capability.STREAM, Capability.REFRESH} <= cls.capabilities
    assert cls.default_path == "/socket.io/?EIO=4&transport=websocket"


def test_the_connect_waits_for_the_open_packet_and_carries_the_token():
    a = SocketIO("u1")
    assert connect_auth(a, resume=False) == {"token": "tok"}


def test_a_new_session_opens_at_the_connect_with_the_servers_ping_figures():
    a = SocketIO("u1")
    out = start(a)
    assert out == [Opened(False, Observation(Kind.WELCOME, True, detail=Detail.NEW))]
    assert a.session.session == "s1" and a.pid == "p1"
    assert a.heartbeat_interval_ms == 300 and a.idle_timeout_ms == 500


def test_pings_are_answered_and_marked_as_the_servers_heartbeat():
    a = SocketIO("u1")
    start(a)
    assert a.receive("2") == [Send(("3",), server_ping=True)]


def test_a_resume_presents_pid_and_offset_and_gets_missed_events_sent_before_the_connect():
    a = SocketIO("u1")
    start(a)
    a.receive(ev("session", {"token_exp": 5.0}, "o1"))
    a.receive(ev("push", {"seq": 1, "id": 1, "data": {}}, "o2"))
    assert a.offset == "o2" and a.session.token_exp == 5.0
    assert connect_auth(a, resume=True) == {"token": "tok", "pid": "p1", "offset": "o2"}
    missed = [ev("push", {"seq": 2, "id": 2, "data": {}}, "o3"), ev("push", {"seq": 3, "id": 3, "data": {}}, "o4")]
    out = start(a, resume=True, before=missed)
    assert out[0] == Opened(True, Observation(Kind.WELCOME, True, detail=Detail.RESUMED))
    assert [o.seq for o in out[1:3]] == [2, 3] and all(o.kind is Kind.NOTIFY and o.ok for o in out[1:3])
    assert out[3] == Observation(Kind.REPLAY, True, seq=3)


def test_another_sid_is_a_new_session_and_the_old_offset_is_dropped():
    a = SocketIO("u1")
    start(a)
    a.receive(ev("session", {}, "o1"))
    out = start(a, resume=True, sid="s2", pid="p2")
    assert out == [Opened(False, Observation(Kind.WELCOME, True, detail=Detail.NEW_NONE))]
    assert a.offset == "" and a.pid == "p2" and a.session.session == "s2"


def test_a_client_that_received_no_stored_event_presents_its_pid_without_an_offset():
    """socket.io-client does the same; socket.io then does not recover the session (socket.io#5538)."""
    a = SocketIO("u1")
    start(a)
    assert connect_auth(a, resume=True) == {"token": "tok", "pid": "p1"}


def test_an_offset_delivered_twice_is_a_duplicate_and_a_seq_gap_is_a_gap():
    a = SocketIO("u1")
    start(a)
    a.receive(ev("push", {"seq": 1, "id": 1, "data": {}}, "o1"))
    assert a.receive(ev("push", {"seq": 1, "id": 1, "data": {}}, "o1")) == [
        Observation(Kind.DUP_FRAME, False, detail=Detail.PUSH)
    ]
    gap = a.receive(ev("push", {"seq": 3, "id": 3, "data": {}}, "o3"))
    assert gap[0] == Observation(Kind.CHUNK_GAP, False, seq=3, detail=Detail.SEQ_GAP)


def test_a_streamed_reply_is_assembled_and_checked():
    import hashlib

    a = SocketIO("u1")
    start(a)
    assert a.send_turn("c1", "hi") == ['42["msg",{"cid":"c1","text":"hi"}]']
    pieces = ["ab", "cd"]
    a.receive(ev("accepted", {"cid": "c1", "turn": 1}, "o1"))
    for i, delta in enumerate(pieces):
        assert a.receive(ev("chunk", {"turn": 1, "i": i, "delta": delta}, f"o{i + 2}")) == []
    sha = hashlib.sha256(b"abcd").hexdigest()
    (done,) = a.receive(ev("done", {"turn": 1, "n": 2, "sha256": sha}, "o9"))
    assert done == Observation(Kind.STREAM_DONE, True, detail=Detail.COMPLETE)


def test_refresh_and_history_are_events_with_acks():
    a = SocketIO("u1")
    a.configure(Settings(socketio_refresh_event="reauth"))
    start(a)
    assert a.refresh(Credentials("t2"), 7) == ['427["reauth",{"token":"t2"}]']
    assert a.receive('437[{"ok":true,"exp":99}]') == [Answered("refresh", 7, {"ok": True, "exp": 99})]
    assert a.session.token_exp == 99.0
    a.refresh(Credentials("bad"), 8)
    assert a.receive('438[{"ok":false,"error":"wrong_user"}]') == [
        Failed("refresh wrong_user", CloseReason.UNAUTHORIZED)
    ]
    assert a.ask_history(9) == ['429["history"]']
    assert a.receive('439[{"turns":[]}]') == [Answered("history", 9, {"turns": []})]
    assert a.receive('4399[{"turns":[]}]') == []  # an ack nobody asked for


def test_the_apps_expiry_and_goodbye_events_say_what_follows():
    a = SocketIO("u1")
    start(a)
    assert a.receive(ev("refresh_required", {"grace_ms": 500}, "o1")) == [CredentialsExpiring(500.0)]
    assert a.receive(ev("goodbye", {"reason": "taken_over"}, "o2")) == [
        Backoff(0.0, "goodbye taken_over", CloseReason.TAKEN_OVER, closing=True)
    ]
    assert a.receive("41") == [Backoff(0.0, "disconnect", CloseReason.TAKEN_OVER, closing=True)]
    assert a.closed(1005, "", 10.0) is CloseReason.TAKEN_OVER


def test_a_server_disconnect_without_a_reason_is_normal():
    a = SocketIO("u1")
    start(a)
    assert a.receive("41") == [Backoff(0.0, "disconnect", CloseReason.NORMAL, closing=True)]


def test_a_connect_error_refuses_the_session_and_ends_the_connection():
    a = SocketIO("u1")
    a.open(TOKEN, False)
    a.receive(OPEN)
    out = a.receive('44{"message":"token_expired","data":{"code":"token_expired"}}')
    assert out == [Failed("connect_error token_expired", CloseReason.CREDENTIALS_EXPIRED, ends_connection=True)]
    assert a.closed(1000, "", 0) is CloseReason.CREDENTIALS_EXPIRED
    b = SocketIO("u1")
    b.open(TOKEN, False)
    b.receive(OPEN)
    assert b.receive('44{"message":"nope"}')[0].reason is CloseReason.UNAUTHORIZED


def test_an_unannounced_close_after_ping_interval_plus_timeout_of_silence_is_the_reap():
    a = SocketIO("u1")
    start(a)
    assert a.closed(1005, "", 500 * REAP_TOLERANCE) is CloseReason.IDLE_REAPED
    assert a.closed(1005, "", 200) is CloseReason.LOST
    assert a.closed(None, "", 100) is CloseReason.LOST


@pytest.mark.parametrize(
    ("frames", "says"),
    [
        (["2"], "no Engine.IO open packet"),
        (['0{"sid":"x","upgrades":[],"pingInterval":25000,"pingTimeout":5000}'], "Engine.IO 3"),
        ([OPEN, OPEN], "a second Engine.IO open packet"),
        ([OPEN, "9"], "unknown Engine.IO packet type"),
        ([OPEN, "47"], "unknown Socket.IO packet type"),
        ([OPEN, '40{"pid":"p"}'], "a CONNECT without a sid"),
    ],
)
def test_a_server_that_breaks_the_protocol_is_named(frames, says):
    a = SocketIO("u1")
    a.open(TOKEN, False)
    with pytest.raises(ProtocolViolation, match=says):
        for frame in frames:
            a.receive(frame)


def test_bad_event_bodies_are_recorded_not_raised():
    a = SocketIO("u1")
    start(a)
    (bad,) = a.receive(ev("push", {"id": 1}, "o1"))
    assert bad.kind is Kind.ERROR and bad.code == "bad_payload"
    assert a.receive('42["push","text","o2"]')[0].code == "bad_payload"
    assert a.receive('42["unknown",{},"o3"]') == []
    assert a.receive('42/other,["push",{}]') == []  # another namespace's


def test_a_binary_frame_is_the_adapters_limit_not_the_servers_fault():
    a = SocketIO("u1")
    start(a)
    with pytest.raises(ValueError, match="binary") as raised:
        a.receive(b"\x04")
    assert not isinstance(raised.value, ProtocolViolation)


def test_pushes_go_to_the_users_room_and_leave_is_a_namespace_disconnect():
    a = SocketIO("u1")
    a.configure(Settings(socketio_namespace="/chat"))
    assert a.push_request("s1", 3, {"k": 1}).body == {"user": "u1", "id": 3, "data": {"k": 1}}
    assert a.leave() == ["41/chat,"]
    a.open(TOKEN, False)
    assert a.receive(OPEN) == [Send(('40/chat,{"token":"tok"}',))]
    assert a.receive('40/chat,{"sid":"s","pid":"p"}')[0].resumed is False
