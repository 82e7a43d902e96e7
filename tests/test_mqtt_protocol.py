"""MQTT without a broker: the codec's bytes; the Mqtt, Mqtt311 and MqttPublisher exchanges, packets in, out."""

from __future__ import annotations

import struct

import orjson
import pytest

from contract.events import CloseReason, Detail, Kind
from users import protocols
from users.protocols import mqtt_codec as codec
from users.protocols.base import (
    Backoff,
    Capability,
    Credentials,
    Failed,
    HeartbeatAnswered,
    Observation,
    Opened,
    ProtocolViolation,
    Send,
)
from users.protocols.mqtt import REAP_TOLERANCE, CleanStart, Mqtt, Mqtt311, MqttPublisher, push_payload
from users.protocols.mqtt_codec import Level, MalformedPacket, PacketReader, PacketType

NO_TOKEN = Credentials("")
TOPIC = b"harness/u1.1/in"
PINGREQ = b"\xc0\x00"
PINGRESP = codec.packet(PacketType.PINGRESP, 0, b"")


# -- server packets ------------------------------------------------------------------------------------
def connack(code: int = 0, *, present: bool = False, level: Level = Level.V5, props: dict | None = None) -> bytes:
    body = bytes((int(present), code))
    if level is Level.V5:
        body += codec.properties(props or {})
    return codec.packet(PacketType.CONNACK, 0, body)


def suback(granted: int = 1, *, packet_id: int = 1, level: Level = Level.V5) -> bytes:
    body = struct.pack("!H", packet_id) + (codec.properties({}) if level is Level.V5 else b"") + bytes((granted,))
    return codec.packet(PacketType.SUBACK, 0, body)


def push(seq: int, *, packet_id: int | None = None, dup: bool = False, level: Level = Level.V5, payload=None) -> bytes:
    body = push_payload(seq, {}) if payload is None else payload
    return codec.publish("harness/u1.1/in", body, qos=1, packet_id=packet_id or seq, level=level, dup=dup)


def disconnect(reason: int) -> bytes:
    return codec.packet(PacketType.DISCONNECT, 0, bytes((reason,)) + codec.properties({}))


def received(seq: int) -> Observation:
    return Observation(Kind.NOTIFY, True, seq=seq, detail=Detail.RECEIVED)


def opened(adapter: Mqtt) -> list:
    """Open a new session on ``adapter`` (CONNECT, CONNACK, SUBACK); what the SUBACK gave."""
    adapter.open(NO_TOKEN, resume=False)
    adapter.receive(connack(level=adapter.level))
    return adapter.receive(suback(level=adapter.level))


# -- codec: variable byte integers ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n", "encoded"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        (2097151, b"\xff\xff\x7f"),
        (2097152, b"\x80\x80\x80\x01"),
        (268435455, b"\xff\xff\xff\x7f"),
    ],
)
def test_varint_round_trips_at_every_length_boundary(n, encoded):
    """A variable byte integer encodes to its 1-4 byte form and both decoders read it back whole."""
    assert codec.varint(n) == encoded
    assert codec._remaining_length(bytearray(b"\x30" + encoded), 1) == (n, len(encoded))
    cursor = codec._Cursor(encoded + b"rest", "test")
    assert cursor.varint() == n and cursor.left == 4


@pytest.mark.parametrize("n", [268435456, 2**32, -1])
def test_varint_refuses_what_four_bytes_cannot_hold(n):
    """Encoding a number above 268435455 (or below 0) raises instead of writing a fifth byte."""
    with pytest.raises(ValueError, match="does not fit"):
        codec.varint(n)


# -- codec: CONNECT ------------------------------------------------------------------------------------
def test_connect_v5_bytes_carry_flags_keepalive_and_session_expiry():
    """v5 CONNECT: level 5, flags clean|username|password, keepalive, property 0x11, then id, user, password."""
    got = codec.connect(
        "c", level=Level.V5, keepalive_s=60, clean=True, username="u", password="p", session_expiry_s=300
    )
    body = (
        b"\x00\x04MQTT\x05"
        + bytes((0x80 | 0x40 | 0x02,))
        + b"\x00\x3c"
        + b"\x05\x11\x00\x00\x01\x2c"
        + b"\x00\x01c"
        + b"\x00\x01u"
        + b"\x00\x01p"
    )
    assert got == b"\x10" + bytes((len(body),)) + body


