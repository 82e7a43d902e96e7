"""A WebSocket client connection on a gevent socket: open, send and receive messages, close, abort.

Messages go both ways as text (``str``) or binary (``bytes``): a protocol adapter
decides which (agentws/1 and Socket.IO speak text, MQTT binary).
The caller's greenlet does the reading (:meth:`WebSocket.recv` with a
timeout); nothing here spawns a greenlet, so nothing outlives the socket.
``wss`` uses one :class:`ssl.SSLContext` per process (:func:`shared_ssl_context`):
building a context per connection costs more CPU than the handshake itself.

A ``ws`` connection is a non-blocking stdlib socket waited on through gevent's hub (:class:`_Plain`), not a
gevent socket: a gevent socket arms a ``Timeout`` for every read that waits and raises it through the hub
when the time passes, connects in four system calls, and makes an ioctl and two watchers per socket. The
flapping cycle (issue 16) waits four times per connection; here a wait is two watchers and a switch, a
timed-out read returns None without an exception, a connect is two ``connect`` calls (the second finds the
handshake done on loopback; a wait for writability and a ``getsockopt`` when it is not). ``wss`` keeps
gevent's SSL socket (:class:`_Tls`), the same interface.
"""

from __future__ import annotations

import _socket  # the C module: Locust's monkey-patching replaces socket.socket, never this
import socket as _stdlib_socket
from errno import EALREADY, EINPROGRESS, EWOULDBLOCK
from functools import cache, lru_cache
from ipaddress import ip_address
from os import strerror
from time import monotonic
from urllib.parse import urlsplit

from gevent import get_hub, getcurrent
from gevent import socket as gsocket
from gevent import ssl as gssl
from gevent._socketcommon import cancel_wait_ex
from gevent.exceptions import InvalidSwitchError

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
    """A gevent socket's TCP connect (``wss``: gevent's SSL socket wraps it), from ``source`` if given; an IP
    literal skips getaddrinfo (gevent resolves in a thread pool: ~0.1 ms a call)."""
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


_NONBLOCKING_STREAM = _socket.SOCK_STREAM | _socket.SOCK_NONBLOCK
_CONNECTING = (EINPROGRESS, EALREADY, EWOULDBLOCK)
_TIMED_OUT = object()  #: what the timer of a wait switches in with


def _connect_plain(hostname: str, port: int, family: int | None, timeout: float, source: str | None = None):
    """TCP connect for ``ws``, as :func:`_connect` (same errors: ``TimeoutError``, ``ConnectionRefusedError``,
    ``OSError``), on a non-blocking stdlib socket: a :class:`_Plain`. A host name goes by gevent's
    ``create_connection`` (every address getaddrinfo gives, in turn) and its descriptor is taken over."""
    if family is None:
        gsock = _connect(hostname, port, family, timeout, source)
        try:
            sock = _socket.socket(gsock.family, gsock.type, gsock.proto, gsock.detach())
            sock.setblocking(False)
        finally:
            gsock.close()
        return _Plain(sock, timeout)
    sock = _socket.socket(family, _NONBLOCKING_STREAM)
    conn = None
    try:
        if source:
            sock.bind((source, 0))
        address = (hostname, port)
        err = sock.connect_ex(address)
        if err in _CONNECTING:
            # Asked again, the kernel says whether the handshake is done (0), still going (EALREADY) or failed:
            # on loopback it is done by the time the first call returned, and no wait for writability is needed.
            err = sock.connect_ex(address)
        if err in _CONNECTING:
            conn = _Plain(sock, timeout)
            if not conn.wait_writable(timeout):
                raise TimeoutError("timed out")
            err = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
        if err:
            raise OSError(err, strerror(err))  # ECONNREFUSED makes a ConnectionRefusedError
    except BaseException:
        if conn is not None:
            conn.close()
        else:
            sock.close()
        raise
    return conn or _Plain(sock, timeout)


