"""MQTT 3.1.1 and 5 control packets, encoded and decoded: bytes only, no sockets, no session.

The packets the harness speaks as a client (CONNECT, SUBSCRIBE, PUBLISH at QoS 0
and 1, PUBACK, PINGREQ, DISCONNECT) and the ones a broker sends back (CONNACK,
SUBACK, PUBLISH, PUBACK, PINGRESP, DISCONNECT, AUTH). Over WebSocket a packet may
span frames and a frame may hold several packets: :class:`PacketReader` takes the
bytes of each frame as they come and yields whole packets.

Anything that breaks the format (a remaining length over four bytes, a property
of an unknown identifier, a packet shorter than its fields) raises
:class:`MalformedPacket` naming what is wrong.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple

#: The largest remaining length MQTT can express (four varint bytes).
MAX_REMAINING_LENGTH = 268_435_455


class PacketType(IntEnum):
    """The high nibble of a packet's first byte."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


class Level(IntEnum):
    """The protocol level in CONNECT."""

    V311 = 4
    V5 = 5


class Reason(IntEnum):
    """The MQTT 5 reason codes a broker ends or refuses a connection with (CONNACK, DISCONNECT)."""

    SUCCESS = 0x00
    UNSPECIFIED = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_ID_NOT_VALID = 0x85
    BAD_USERNAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    SERVER_SHUTTING_DOWN = 0x8B
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    PACKET_TOO_LARGE = 0x95
    QUOTA_EXCEEDED = 0x97
    ADMINISTRATIVE_ACTION = 0x98
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    CONNECTION_RATE_EXCEEDED = 0x9F


#: MQTT 3.1.1 CONNACK return codes (section 3.2.2.3), by name.
V311_CONNACK = {
    0: "accepted",
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}
#: ... and the MQTT 5 reason code that means the same.
V311_AS_REASON = {
    1: Reason.UNSUPPORTED_PROTOCOL_VERSION,
    2: Reason.CLIENT_ID_NOT_VALID,
    3: Reason.SERVER_UNAVAILABLE,
    4: Reason.BAD_USERNAME_OR_PASSWORD,
    5: Reason.NOT_AUTHORIZED,
}


class Prop(IntEnum):
    """MQTT 5 property identifiers the harness reads or writes."""

    SESSION_EXPIRY_INTERVAL = 0x11
    ASSIGNED_CLIENT_ID = 0x12
    SERVER_KEEP_ALIVE = 0x13
    REASON_STRING = 0x1F
    RECEIVE_MAXIMUM = 0x21


# Every MQTT 5 property identifier by the type of its value (MQTT 5, section 2.2.2.2).
_BYTE = frozenset({0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A})
_TWO = frozenset({0x13, 0x21, 0x22, 0x23})
_FOUR = frozenset({0x02, 0x11, 0x18, 0x27})
_VARINT = frozenset({0x0B})
_STRING = frozenset({0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F})
_BINARY = frozenset({0x09, 0x16})
_PAIR = frozenset({0x26})

_PINGREQ = bytes((PacketType.PINGREQ << 4, 0))
_DISCONNECT_V311 = bytes((PacketType.DISCONNECT << 4, 0))


class MalformedPacket(ValueError):
    """Bytes that are not a well-formed MQTT packet; the message says what is wrong."""


class Packet(NamedTuple):
    """One whole control packet: its type, the low nibble of its first byte, and the rest (remaining length)."""

    type: int
    flags: int
    body: bytes


class Connack(NamedTuple):
    session_present: bool
    code: int  #: 0 accepted; a v3.1.1 return code or a v5 reason code
    properties: dict


class Publish(NamedTuple):
    topic: str
    payload: bytes
    qos: int
    dup: bool
    packet_id: int | None


class Disconnect(NamedTuple):
    reason: int
    properties: dict


# -- encoding -------------------------------------------------------------------------------------------
def varint(n: int) -> bytes:
    """A variable byte integer (7 bits a byte, least significant first)."""
    if not 0 <= n <= MAX_REMAINING_LENGTH:
        raise ValueError(f"{n} does not fit a variable byte integer")
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def packet(kind: PacketType, flags: int, body: bytes) -> bytes:
    return bytes(((kind << 4) | flags,)) + varint(len(body)) + body