def test_connect_v5_without_expiry_has_an_empty_property_list_and_no_auth_flags():
    """v5 CONNECT with no session expiry, username or password: flags 0, property length 0."""
    got = codec.connect("abc", level=Level.V5, keepalive_s=0, clean=False)
    assert got == b"\x10\x10\x00\x04MQTT\x05\x00\x00\x00\x00\x00\x03abc"


def test_connect_v311_bytes_have_level_4_and_no_properties():
    """3.1.1 CONNECT: level 4, flags username|password (clean off), keepalive, no property bytes at all."""
    got = codec.connect(
        "c", level=Level.V311, keepalive_s=60, clean=False, username="u", password="p", session_expiry_s=300
    )
    body = b"\x00\x04MQTT\x04" + bytes((0x80 | 0x40,)) + b"\x00\x3c" + b"\x00\x01c\x00\x01u\x00\x01p"
    assert got == b"\x10" + bytes((len(body),)) + body
    assert codec.connect("c", level=Level.V311, keepalive_s=1, clean=True)[9] == 0x02


# -- codec: PacketReader -------------------------------------------------------------------------------
def test_reader_assembles_a_packet_fed_byte_by_byte():
    """A packet split over many frames (one byte each) comes out once, whole, on its last byte."""
    data = push(1)
    reader = PacketReader()
    for b in data[:-1]:
        assert reader.feed(bytes((b,))) == []
    assert reader.pending == len(data) - 1
    (p,) = reader.feed(data[-1:])
    assert p.type == PacketType.PUBLISH and p.flags == 0x02
    assert codec.parse_publish(p, Level.V5).payload == push_payload(1, {})
    assert reader.pending == 0


def test_reader_splits_several_packets_in_one_frame_in_order():
    """One frame holding CONNACK, SUBACK, PINGRESP and half a PUBLISH gives the three, keeping the half."""
    tail = push(2)
    reader = PacketReader()
    got = reader.feed(connack() + suback() + PINGRESP + tail[:5])
    assert [p.type for p in got] == [PacketType.CONNACK, PacketType.SUBACK, PacketType.PINGRESP]
    assert got[2].body == b""
    assert reader.pending == 5
    assert [p.type for p in reader.feed(tail[5:])] == [PacketType.PUBLISH]


def test_reader_waits_when_the_remaining_length_itself_is_split():
    """A two-byte remaining length cut after its first byte waits for the rest, then reads the packet."""
    data = codec.publish("t", b"x" * 200, qos=0, packet_id=None, level=Level.V311)
    assert data[1] & 0x80 and not data[2] & 0x80  # the length takes two bytes
    reader = PacketReader()
    assert reader.feed(data[:2]) == []
    assert reader.pending == 2
    (p,) = reader.feed(data[2:])
    assert codec.parse_publish(p, Level.V311) == codec.Publish("t", b"x" * 200, 0, False, None)


def test_reader_refuses_a_five_byte_remaining_length():
    """Remaining length bytes 0xFF 0xFF 0xFF 0xFF 0x7F (a fifth byte) are a MalformedPacket naming it."""
    with pytest.raises(MalformedPacket, match="remaining length"):
        PacketReader().feed(b"\x30\xff\xff\xff\xff\x7f")


def test_a_publish_shorter_than_its_topic_is_malformed():
    """A PUBLISH whose topic length runs past its end raises MalformedPacket, not an IndexError."""
    (p,) = PacketReader().feed(codec.packet(PacketType.PUBLISH, 0, b"\x00\x10abc"))
    with pytest.raises(MalformedPacket, match="PUBLISH is shorter"):
        codec.parse_publish(p, Level.V5)


def test_an_unknown_v5_property_is_malformed_and_named():
    """A v5 property identifier the specification does not define (0x05) raises MalformedPacket naming 0x05."""
    (p,) = PacketReader().feed(codec.packet(PacketType.CONNACK, 0, b"\x00\x00\x02\x05\x00"))
    with pytest.raises(MalformedPacket, match="unknown property identifier 0x05"):
        codec.parse_connack(p, Level.V5)


