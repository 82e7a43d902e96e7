"""Engine.IO 4 and Socket.IO 5 packets over WebSocket, as pure functions (no sockets, no clock).

Engine.IO over WebSocket carries one packet per text frame: a type digit, then its
payload (``0{...}`` open, ``2`` ping, ``3`` pong, ``4...`` message, ``1`` close,
``6`` noop). A Socket.IO packet rides in a message: a type digit, an optional
namespace (``/chat,``), an optional ack id (digits), then JSON (``40{"token": ...}``,
``42["event", ...]``, ``4317[{...}]``, ``44{"message": ...}``). Specifications:
https://github.com/socketio/engine.io-protocol (v4) and socket.io-protocol (v5).

Every parser raises :class:`MalformedPacket` with a message naming what is wrong.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

import orjson

#: The query that asks for Engine.IO 4 over WebSocket only (no HTTP long-polling first).
QUERY = "EIO=4&transport=websocket"
DEFAULT_NAMESPACE = "/"


class EngineType(IntEnum):
    """Engine.IO 4 packet types."""

    OPEN = 0  #: the server's handshake: sid, pingInterval, pingTimeout, maxPayload
    CLOSE = 1  #: the transport is about to close
    PING = 2  #: the server's heartbeat (Engine.IO 4: the server pings, the client answers)
    PONG = 3
    MESSAGE = 4  #: carries a Socket.IO packet
    UPGRADE = 5
    NOOP = 6


class SocketType(IntEnum):
    """Socket.IO 5 packet types."""

    CONNECT = 0  #: client: join a namespace (auth payload); server: joined (``{"sid", "pid"}``)
    DISCONNECT = 1
    EVENT = 2  #: ``["name", *args]``, with an ack id when the sender wants an answer
    ACK = 3  #: the answer to an event with that ack id
    CONNECT_ERROR = 4  #: the namespace refused the connection (a middleware's error: ``{"message", "data"}``)
    BINARY_EVENT = 5
    BINARY_ACK = 6


class MalformedPacket(ValueError):
    """A frame that is not a valid Engine.IO / Socket.IO packet; the message says how."""


class Handshake(NamedTuple):
    """The Engine.IO open packet's fields."""

    sid: str
    ping_interval_ms: int
    ping_timeout_ms: int
    max_payload: int


class Packet(NamedTuple):
    """A Socket.IO packet: its type, namespace, ack id (None when not asked) and JSON data (None when none)."""

    type: SocketType
    namespace: str = DEFAULT_NAMESPACE
    ack_id: int | None = None
    data: object = None


PONG = str(int(EngineType.PONG))


def engine_packet(frame: str) -> tuple[EngineType, str]:
    """An Engine.IO packet's type and payload."""
    if not frame:
        raise MalformedPacket("an empty frame (an Engine.IO packet starts with its type digit)")
    try:
        kind = EngineType(int(frame[0]))
    except ValueError:
        raise MalformedPacket(f"unknown Engine.IO packet type {frame[0]!r} in {frame[:40]!r}") from None
    return kind, frame[1:]


def handshake(payload: str) -> Handshake:
    """The open packet's payload, checked: Engine.IO 3 servers (no ``maxPayload``) are named as such."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise MalformedPacket(f"the Engine.IO open packet is not JSON: {payload[:80]!r}") from None
    if type(body) is not dict:
        raise MalformedPacket(f"the Engine.IO open packet is not a JSON object: {payload[:80]!r}")
    missing = [k for k in ("sid", "pingInterval", "pingTimeout") if k not in body]
    if missing:
        raise MalformedPacket(f"the Engine.IO open packet lacks {', '.join(missing)}: {payload[:120]!r}")
    if "maxPayload" not in body:
        raise MalformedPacket(
            "the server speaks Engine.IO 3 (its open packet has no maxPayload; Socket.IO 2 and older): "
            "this adapter speaks Engine.IO 4 (Socket.IO 3 and later)"
        )
    numbers = {k: body[k] for k in ("pingInterval", "pingTimeout", "maxPayload")}
    bad = [k for k, v in numbers.items() if type(v) is not int or v < 0]
    if bad or not isinstance(body["sid"], str):
        raise MalformedPacket(f"the Engine.IO open packet has a bad {', '.join(bad) or 'sid'}: {payload[:120]!r}")
    return Handshake(body["sid"], numbers["pingInterval"], numbers["pingTimeout"], numbers["maxPayload"])


def socket_packet(payload: str) -> Packet:
    """A Socket.IO packet from an Engine.IO message's payload."""
    if not payload:
        raise MalformedPacket("an empty Engine.IO message (a Socket.IO packet starts with its type digit)")
    try:
        kind = SocketType(int(payload[0]))
    except ValueError:
        raise MalformedPacket(f"unknown Socket.IO packet type {payload[0]!r} in {payload[:40]!r}") from None
    i, n = 1, len(payload)
    if kind in (SocketType.BINARY_EVENT, SocketType.BINARY_ACK):
        raise MalformedPacket(f"a binary Socket.IO packet ({kind.name}): binary attachments are not supported")
    namespace = DEFAULT_NAMESPACE
    if i < n and payload[i] == "/":
        end = payload.find(",", i)
        if end < 0:
            end = n  # a namespace and nothing else: "41/chat"
        namespace, i = payload[i:end], end + 1
    start = i
    while i < n and payload[i].isdigit():
        i += 1
    ack_id = int(payload[start:i]) if i > start else None
    data = None
    if i < n:
        try:
            data = orjson.loads(payload[i:])
        except orjson.JSONDecodeError:
            raise MalformedPacket(f"the Socket.IO {kind.name} packet's data is not JSON: {payload[:80]!r}") from None
    if kind in (SocketType.EVENT, SocketType.ACK) and type(data) is not list:
        raise MalformedPacket(f"a Socket.IO {kind.name} packet without an array: {payload[:80]!r}")
    if kind is SocketType.EVENT and (not data or not isinstance(data[0], str)):
        raise MalformedPacket(f"a Socket.IO EVENT without an event name: {payload[:80]!r}")
    return Packet(kind, namespace, ack_id, data)


def encode(kind: SocketType, data: object = None, *, ack_id: int | None = None, namespace: str = "/") -> str:
    """A Socket.IO packet inside an Engine.IO message, ready to send as a text frame."""
    out = f"{EngineType.MESSAGE:d}{kind:d}"
    if namespace and namespace != DEFAULT_NAMESPACE:
        out += namespace + ","
    if ack_id is not None:
        out += str(ack_id)
    if data is not None:
        out += orjson.dumps(data).decode()
    return out


def connect(auth: dict, namespace: str = "/") -> str:
    return encode(SocketType.CONNECT, auth, namespace=namespace)


def event(name: str, *args: object, ack_id: int | None = None, namespace: str = "/") -> str:
    return encode(SocketType.EVENT, [name, *args], ack_id=ack_id, namespace=namespace)


def disconnect(namespace: str = "/") -> str:
    return encode(SocketType.DISCONNECT, namespace=namespace)
