"""users.transport on its non-blocking stdlib socket (issue 16 part 5): timeouts still bound every wait, each
error path keeps its template, a clean close is one close frame each way.

The servers are plain sockets in threads of the test process; the client waits through gevent's hub.
"""

from __future__ import annotations

import socket
import threading
import time

import gevent
import pytest

from tests.test_users_bad_targets import _upgrade
from users.frames import OP_CLOSE, OP_TEXT, FrameReader
from users.transport import Closed, ConnectError, WebSocket


def _server(handler):
    """A one-connection server on a free loopback port running ``handler(conn)`` in a thread: its port and
    what the handler returned (once the thread ended)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    result: dict = {}

    def run():
        conn, _ = listener.accept()
        with conn:
            result["value"] = handler(conn)
        listener.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener.getsockname()[1], result, thread


def _server_frames(conn, rest: bytes = b"", *, until_eof: bool = True):
    """The client's frames until EOF (the client closed TCP), answering a close frame with one."""
    reader, frames = FrameReader(rest), []
    conn.settimeout(5)
    while True:
        while (msg := reader.next_message()) is not None:
            frames.append((msg.opcode, bytes(msg.payload)))
            if msg.opcode == OP_CLOSE:
                conn.sendall(b"\x88\x02" + msg.payload[:2])  # the server's (unmasked) answer
                if not until_eof:
                    return frames
        chunk = conn.recv(4096)
        if not chunk:
            return frames
        reader.feed(chunk)


def test_a_clean_close_is_one_close_frame_each_way_and_returns_the_servers_code():
    port, result, thread = _server(lambda conn: _server_frames(conn, _upgrade(conn)))
    ws = WebSocket.open(f"ws://127.0.0.1:{port}/ws", timeout=2)
    ws.send("hello")
    assert ws.close(timeout=2) == 1000
    assert ws.closed
    thread.join(5)
    assert result["value"] == [(OP_TEXT, b"hello"), (OP_CLOSE, (1000).to_bytes(2, "big"))]  # then EOF


def test_a_read_waits_its_timeout_returns_none_and_the_connection_stays_usable():
    def handler(conn):
        _upgrade(conn)
        time.sleep(0.4)
        conn.sendall(b"\x81\x02hi")
        return _server_frames(conn)

    port, result, thread = _server(handler)
    ws = WebSocket.open(f"ws://127.0.0.1:{port}/", timeout=2)
    started = time.monotonic()
    assert ws.recv(0.15) is None
    assert 0.14 <= time.monotonic() - started < 0.35
    assert ws.recv(0) is None  # a poll
    assert ws.recv(2) == "hi"
    assert ws.close(timeout=2) == 1000
    thread.join(5)


def test_an_upgrade_that_never_comes_times_out_within_the_timeout():
    port, _, thread = _server(lambda conn: conn.recv(4096) and time.sleep(1.0))
    started = time.monotonic()
    with pytest.raises(ConnectError, match="^upgrade timed out$"):
        WebSocket.open(f"ws://127.0.0.1:{port}/", timeout=0.2)
    assert time.monotonic() - started < 0.8
    thread.join(5)


def test_connect_errors_keep_their_templates():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(ConnectError, match="^tcp connect refused$"):
            WebSocket.open(f"ws://127.0.0.1:{port}/", timeout=1)
    with pytest.raises(ConnectError, match="^tcp connect failed$"):
        WebSocket.open("ws://127.0.0.1:1/", timeout=1, source="192.0.2.1")  # not an address of this host
    port, _, thread = _server(lambda conn: conn.recv(4096) and conn.sendall(b"HTTP/1.1 404 Not Found\r\n\r\n"))
    with pytest.raises(ConnectError) as err:
        WebSocket.open(f"ws://127.0.0.1:{port}/", timeout=1)
    assert err.value.status == 404
    thread.join(5)
    port, _, thread = _server(lambda conn: conn.recv(4096))
    with pytest.raises(ConnectError, match="^connection closed during the upgrade$"):
        WebSocket.open(f"ws://127.0.0.1:{port}/", timeout=1)
    thread.join(5)


def test_a_host_name_connects_through_getaddrinfo():
    port, result, thread = _server(lambda conn: _server_frames(conn, _upgrade(conn)))
    ws = WebSocket.open(f"ws://localhost:{port}/", timeout=2)
    assert ws.close(timeout=2) == 1000
    thread.join(5)
    assert result["value"] == [(OP_CLOSE, (1000).to_bytes(2, "big"))]


def test_a_lost_connection_and_a_close_from_another_greenlet_end_the_read_as_abnormal():
    def handler(conn):
        _upgrade(conn)
        time.sleep(0.1)

    port, _, thread = _server(handler)  # closes without a close frame
    ws = WebSocket.open(f"ws://127.0.0.1:{port}/", timeout=2)
    with pytest.raises(Closed) as closed:
        ws.recv(2)
    assert (closed.value.code, closed.value.clean, closed.value.reason) == (1006, False, "connection lost")
    thread.join(5)

    gate = threading.Event()
    port, _, thread = _server(lambda conn: (_upgrade(conn), gate.wait(5)))
    ws = WebSocket.open(f"ws://127.0.0.1:{port}/", timeout=2)
    reader = gevent.spawn(ws.recv, 5)
    gevent.sleep(0.05)
    ws.abort()
    with pytest.raises(Closed) as closed:
        reader.get(timeout=2)
    assert (closed.value.code, closed.value.clean) == (1006, False)
    gate.set()
    thread.join(5)


def test_a_connect_that_gets_no_answer_times_out_within_the_timeout():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)  # one connection fills the accept queue: the kernel drops the next ones' SYNs
        port = listener.getsockname()[1]
        fillers = [socket.create_connection(("127.0.0.1", port), timeout=1)]
        try:
            for _ in range(2):
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
                fillers.append(filler)
            started = time.monotonic()
            with pytest.raises(ConnectError, match="^tcp connect timed out$"):
                WebSocket.open(f"ws://127.0.0.1:{port}/", timeout=0.3)
            assert 0.25 <= time.monotonic() - started < 0.9
        finally:
            for filler in fillers:
                filler.close()