def test_v5_properties_of_every_value_type_are_read():
    """CONNACK properties of byte, two-byte, four-byte, string and pair types decode to their values."""
    props = (
        b"\x24\x01"  # maximum QoS: byte
        + b"\x13\x00\x05"  # server keep alive: two bytes
        + b"\x11\x00\x00\x00\x78"  # session expiry: four bytes
        + b"\x12\x00\x02id"  # assigned client id: string
        + b"\x26\x00\x01k\x00\x01v"  # user property: pair
    )
    (p,) = PacketReader().feed(codec.packet(PacketType.CONNACK, 0, b"\x01\x00" + codec.varint(len(props)) + props))
    ack = codec.parse_connack(p, Level.V5)
    assert ack.session_present and ack.code == 0
    assert ack.properties == {0x24: 1, 0x13: 5, 0x11: 120, 0x12: "id", 0x26: ("k", "v")}


# -- the v5 adapter: opening a new session ------------------------------------------------------------
def test_v5_open_is_one_connect_with_a_new_client_id_clean_start_and_username():
    """Mqtt("u1").open() is one CONNECT: client id u1.1, clean start, username u1, keepalive and expiry."""
    adapter = Mqtt("u1")
    frames = adapter.open(NO_TOKEN, resume=False)
    body = b"\x00\x04MQTT\x05\x82\x00\x0f" + b"\x05\x11\x00\x00\x00\x78" + b"\x00\x04u1.1" + b"\x00\x02u1"
    assert frames == [b"\x10" + bytes((len(body),)) + body]
    assert adapter.client_id == "u1.1"


def test_v5_connack_subscribes_and_suback_opens_a_new_session():
    """CONNACK (no session) answers with SUBSCRIBE harness/u1.1/in QoS 1, not Opened; SUBACK QoS 1 opens: NEW."""
    adapter = Mqtt("u1")
    adapter.open(NO_TOKEN, resume=False)
    subscribe = b"\x82\x15\x00\x01\x00\x00\x0f" + TOPIC + b"\x01"
    assert adapter.receive(connack()) == [Send((subscribe,))]
    (got,) = adapter.receive(suback(1))
    assert got == Opened(False, Observation(Kind.WELCOME, True, detail=Detail.NEW))
    assert adapter.session.session == "u1.1" and adapter.session.agent == "u1.1"


@pytest.mark.parametrize("keepalive_s", [15, 4])
def test_v5_timeouts_follow_the_keepalive(keepalive_s):
    """hb_interval_ms is the keepalive and idle_timeout_ms 1.5 keepalives (in ms), from options.keepalive_s."""
    adapter = Mqtt("u1")
    adapter.options.keepalive_s = keepalive_s
    opened(adapter)
    assert adapter.session.hb_interval_ms == keepalive_s * 1000
    assert adapter.session.idle_timeout_ms == 1.5 * keepalive_s * 1000
    assert adapter.heartbeat_interval_ms == keepalive_s * 1000
    assert adapter.session.resume_window_s == 120.0


def test_v5_server_keep_alive_overrides_the_clients():
    """A CONNACK's Server Keep Alive (0x13) replaces the client's keepalive in both timeouts."""
    adapter = Mqtt("u1")
    adapter.open(NO_TOKEN, resume=False)
    adapter.receive(connack(props={codec.Prop.SERVER_KEEP_ALIVE: 5}))
    adapter.receive(suback())
    assert adapter.session.hb_interval_ms == 5000
    assert adapter.session.idle_timeout_ms == 7500


def test_v5_suback_refusal_fails_the_open():
    """A SUBACK whose reason code is 0x80 (unspecified error) is Failed, not Opened."""
    adapter = Mqtt("u1")
    adapter.open(NO_TOKEN, resume=False)
    adapter.receive(connack())
    (got,) = adapter.receive(suback(0x80))
    assert isinstance(got, Failed) and "0x80" in got.code and got.reason is CloseReason.UNAUTHORIZED