def properties(props: dict[int, int]) -> bytes:
    """Integer-valued MQTT 5 properties (the only ones a client here sends), with their length."""
    out = bytearray()
    for ident, value in props.items():
        out.append(ident)
        if ident in _FOUR:
            out += struct.pack("!I", value)
        elif ident in _TWO:
            out += struct.pack("!H", value)
        elif ident in _BYTE:
            out.append(value)
        else:
            raise ValueError(f"property 0x{ident:02x} is not an integer property")
    return varint(len(out)) + bytes(out)


def connect(
    client_id: str,
    *,
    level: Level,
    keepalive_s: int,
    clean: bool,
    username: str = "",
    password: str = "",
    session_expiry_s: int | None = None,
) -> bytes:
    """CONNECT: a v5 ``session_expiry_s`` keeps the session that long after the connection ends."""
    flags = (0x02 if clean else 0) | (0x80 if username else 0) | (0x40 if password else 0)
    body = string("MQTT") + bytes((level, flags)) + struct.pack("!H", keepalive_s)
    if level is Level.V5:
        body += properties({Prop.SESSION_EXPIRY_INTERVAL: session_expiry_s} if session_expiry_s else {})
    body += string(client_id)
    if username:
        body += string(username)
    if password:
        body += string(password)
    return packet(PacketType.CONNECT, 0, body)


def subscribe(packet_id: int, topics: list[tuple[str, int]], level: Level) -> bytes:
    body = struct.pack("!H", packet_id) + (properties({}) if level is Level.V5 else b"")
    for topic, qos in topics:
        body += string(topic) + bytes((qos,))
    return packet(PacketType.SUBSCRIBE, 0x02, body)


def publish(topic: str, payload: bytes, *, qos: int, packet_id: int | None, level: Level, dup: bool = False) -> bytes:
    body = string(topic) + (struct.pack("!H", packet_id) if qos else b"")
    if level is Level.V5:
        body += properties({})
    return packet(PacketType.PUBLISH, (0x08 if dup else 0) | (qos << 1), body + payload)


def puback(packet_id: int) -> bytes:
    return packet(PacketType.PUBACK, 0, struct.pack("!H", packet_id))


def pingreq() -> bytes:
    return _PINGREQ


def disconnect(level: Level, reason: int = 0, *, end_session: bool = False) -> bytes:
    """DISCONNECT; v5 ``end_session``: with a session expiry of 0, so that the broker drops the session too."""
    if level is Level.V5 and (reason or end_session):
        props = properties({Prop.SESSION_EXPIRY_INTERVAL: 0} if end_session else {})
        return packet(PacketType.DISCONNECT, 0, bytes((reason,)) + props)
    return _DISCONNECT_V311


# -- decoding -------------------------------------------------------------------------------------------
class PacketReader:
    """Whole packets out of a byte stream fed in pieces (WebSocket frames of any size)."""

    __slots__ = ("_buffer", "max_size")

    def __init__(self, max_size: int = MAX_REMAINING_LENGTH) -> None:
        self._buffer = bytearray()
        self.max_size = max_size

    def feed(self, data: bytes) -> list[Packet]:
        """Add ``data``; every packet now complete, in order (an incomplete one waits for more)."""
        buf = self._buffer
        buf += data
        out = []
        start = 0
        while len(buf) - start >= 2:
            length, header = _remaining_length(buf, start + 1)
            if length is None:
                break  # the length itself is not complete yet
            if length > self.max_size:
                raise MalformedPacket(f"remaining length {length} is over the limit of {self.max_size} bytes")
            end = start + 1 + header + length
            if end > len(buf):
                break
            first = buf[start]
            out.append(Packet(first >> 4, first & 0x0F, bytes(buf[start + 1 + header : end])))
            start = end
        del buf[:start]
        return out

    @property
    def pending(self) -> int:
        """Bytes of a packet not complete yet."""
        return len(self._buffer)


