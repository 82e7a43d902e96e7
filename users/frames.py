"""RFC 6455 on bytes: the client's upgrade request, the server's answer, and frames both ways.

No sockets here. websocket-client reads the upgrade response one byte per
``recv`` (about 1 ms of CPU per connect under gevent, more than the rest of a
flapping cycle); the transport instead reads in blocks and hands the bytes to
:func:`parse_upgrade_response` and :class:`FrameReader`, which work on
whatever arrived.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import struct
from typing import NamedTuple

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEADER_BYTES = 16 * 1024
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA_OPS = frozenset({OP_TEXT, OP_BINARY})
_CONTROL_OPS = frozenset({OP_CLOSE, OP_PING, OP_PONG})
_getrandbits = random.getrandbits


class ProtocolViolation(Exception):
    """The peer sent bytes that are not RFC 6455 (the message is templated)."""


class HandshakeError(Exception):
    """The upgrade was refused or answered with something that is not an upgrade."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Message(NamedTuple):
    opcode: int
    payload: bytes


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def accept_for(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def upgrade_request(
    host: str, path: str, key: str, headers: dict[str, str] | None = None, subprotocols: list[str] | None = None
) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if subprotocols:
        lines.append(f"Sec-WebSocket-Protocol: {', '.join(subprotocols)}")
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Upgrade(NamedTuple):
    headers: dict[str, str]  #: lower-cased names
    rest: bytes  #: bytes after the header block: the first frames
    subprotocol: str | None


def parse_upgrade_response(buf: bytes, key: str, subprotocols: list[str] | None = None) -> Upgrade | None:
    """The parsed ``101`` answer, or None while the header block is incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEADER_BYTES:
            raise HandshakeError("upgrade response header too large")
        return None
    head, rest = buf[:end].decode("latin-1"), buf[end + 4 :]
    status_line, *header_lines = head.split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise HandshakeError("upgrade response is not HTTP")
    status = int(parts[1])
    if status != 101:
        raise HandshakeError(f"upgrade refused with HTTP {status}", status)
    headers = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if not sep:
            raise HandshakeError("upgrade response has a malformed header")
        headers[name.strip().lower()] = value.strip()
    if headers.get("upgrade", "").lower() != "websocket":
        raise HandshakeError("upgrade response lacks Upgrade: websocket", status)
    if headers.get("sec-websocket-accept") != accept_for(key):
        raise HandshakeError("upgrade response has a wrong Sec-WebSocket-Accept", status)
    chosen = headers.get("sec-websocket-protocol")
    if chosen is not None and chosen not in (subprotocols or []):
        raise HandshakeError("server chose a subprotocol that was not offered", status)
    return Upgrade(headers, rest, chosen)


def mask(key: bytes, payload: bytes) -> bytes:
    n = len(payload)
    if not n:
        return payload
    pad = (key * ((n + 3) >> 2))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(pad, "big")).to_bytes(n, "big")


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = _getrandbits(32).to_bytes(4, "big")
    return head + key + mask(key, payload)


def encode_close(code: int, reason: str = "") -> bytes:
    return encode_frame(OP_CLOSE, struct.pack("!H", code) + reason.encode()[:120])


def parse_close(payload: bytes) -> tuple[int | None, str]:
    """Close code and reason of a close frame's payload (no code: None, as RFC 6455's 1005)."""
    if len(payload) < 2:
        return None, ""
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8", "replace")


class FrameReader:
    """Incremental parser of server frames: feed bytes, take whole messages.

    Fragmented data messages are joined; control frames between fragments are
    returned on their own, as RFC 6455 allows them there.
    """

    __slots__ = ("_buf", "_fragments", "_fragment_op")

    def __init__(self, initial: bytes = b"") -> None:
        self._buf = bytearray(initial)
        self._fragments: list[bytes] | None = None
        self._fragment_op = 0

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_message(self) -> Message | None:
        while True:
            frame = self._next_frame()
            if frame is None:
                return None
            fin, opcode, payload = frame
            if opcode in _CONTROL_OPS:
                if not fin or len(payload) > 125:
                    raise ProtocolViolation("malformed control frame")
                return Message(opcode, payload)
            if opcode == OP_CONT:
                if self._fragments is None:
                    raise ProtocolViolation("continuation frame without a message")
                self._fragments.append(payload)
                if fin:
                    payload, self._fragments = b"".join(self._fragments), None
                    return Message(self._fragment_op, payload)
                continue
            if opcode not in _DATA_OPS:
                raise ProtocolViolation("unknown frame opcode")
            if self._fragments is not None:
                raise ProtocolViolation("new message inside a fragmented one")
            if fin:
                return Message(opcode, payload)
            self._fragments, self._fragment_op = [payload], opcode

    def _next_frame(self) -> tuple[bool, int, bytes] | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        if b0 & 0x70:
            raise ProtocolViolation("reserved frame bits set")
        n = b1 & 0x7F
        pos = 2
        if n == 126:
            if len(buf) < 4:
                return None
            n = (buf[2] << 8) | buf[3]
            pos = 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n = struct.unpack_from("!Q", buf, 2)[0]
            pos = 10
        if n > MAX_MESSAGE_BYTES:
            raise ProtocolViolation("frame too large")
        masked = b1 & 0x80
        key = b""
        if masked:
            if len(buf) < pos + 4:
                return None
            key = bytes(buf[pos : pos + 4])
            pos += 4
        if len(buf) < pos + n:
            return None
        payload = bytes(buf[pos : pos + n])
        del buf[: pos + n]
        if masked:
            payload = mask(key, payload)
        return bool(b0 & 0x80), b0 & 0x0F, payload