def test_password_option_and_credentials_fill_the_password():
    """--password (options.password), else the credentials' token, is sent as the CONNECT password (flag 0x40)."""
    adapter = Mqtt("u1")
    (frame,) = adapter.open(Credentials("tok"), resume=False)
    assert frame[9] == 0xC2 and frame.endswith(b"\x00\x02u1\x00\x03tok")
    adapter.options.password = "pw"
    (frame,) = adapter.open(Credentials("tok"), resume=False)
    assert frame.endswith(b"\x00\x02u1\x00\x02pw")


def test_clean_start_never_leaves_clean_start_off_on_a_first_connect():
    """--mqtt-clean-start never: even a new session's first CONNECT has clean start off."""
    adapter = Mqtt("u1")
    adapter.options.clean_start = CleanStart.NEVER
    (frame,) = adapter.open(NO_TOKEN, resume=False)
    assert frame[9] == 0x80


# -- resume -------------------------------------------------------------------------------------------
def test_resume_keeps_the_client_id_with_clean_start_off():
    """open(resume=True) after an open reuses client id u1.1 with clean start off; after forget() a new id."""
    adapter = Mqtt("u1")
    opened(adapter)
    (frame,) = adapter.open(NO_TOKEN, resume=True)
    assert frame[9] == 0x80 and b"\x00\x04u1.1\x00\x02u1" in frame
    assert adapter.client_id == "u1.1"
    adapter.forget()
    (frame,) = adapter.open(NO_TOKEN, resume=True)
    assert frame[9] == 0x82 and adapter.client_id == "u1.2"


def test_resume_with_nothing_to_resume_opens_a_new_session():
    """open(resume=True) before any session is a new session's CONNECT (clean start) and opens NEW."""
    adapter = Mqtt("u1")
    (frame,) = adapter.open(NO_TOKEN, resume=True)
    assert frame[9] == 0x82
    adapter.receive(connack())
    (got,) = adapter.receive(suback())
    assert got.observation.detail == Detail.NEW


def test_resume_with_session_present_replays_the_queue_then_marks_the_end():
    """CONNACK session present 1: Opened RESUMED + PINGREQ; queued PUBLISHes each PUBACKed and NOTIFY; the
    PINGRESP after them is the REPLAY mark, the next one answers heartbeat(7) (FIFO)."""
    adapter = Mqtt("u1")
    opened(adapter)
    assert adapter.receive(push(1, packet_id=9)) == [Send((codec.puback(9),)), received(1)]
    assert adapter.closed(None, "", 0) is CloseReason.LOST
    adapter.open(NO_TOKEN, resume=True)
    got = adapter.receive(connack(present=True))
    assert got == [Opened(True, Observation(Kind.WELCOME, True, detail=Detail.RESUMED)), Send((PINGREQ,))]
    assert adapter.receive(push(2, packet_id=5)) == [Send((b"\x40\x02\x00\x05",)), received(2)]
    assert adapter.receive(push(3, packet_id=6)) == [Send((b"\x40\x02\x00\x06",)), received(3)]
    assert adapter.heartbeat(7) == [PINGREQ]
    (mark,) = adapter.receive(PINGRESP)
    assert mark == Observation(Kind.REPLAY, True, seq=3)
    assert adapter.session.replayed_through == 3
    assert adapter.receive(PINGRESP) == [HeartbeatAnswered(7)]
    assert adapter.receive(PINGRESP) == []  # nothing outstanding: ignored


def test_resume_without_session_present_subscribes_again_and_opens_new_none():
    """Asked to resume but CONNACK session present 0: SUBSCRIBE again, then Opened(False) detail NEW_NONE."""
    adapter = Mqtt("u1")
    opened(adapter)
    adapter.receive(push(1))
    adapter.open(NO_TOKEN, resume=True)
    (send,) = adapter.receive(connack(present=False))
    assert isinstance(send, Send) and send.frames[0][0] == 0x82 and TOPIC in send.frames[0]
    (got,) = adapter.receive(suback())
    assert got == Opened(False, Observation(Kind.WELCOME, True, detail=Detail.NEW_NONE))
    assert adapter.session.last_seq == 0  # a new session numbers from 1 again
    assert adapter.receive(push(1)) == [Send((codec.puback(1),)), received(1)]