def _remaining_length(buf: bytearray, at: int) -> tuple[int | None, int]:
    """(remaining length, bytes it took) at ``buf[at:]``; (None, 0) when the bytes are not all there."""
    value = 0
    for i in range(4):
        if at + i >= len(buf):
            return None, 0
        byte = buf[at + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, i + 1
    raise MalformedPacket("remaining length longer than four bytes")


class _Cursor:
    """Reads a packet's fields in order; running past its end is a malformed packet."""

    __slots__ = ("data", "at", "what")

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.at, self.what = data, 0, what

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise MalformedPacket(f"{self.what} is shorter than its fields ({len(self.data)} bytes)")
        chunk = self.data[self.at : self.at + n]
        self.at += n
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("!H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("!I", self.take(4))[0]

    def varint(self) -> int:
        value = 0
        for i in range(4):
            byte = self.byte()
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                return value
        raise MalformedPacket(f"{self.what}: a variable byte integer longer than four bytes")

    def string(self) -> str:
        raw = self.take(self.u16())
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise MalformedPacket(f"{self.what}: a string that is not UTF-8") from None

    def rest(self) -> bytes:
        chunk = self.data[self.at :]
        self.at = len(self.data)
        return chunk

    @property
    def left(self) -> int:
        return len(self.data) - self.at

    def properties(self) -> dict[int, object]:
        end = self.varint() + self.at
        if end > len(self.data):
            raise MalformedPacket(f"{self.what}: properties longer than the packet")
        props: dict[int, object] = {}
        while self.at < end:
            ident = self.varint()
            if ident in _BYTE:
                value: object = self.byte()
            elif ident in _TWO:
                value = self.u16()
            elif ident in _FOUR:
                value = self.u32()
            elif ident in _VARINT:
                value = self.varint()
            elif ident in _STRING:
                value = self.string()
            elif ident in _BINARY:
                value = self.take(self.u16())
            elif ident in _PAIR:
                value = (self.string(), self.string())
            else:
                raise MalformedPacket(f"{self.what}: unknown property identifier 0x{ident:02x}")
            props[ident] = value
        return props


def parse_connack(p: Packet, level: Level) -> Connack:
    c = _Cursor(p.body, "CONNACK")
    flags, code = c.byte(), c.byte()
    props = c.properties() if level is Level.V5 and c.left else {}
    return Connack(bool(flags & 0x01), code, props)


def parse_publish(p: Packet, level: Level) -> Publish:
    qos = (p.flags >> 1) & 0x03
    if qos == 3:
        raise MalformedPacket("PUBLISH with QoS 3")
    c = _Cursor(p.body, "PUBLISH")
    topic = c.string()
    packet_id = c.u16() if qos else None
    if level is Level.V5:
        c.properties()
    return Publish(topic, c.rest(), qos, bool(p.flags & 0x08), packet_id)


def parse_packet_id(p: Packet, what: str) -> int:
    return _Cursor(p.body, what).u16()


def parse_puback(p: Packet, level: Level) -> tuple[int, int]:
    """(packet id, reason code): v5 may add a reason (0 when absent); 3.1.1 has none."""
    c = _Cursor(p.body, "PUBACK")
    packet_id = c.u16()
    return packet_id, (c.byte() if level is Level.V5 and c.left else 0)


def parse_suback(p: Packet, level: Level) -> tuple[int, list[int]]:
    """(packet id, granted QoS or failure reason per topic)."""
    c = _Cursor(p.body, "SUBACK")
    packet_id = c.u16()
    if level is Level.V5:
        c.properties()
    return packet_id, list(c.rest())


def parse_disconnect(p: Packet, level: Level) -> Disconnect:
    if level is not Level.V5 or not p.body:
        return Disconnect(Reason.SUCCESS, {})
    c = _Cursor(p.body, "DISCONNECT")
    reason = c.byte()
    return Disconnect(reason, c.properties() if c.left else {})


def reason_name(code: int) -> str:
    """``0x8e session taken over``: a reason code as people read it."""
    try:
        return f"0x{code:02x} {Reason(code).name.lower().replace('_', ' ')}"
    except ValueError:
        return f"0x{code:02x}"