class _Plain:
    """A TCP connection on a non-blocking stdlib socket, waited on through gevent's hub: a read waits for
    its own timeout and returns None when it passes (no exception raised through the hub), a send that
    the socket buffer does not take at once waits at most ``timeout`` (the connect timeout).

    One greenlet reads at a time. :meth:`close` and :meth:`shutdown` from another greenlet wake a waiting
    reader with gevent's own error (``EBADF``, an ``OSError``), as a gevent socket does.
    """

    __slots__ = ("sock", "hub", "timeout", "_read", "_write")

    def __init__(self, sock, timeout: float | None) -> None:
        self.sock = sock
        self.hub = get_hub()
        self.timeout = timeout
        self._read = None
        self._write = None

    def _wait(self, watcher, timeout: float | None) -> bool:
        """Until ``watcher``'s descriptor is ready (True) or ``timeout`` passed (False)."""
        hub = self.hub
        switch = getcurrent().switch
        timer = None
        watcher.start(switch, watcher)
        try:
            if timeout is not None:
                timer = hub.loop.timer(max(0.0, timeout))
                timer.start(switch, _TIMED_OUT)
            result = hub.switch()
        finally:
            watcher.stop()
            if timer is not None:
                timer.close()
        if result is watcher:
            return True
        if result is _TIMED_OUT:
            return False
        raise InvalidSwitchError(f"invalid switch into {getcurrent()}: got {result!r} waiting on a socket")

    def wait_readable(self, timeout: float | None) -> bool:
        watcher = self._read
        if watcher is None:
            watcher = self._read = self.hub.loop.io(self.sock.fileno(), 1)
        return self._wait(watcher, timeout)

    def wait_writable(self, timeout: float | None) -> bool:
        watcher = self._write
        if watcher is None:
            watcher = self._write = self.hub.loop.io(self.sock.fileno(), 2)
        return self._wait(watcher, timeout)

    def recv_into(self, buffer, timeout: float | None) -> int | None:
        """Bytes read into ``buffer`` (0: the peer closed), or None when ``timeout`` passed first."""
        sock = self.sock
        try:
            return sock.recv_into(buffer)
        except BlockingIOError:
            pass
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            if not self.wait_readable(timeout):
                return None
            try:
                return sock.recv_into(buffer)
            except BlockingIOError:  # readiness without data: wait out what is left
                if deadline is not None:
                    timeout = deadline - monotonic()

    def send_all(self, data) -> None:
        """All of ``data``: one ``send`` when the socket buffer takes it, as it nearly always does; else waits
        for room, each wait bounded by the connect timeout (``TimeoutError``), as gevent's ``sendall``."""
        sock = self.sock
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return
        view = memoryview(data)
        while sent < len(view):
            if not self.wait_writable(self.timeout):
                raise TimeoutError("timed out")
            try:
                sent += sock.send(view[sent:])
            except BlockingIOError:
                pass

    def shutdown(self, how: int) -> None:
        hub = self.hub
        if how != _socket.SHUT_WR:
            hub.cancel_wait(self._read, cancel_wait_ex)
        if how != _socket.SHUT_RD:
            hub.cancel_wait(self._write, cancel_wait_ex)
        self.sock.shutdown(how)

    def close(self) -> None:
        """Close the socket (a reader waiting in another greenlet gets ``EBADF``, once woken)."""
        read, write = self._read, self._write
        self._read = self._write = None
        if read is None and write is None:
            self.sock.close()
        else:
            self.hub.cancel_waits_close_and_then((read, write), cancel_wait_ex, self.sock.close)

    def setsockopt(self, *args) -> None:
        self.sock.setsockopt(*args)


class _Tls:
    """A ``wss`` connection: gevent's SSL socket behind :class:`_Plain`'s interface. A read sets the socket's
    timeout (a send keeps the last one set, as before)."""

    __slots__ = ("sock",)

    def __init__(self, sock) -> None:
        self.sock = sock

    def recv_into(self, buffer, timeout: float | None) -> int | None:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv_into(buffer)
        except TimeoutError:
            return None

    def send_all(self, data) -> None:
        _send_all(self.sock, data)

    def shutdown(self, how: int) -> None:
        self.sock.shutdown(how)

    def close(self) -> None:
        self.sock.close()


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
            if secure:
                sock = _connect(hostname, port, family, timeout, source)
            else:
                sock = _connect_plain(hostname, port, family, timeout, source)
        except TimeoutError:
            raise ConnectError("tcp connect timed out") from None
        except ConnectionRefusedError:
            raise ConnectError("tcp connect refused") from None
        except OSError:
            raise ConnectError("tcp connect failed") from None
        try:
            sock.setsockopt(_stdlib_socket.IPPROTO_TCP, _stdlib_socket.TCP_NODELAY, 1)
            if secure:
                sock = _Tls((ssl_context or shared_ssl_context()).wrap_socket(sock, server_hostname=hostname))
            key = new_key()
            sock.send_all(upgrade_request(host_header, path, key, headers, subprotocols))
            buf = b""
            while True:
                n = sock.recv_into(_recv_buffer, timeout)
                if n is None:
                    raise TimeoutError
                if not n:
                    raise ConnectError("connection closed during the upgrade")
                buf += _recv_view[:n]
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
            self.sock.send_all(data)
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
            try:
                n = self.sock.recv_into(_recv_buffer, timeout)
            except OSError:
                self._drop()
                raise Closed(ABNORMAL, "connection reset", clean=False) from None
            if n is None:
                return None
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
                self.sock.send_all(encode_close(code if code is not None else NORMAL_CLOSURE))
        except OSError:
            pass
        self._drop()

    def _drop(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()
