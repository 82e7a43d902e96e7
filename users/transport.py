"""A WebSocket client connection on a gevent socket: open, send and receive messages, close, abort.

Messages go both ways as text (``str``) or binary (``bytes``): a protocol adapter
decides which (agentws/1 and Socket.IO speak text, MQTT binary).
The caller's greenlet does the reading (:meth:`WebSocket.recv` with a
timeout); nothing here spawns a greenlet, so nothing outlives the socket.
``wss`` uses one :class:`ssl.SSLContext` per process (:func:`shared_ssl_context`):
building a context per connection costs more CPU than the handshake itself.
"""

from __future__ import annotations

import socket as _stdlib_socket
from functools import cache, lru_cache
from ipaddress import ip_address
from time import monotonic
from urllib.parse import urlsplit

from gevent import socket as gsocket
from gevent import ssl as gssl

from .frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
    HandshakeError,
    ProtocolViolation,
    encode_close,
    encode_frame,
    new_key,
    parse_close,
    parse_upgrade_response,
    upgrade_request,
)

RECV_BYTES = 65536
HANDSHAKE_RECV_BYTES = 4096
NORMAL_CLOSURE = 1000
NO_STATUS = 1005
ABNORMAL = 1006

#: One receive buffer for every connection of the process. A fresh 64 KiB
#: ``recv`` buffer per read, shrunk to the few bytes that came, fragments the
#: heap across thousands of idle connections; the bytes are copied into the
#: connection's FrameReader before the reading greenlet can switch away.
_recv_buffer = bytearray(RECV_BYTES)
_recv_view = memoryview(_recv_buffer)


@cache
def shared_ssl_context(verify: bool = True, ca_file: str = "") -> gssl.SSLContext:
    """The process's TLS client context (created on first use; one per settings, and a run has one).

    ``ca_file`` replaces the system's trust store (a self-signed test backend);
    ``verify=False`` checks neither the chain nor the host name. The same context
    serves the token requests, so a process never builds a second one.
    """
    ctx = gssl.create_default_context(cafile=ca_file or None)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = gssl.CERT_NONE
    return ctx


@lru_cache(maxsize=64)
def _target(url: str) -> tuple[str, int, str, str, bool, int | None] | None:
    """(host, port, path, Host header, tls, address family when the host is an IP literal) of a ws URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        return None
    secure = parts.scheme == "wss"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        family = _stdlib_socket.AF_INET6 if ip_address(parts.hostname).version == 6 else _stdlib_socket.AF_INET
    except ValueError:
        family = None
    return parts.hostname, parts.port or (443 if secure else 80), path, parts.netloc.rpartition("@")[2], secure, family


def _connect(hostname: str, port: int, family: int | None, timeout: float, source: str | None = None):
    """TCP connect (from ``source``, an address of this host, if given); an IP literal skips getaddrinfo
    (gevent resolves in a thread pool: ~0.1 ms a call)."""
    if family is None:
        return gsocket.create_connection(
            (hostname, port), timeout=timeout, source_address=(source, 0) if source else None
        )
    sock = gsocket.socket(family, _stdlib_socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        if source:
            sock.bind((source, 0))
        sock.connect((hostname, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _send_all(sock, data: bytes) -> None:
    """``sock.sendall(data)`` in one ``send`` when the socket buffer takes it all, as it takes a frame of
    ours nearly always: gevent's ``sendall`` asks the kernel for ``SO_SNDBUF`` on every call to size its
    chunks. The rest, if any, goes by ``sendall`` (waiting for the buffer to drain, bounded by the timeout)."""
    sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])


class ConnectError(Exception):
    """Opening failed: refused, unreachable, timed out, or the upgrade was refused.

    ``str()`` is a template (no addresses, ids or times): Locust keys failures by it.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Closed(Exception):
    """The connection ended. ``code`` is the server's close code; 1006 when no close frame came."""

    def __init__(self, code: int, reason: str = "", clean: bool = True) -> None:
        super().__init__(f"connection closed with {code}")
        self.code, self.reason, self.clean = code, reason, clean