def test_session_present_on_a_fresh_connect_is_not_a_resume():
    """CONNACK session present 1 to a connect that did not ask to resume still subscribes (not Opened)."""
    adapter = Mqtt("u1")
    adapter.open(NO_TOKEN, resume=False)
    (send,) = adapter.receive(connack(present=True))
    assert isinstance(send, Send) and send.frames[0][0] == 0x82


# -- delivery semantics --------------------------------------------------------------------------------
def test_a_dup_redelivery_of_a_received_seq_is_only_acknowledged():
    """PUBLISH with DUP and a seq already received: the PUBACK only, no observation, not delivered twice."""
    adapter = Mqtt("u1")
    opened(adapter)
    adapter.receive(push(1, packet_id=3))
    assert adapter.receive(push(1, packet_id=3, dup=True)) == [Send((codec.puback(3),))]
    assert adapter.session.pushes == {1}


def test_a_dup_flag_on_a_new_seq_is_delivered():
    """DUP on a seq not received yet (the first copy was lost) is a normal delivery."""
    adapter = Mqtt("u1")
    opened(adapter)
    assert adapter.receive(push(1, dup=True)) == [Send((codec.puback(1),)), received(1)]


def test_the_same_seq_without_dup_is_a_duplicate_frame():
    """A seq received again without DUP: PUBACK plus DUP_FRAME ok=False (detail push), not delivered."""
    adapter = Mqtt("u1")
    opened(adapter)
    adapter.receive(push(1, packet_id=1))
    got = adapter.receive(push(1, packet_id=2))
    assert got == [Send((codec.puback(2),)), Observation(Kind.DUP_FRAME, False, seq=1, detail=Detail.PUSH)]


def test_a_skipped_seq_is_a_gap_and_still_delivered():
    """seq 3 after seq 1: CHUNK_GAP detail SEQ_GAP, then the NOTIFY."""
    adapter = Mqtt("u1")
    opened(adapter)
    adapter.receive(push(1))
    got = adapter.receive(push(3))
    assert got == [
        Send((codec.puback(3),)),
        Observation(Kind.CHUNK_GAP, False, seq=3, detail=Detail.SEQ_GAP),
        received(3),
    ]


@pytest.mark.parametrize("payload", [b"not json", b"[1, 2]", b'{"seq": 1}', b"\xff\xfe"])
def test_a_payload_that_is_not_a_push_is_an_error_but_acknowledged(payload):
    """A payload not JSON (or without seq and id) still gets its PUBACK, and an ERROR detail BAD_FRAME."""
    adapter = Mqtt("u1")
    opened(adapter)
    ack, err = adapter.receive(push(1, packet_id=4, payload=payload))
    assert ack == Send((codec.puback(4),))
    assert err.kind is Kind.ERROR and not err.ok and err.detail == Detail.BAD_FRAME


def test_a_qos0_publish_is_delivered_without_a_puback():
    """A QoS 0 PUBLISH has no packet id and needs no PUBACK: only the NOTIFY."""
    adapter = Mqtt("u1")
    opened(adapter)
    frame = codec.publish("harness/u1.1/in", push_payload(1, {}), qos=0, packet_id=None, level=Level.V5)
    assert adapter.receive(frame) == [received(1)]


def test_packets_split_and_joined_across_frames_reach_the_adapter_whole():
    """Two PUBLISHes cut at an arbitrary byte across two frames give both deliveries, in order."""
    adapter = Mqtt("u1")
    opened(adapter)
    data = push(1) + push(2)
    first, second = adapter.receive(data[:7]), adapter.receive(data[7:])
    assert first == [] and second == [Send((codec.puback(1),)), received(1), Send((codec.puback(2),)), received(2)]


# -- closes -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reason", "name", "close"),
    [
        (0x8E, "session taken over", CloseReason.TAKEN_OVER),
        (0x8B, "server shutting down", CloseReason.RESTARTING),
        (0x8D, "keep alive timeout", CloseReason.IDLE_REAPED),
    ],
)
def test_a_v5_disconnect_names_the_close(reason, name, close):
    """DISCONNECT with a reason code: Backoff(closing) with that reason, and closed() afterwards returns it."""
    adapter = Mqtt("u1")
    opened(adapter)
    (got,) = adapter.receive(disconnect(reason))
    assert got == Backoff(0.0, f"disconnect 0x{reason:02x} {name}", close, closing=True)
    assert adapter.closed(None, "", 0) is close
    adapter.open(NO_TOKEN, resume=True)
    assert adapter.closed(None, "", 0) is CloseReason.LOST  # a new connection forgets the last one's DISCONNECT


def test_a_disconnect_with_only_a_reason_code_is_read():
    """A v5 DISCONNECT of remaining length 1 (reason, no properties) is understood."""
    adapter = Mqtt("u1")
    opened(adapter)
    (got,) = adapter.receive(codec.packet(PacketType.DISCONNECT, 0, b"\x8e"))
    assert got.reason is CloseReason.TAKEN_OVER


def test_an_unannounced_close_after_the_idle_timeout_is_a_reap_and_shorter_is_lost():
    """No DISCONNECT: silent >= 0.95 x idle_timeout_ms is IDLE_REAPED, shorter is LOST."""
    adapter = Mqtt("u1")
    opened(adapter)
    idle = adapter.session.idle_timeout_ms
    assert idle == 22_500
    assert adapter.closed(None, "", idle * REAP_TOLERANCE) is CloseReason.IDLE_REAPED
    assert adapter.closed(None, "", 21_375) is CloseReason.IDLE_REAPED
    assert adapter.closed(None, "", 21_374) is CloseReason.LOST
    assert adapter.closed(None, "", 0) is CloseReason.LOST


def test_with_keepalive_zero_an_unannounced_close_is_always_lost():
    """Keepalive 0 (no idle timeout): any silence before an unannounced close is LOST, never a reap."""
    adapter = Mqtt("u1")
    adapter.options.keepalive_s = 0
    (frame,) = adapter.open(NO_TOKEN, resume=False)
    assert frame[10:12] == b"\x00\x00"
    adapter.receive(connack())
    adapter.receive(suback())
    assert adapter.session.idle_timeout_ms == 0
    assert adapter.closed(None, "", 10**9) is CloseReason.LOST


@pytest.mark.parametrize(
    ("cls", "code", "failed"),
    [
        (Mqtt, 0x86, Failed("connack 0x86 bad username or password", CloseReason.UNAUTHORIZED)),
        (Mqtt311, 4, Failed("connack 0x86 bad username or password", CloseReason.UNAUTHORIZED)),
        (Mqtt, 0x84, Failed("connack 0x84 unsupported protocol version", CloseReason.PROTOCOL_ERROR)),
        (Mqtt311, 1, Failed("connack 0x84 unsupported protocol version", CloseReason.PROTOCOL_ERROR)),
        (Mqtt, 0x87, Failed("connack 0x87 not authorized", CloseReason.UNAUTHORIZED)),
        (Mqtt, 0xA0, Failed("connack 0xa0", CloseReason.OTHER)),
    ],
)
def test_a_connack_refusal_fails_with_the_reason(cls, code, failed):
    """A refusing CONNACK (v5 reason code, or 3.1.1 return code mapped to it) is Failed naming it, and the
    connection's close takes that reason."""
    adapter = cls("u1")
    adapter.open(NO_TOKEN, resume=False)
    assert adapter.receive(connack(code, level=adapter.level)) == [failed]
    assert adapter.closed(None, "", 0) is failed.reason


# -- violations ---------------------------------------------------------------------------------------
def test_a_text_frame_is_a_violation():
    """A text WebSocket message is a ProtocolViolation: MQTT over WebSocket is binary."""
    adapter = Mqtt("u1")
    adapter.open(NO_TOKEN, resume=False)
    with pytest.raises(ProtocolViolation, match="binary"):
        adapter.receive("text")


def test_a_malformed_remaining_length_is_a_violation():
    """A frame whose remaining length runs to a fifth byte is a ProtocolViolation saying malformed."""
    adapter = Mqtt("u1")
    adapter.open(NO_TOKEN, resume=False)
    with pytest.raises(ProtocolViolation, match="malformed"):
        adapter.receive(b"\x20\xff\xff\xff\xff\x7f")