class WebSocket:
    """An open client WebSocket. Not thread-safe; one greenlet reads at a time."""

    __slots__ = ("sock", "_reader", "subprotocol", "closed", "_close_sent")

    def __init__(self, sock, reader: FrameReader, subprotocol: str | None) -> None:
        self.sock = sock
        self._reader = reader
        self.subprotocol = subprotocol
        self.closed = False
        self._close_sent = False  #: our close frame went out: the server's close ends the connection, unanswered

    @classmethod
    def open(
        cls,
        url: str,
        *,
        timeout: float = 5.0,
        headers: dict[str, str] | None = None,
        subprotocols: list[str] | None = None,
        ssl_context: gssl.SSLContext | None = None,
        source: str | None = None,
    ) -> WebSocket:
        """TCP connect (from the local address ``source``, if given), TLS for ``wss``, upgrade;
        the whole handshake is bounded by ``timeout``."""
        target = _target(url)
        if target is None:
            raise ConnectError("url is not ws:// or wss://")
        hostname, port, path, host_header, secure, family = target
        try:
            sock = _connect(hostname, port, family, timeout, source)
        except TimeoutError:
            raise ConnectError("tcp connect timed out") from None
        except ConnectionRefusedError:
            raise ConnectError("tcp connect refused") from None
        except OSError:
            raise ConnectError("tcp connect failed") from None
        try:
            sock.setsockopt(_stdlib_socket.IPPROTO_TCP, _stdlib_socket.TCP_NODELAY, 1)
            if secure:
                sock = (ssl_context or shared_ssl_context()).wrap_socket(sock, server_hostname=hostname)
            key = new_key()
            _send_all(sock, upgrade_request(host_header, path, key, headers, subprotocols))
            buf = b""
            while True:
                chunk = sock.recv(HANDSHAKE_RECV_BYTES)
                if not chunk:
                    raise ConnectError("connection closed during the upgrade")
                buf += chunk
                upgrade = parse_upgrade_response(buf, key, subprotocols)
                if upgrade is not None:
                    break
        except HandshakeError as err:
            sock.close()
            raise ConnectError(str(err), err.status) from None
        except TimeoutError:
            sock.close()
            raise ConnectError("upgrade timed out") from None
        except gssl.SSLError:
            sock.close()
            raise ConnectError("tls handshake failed") from None
        except OSError:
            sock.close()
            raise ConnectError("connection lost during the upgrade") from None
        except BaseException:
            sock.close()  # GreenletExit while connecting: no socket left behind
            raise
        return cls(sock, FrameReader(upgrade.rest), upgrade.subprotocol)

    # -- sending ------------------------------------------------------------------
    def send(self, message: str | bytes) -> None:
        """One message: a text frame for ``str``, a binary frame for ``bytes``."""
        if type(message) is str:
            self._send(encode_frame(OP_TEXT, message.encode()))
        else:
            self._send(encode_frame(OP_BINARY, bytes(message)))

    def _send(self, data: bytes) -> None:
        if self.closed:
            raise Closed(ABNORMAL, "already closed", clean=False)
        try:
            _send_all(self.sock, data)
        except OSError:
            self._drop()
            raise Closed(ABNORMAL, "send failed", clean=False) from None

    # -- receiving ----------------------------------------------------------------
    def recv(self, timeout: float | None) -> str | bytes | None:
        """The next message, text (``str``) or binary (``bytes``), or None when ``timeout`` passes first.

        Pings are answered here; a close frame is answered and raises :class:`Closed`.
        """
        reader = self._reader
        while True:
            try:
                msg = reader.next_message()
            except ProtocolViolation as err:
                self._drop()
                raise Closed(ABNORMAL, str(err), clean=False) from None
            if msg is not None:
                if msg.opcode == OP_TEXT:
                    return msg.payload.decode("utf-8", "replace")
                if msg.opcode == OP_BINARY:
                    return msg.payload
                if msg.opcode == OP_PING:
                    self._send(encode_frame(OP_PONG, msg.payload))
                elif msg.opcode == OP_CLOSE:
                    code, reason = parse_close(msg.payload)
                    self._answer_close(code)
                    raise Closed(code if code is not None else NO_STATUS, reason)
                continue  # a pong: RFC 6455's own keepalive, not the protocol's heartbeat
            if self.closed:
                raise Closed(ABNORMAL, "already closed", clean=False)
            self.sock.settimeout(timeout)
            try:
                n = self.sock.recv_into(_recv_buffer)
            except TimeoutError:
                return None
            except OSError:
                self._drop()
                raise Closed(ABNORMAL, "connection reset", clean=False) from None
            if not n:
                self._drop()
                raise Closed(ABNORMAL, "connection lost", clean=False)
            reader.feed(_recv_view[:n])  # copied out before this greenlet can yield

    # -- ending -------------------------------------------------------------------
    def close(self, code: int = NORMAL_CLOSURE, timeout: float = 1.0) -> int | None:
        """Clean close: send a close frame, wait (bounded) for the server's; returns its code."""
        if self.closed:
            return None
        try:
            self._close_sent = True
            self._send(encode_close(code))
            deadline = monotonic() + timeout
            while (left := deadline - monotonic()) > 0:
                if self.recv(left) is None:
                    break
        except Closed as closed:
            return closed.code
        finally:
            self._drop()
        return None

    def abort(self) -> None:
        """Drop the TCP connection without a close frame (a network cut, as the server sees it)."""
        if self.closed:
            return
        try:
            self.sock.shutdown(_stdlib_socket.SHUT_RDWR)
        except OSError:
            pass
        self._drop()

    def _answer_close(self, code: int | None) -> None:
        """The server's close frame: echo it (RFC 6455 5.5.1) unless it is the answer to ours, then drop."""
        try:
            if not self.closed and not self._close_sent:
                _send_all(self.sock, encode_close(code if code is not None else NORMAL_CLOSURE))
        except OSError:
            pass
        self._drop()

    def _drop(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()