def test_a_malformed_packet_body_is_a_violation():
    """A PUBLISH shorter than its topic, inside a well-framed packet, is a ProtocolViolation saying malformed."""
    adapter = Mqtt("u1")
    opened(adapter)
    with pytest.raises(ProtocolViolation, match="malformed"):
        adapter.receive(codec.packet(PacketType.PUBLISH, 0x02, b"\x00\x10abc"))


@pytest.mark.parametrize("kind", [PacketType.CONNECT, PacketType.SUBSCRIBE, PacketType.PINGREQ, PacketType.PUBREL])
def test_a_packet_the_broker_must_not_send_is_a_violation(kind):
    """CONNECT (type 1) or another client-only packet from the broker is a ProtocolViolation naming the type."""
    adapter = Mqtt("u1")
    adapter.open(NO_TOKEN, resume=False)
    with pytest.raises(ProtocolViolation, match=f"unexpected packet type {int(kind)}"):
        adapter.receive(codec.packet(kind, 0, b""))


# -- MQTT 3.1.1 ---------------------------------------------------------------------------------------
def test_v311_connect_has_level_4_and_never_clean_session():
    """Mqtt311's CONNECT: protocol level 4, clean session off on a session's first connect and on a resume."""
    adapter = Mqtt311("u1")
    (first,) = adapter.open(NO_TOKEN, resume=False)
    body = b"\x00\x04MQTT\x04\x80\x00\x0f" + b"\x00\x04u1.1" + b"\x00\x02u1"
    assert first == b"\x10" + bytes((len(body),)) + body
    adapter.receive(connack(level=Level.V311))
    adapter.receive(suback(level=Level.V311))
    (again,) = adapter.open(NO_TOKEN, resume=True)
    assert again == first


def test_v311_subscribe_and_publish_carry_no_properties():
    """Mqtt311's SUBSCRIBE has no property length; a 3.1.1 PUBLISH (no properties) is read and delivered."""
    adapter = Mqtt311("u1")
    adapter.open(NO_TOKEN, resume=False)
    subscribe = b"\x82\x14\x00\x01\x00\x0f" + TOPIC + b"\x01"
    assert adapter.receive(connack(level=Level.V311)) == [Send((subscribe,))]
    (got,) = adapter.receive(suback(level=Level.V311))
    assert got == Opened(False, Observation(Kind.WELCOME, True, detail=Detail.NEW))
    assert adapter.session.resume_window_s == 0.0
    frame = push(1, packet_id=2, level=Level.V311)
    assert frame[2 + 2 + 15 + 2 :] == push_payload(1, {})  # topic, packet id, then the payload straight away
    assert adapter.receive(frame) == [Send((codec.puback(2),)), received(1)]


def test_v311_resume_with_session_present():
    """Mqtt311 resume: CONNACK session present 1 gives Opened(True) RESUMED and the replay PINGREQ."""
    adapter = Mqtt311("u1")
    opened(adapter)
    adapter.open(NO_TOKEN, resume=True)
    got = adapter.receive(connack(present=True, level=Level.V311))
    assert got == [Opened(True, Observation(Kind.WELCOME, True, detail=Detail.RESUMED)), Send((PINGREQ,))]


def test_leave_ends_the_session_on_v5_and_the_connection_on_v311():
    """v5 leave() is DISCONNECT reason 0 with session expiry 0 (the session ends too); 3.1.1 has no such field."""
    assert Mqtt("u1").leave() == [b"\xe0\x07\x00\x05\x11\x00\x00\x00\x00"]
    assert Mqtt311("u1").leave() == [b"\xe0\x00"]


# -- the publisher ------------------------------------------------------------------------------------
def test_publisher_connects_publishes_waits_for_every_puback_then_disconnects():
    """MqttPublisher: CONNECT clean, as the session's user; after CONNACK two QoS 1 PUBLISHes to the session's
    topic (seq 1, 2); after both PUBACKs done, acknowledged [1, 2], and a DISCONNECT."""
    publisher = MqttPublisher(Mqtt("u1"), "u1.1", [(1, {}), (2, {})], "1")
    (frame,) = publisher.start()
    body = b"\x00\x04MQTT\x05\x82\x00\x1e\x00" + b"\x00\x09u1.1.pub1" + b"\x00\x02u1"
    assert frame == b"\x10" + bytes((len(body),)) + body
    frames = publisher.receive(connack())
    assert len(frames) == 2
    for packet_id, frame in enumerate(frames, 1):
        (p,) = PacketReader().feed(frame)
        msg = codec.parse_publish(p, Level.V5)
        assert (msg.topic, msg.qos, msg.packet_id, msg.dup) == ("harness/u1.1/in", 1, packet_id, False)
        assert orjson.loads(msg.payload)["seq"] == packet_id
    assert publisher.receive(codec.puback(1)) == []
    assert not publisher.done and publisher.acknowledged == [1]
    assert publisher.receive(codec.puback(2)) == [b"\xe0\x00"]
    assert publisher.done and publisher.acknowledged == [1, 2] and publisher.error == ""


def test_v311_publisher_publishes_without_properties():
    """A 3.1.1 publisher's PUBLISH is topic, packet id, payload: no property length."""
    publisher = MqttPublisher(Mqtt311("u1"), "u1.1", [(4, {"n": 4})], "2")
    (frame,) = publisher.start()
    assert frame[8] == 4 and frame[9] == 0x82  # level 4; clean session, username
    (pub,) = publisher.receive(connack(level=Level.V311))
    body = b"\x00\x0f" + TOPIC + b"\x00\x01" + push_payload(4, {"n": 4})
    assert pub == b"\x32" + bytes((len(body),)) + body


def test_publisher_refused_by_connack_stops_with_the_reason():
    """A refusing CONNACK ends the publisher: done, nothing acknowledged, an error naming the reason."""
    publisher = MqttPublisher(Mqtt("u1"), "u1.1", [(1, {})], "1")
    publisher.start()
    assert publisher.receive(connack(0x87)) == []
    assert publisher.done and publisher.acknowledged == []
    assert "not authorized" in publisher.error and "0x87" in publisher.error


def test_publisher_stops_on_a_broker_disconnect():
    """A DISCONNECT from the broker to the publisher ends it with an error naming the reason."""
    publisher = MqttPublisher(Mqtt("u1"), "u1.1", [(1, {})], "1")
    publisher.start()
    publisher.receive(connack())
    assert publisher.receive(disconnect(0x8B)) == []
    assert publisher.done and "server shutting down" in publisher.error


def test_publisher_does_not_count_a_refusing_v5_puback_as_taken():
    """A v5 PUBACK with reason 0x87 (not authorized) means the broker did not take the push: not acknowledged."""
    publisher = MqttPublisher(Mqtt("u1"), "u1.1", [(1, {})], "1")
    publisher.start()
    publisher.receive(connack())
    publisher.receive(codec.packet(PacketType.PUBACK, 0, b"\x00\x01\x87" + codec.properties({})))
    assert publisher.acknowledged == [] and publisher.refused == [1]
    assert publisher.done and "not authorized" in publisher.error


def test_publisher_honours_the_brokers_receive_maximum():
    """With CONNACK Receive Maximum 1, the publisher has one PUBLISH in flight, the next after its PUBACK."""
    publisher = MqttPublisher(Mqtt("u1"), "u1.1", [(1, {}), (2, {})], "1")
    publisher.start()
    assert len(publisher.receive(connack(props={codec.Prop.RECEIVE_MAXIMUM: 1}))) == 1
    (second,) = publisher.receive(codec.puback(1))
    assert codec.parse_publish(PacketReader().feed(second)[0], Level.V5).packet_id == 2


# -- loading ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "cls"), [("mqtt", Mqtt), ("mqtt311", Mqtt311)])
def test_load_finds_the_mqtt_adapters_with_their_capabilities(name, cls):
    """load("mqtt") / load("mqtt311") give the classes; capabilities resume, push, heartbeat."""
    assert protocols.load(name) is cls
    assert cls.capabilities == {Capability.RESUME, Capability.PUSH, Capability.HEARTBEAT}
    assert cls.name == name and cls.uses_token_endpoint is False
