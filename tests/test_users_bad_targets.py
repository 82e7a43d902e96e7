"""Users against targets that misbehave: down, refusing, 404, stalling, garbage, unknown close codes.

Each target is a tiny socket server in a thread of the test process (no
gevent here); the users run in a child ``locust --headless``. Every case must
end in templated failure events, bounded retries, no leaked greenlet or
socket, and a worker that did not crash.
"""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter

import pytest

from tests.test_users_locust_runs import assert_clean_end, run_locust
from users.frames import OP_CLOSE, OP_TEXT, FrameReader, accept_for


def _upgrade(conn: socket.socket) -> bytes:
    """Read the upgrade request and accept it; returns bytes already read past it."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(4096)
        if not chunk:
            raise ConnectionError
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    if b"sec-websocket-key" not in head.lower():  # the harness's telemetry polls /stats here too
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        raise ConnectionError
    key = next(
        line.split(":", 1)[1].strip()
        for line in head.decode().split("\r\n")
        if line.lower().startswith("sec-websocket-key")
    )
    conn.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + f"Sec-WebSocket-Accept: {accept_for(key)}\r\n\r\n".encode()
    )
    return rest


def _answer_404(conn):
    conn.recv(4096)
    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


def _answer_garbage(conn):
    conn.recv(4096)
    conn.sendall(b"\x00\xffNOT-HTTP" * 100 + b"\r\n\r\n")


def _garbage_frames(conn):
    _upgrade(conn)
    conn.sendall(b"\xff\xfe\xfd\xfc" * 64)


def _close_with_unknown_code(conn):
    rest = _upgrade(conn)
    reader = FrameReader(rest)
    while reader.next_message() is None:  # the hello (masked, any opcode)
        reader.feed(conn.recv(4096))
    reason = b"who knows"
    conn.sendall(bytes([0x80 | OP_CLOSE, 2 + len(reason)]) + (4999).to_bytes(2, "big") + reason)  # server: unmasked


def _stall(conn):
    threading.Event().wait(30)


class TinyServer:
    """A listening socket on 127.0.0.1 whose every connection gets ``behave(conn)`` in a thread."""

    def __init__(self, behave) -> None:
        self.behave = behave
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn) -> None:
        try:
            self.behave(conn)
        except OSError:
            pass

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]


BACKOFF = ("--max-retries", "2", "--backoff-base-ms", "20", "--backoff-cap-ms", "100")


def _connect_timeout(case: str) -> tuple[str, str]:
    # Only the stalling target should time out: elsewhere a short timeout on a loaded machine
    # would add "upgrade timed out" to the failures the case is about.
    return ("--connect-timeout-s", "0.5" if case == "stall" else "5")


CASES = {
    "down": (None, {"RequestFailed('connect failed: tcp connect refused')"}),
    "404": (_answer_404, {"RequestFailed('connect failed: upgrade refused with HTTP 404')"}),
    "garbage-http": (_answer_garbage, {"RequestFailed('connect failed: upgrade response is not HTTP')"}),
    "stall": (_stall, {"RequestFailed('connect failed: upgrade timed out')"}),
    "garbage-frames": (_garbage_frames, {"RequestFailed('closed with 1006 before the session opened')"}),
    "unknown-close": (_close_with_unknown_code, {"RequestFailed('closed with 4999 before the session opened')"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_target_gives_templated_failures_and_bounded_retries(tmp_path, stub, case):
    behave, expected_failures = CASES[case]
    server = TinyServer(behave) if behave else None
    host = server.url if server else f"http://127.0.0.1:{_free_port()}"
    try:
        run = run_locust(
            tmp_path,
            host,
            "FlappingUser",
            3,
            3,
            *BACKOFF,
            *_connect_timeout(case),
            "--token-url",
            f"{stub.url}/auth/token",
        )
    finally:
        if server:
            server.close()
    failures = Counter(r["failure"] for r in run.failures())
    assert set(failures) == expected_failures, run.describe()
    assert {r["name"] for r in run.failures()} == {"connect"}, run.describe()
    # bounded: a few attempts a second per user with backoff, not a hot loop (the users retry for their
    # 3 s and through the 3 s --stop-timeout)
    assert 3 <= sum(failures.values()) <= 3 * (3 + 3) * 20, run.describe()
    assert run.of("connect", ok=0) or run.of("disconnect"), run.describe()
    assert_clean_end(run)


def welcome_each_hello(conn, reader: FrameReader, *, hb_interval_ms: int) -> None:
    """A fake backend: answers every hello with a welcome and nothing else (no hb_ack, no frames)."""
    for _ in range(1000):  # bounded: a client sends one hello per connection
        msg = reader.next_message()
        if msg is None:
            data = conn.recv(4096)
            if not data:
                return
            reader.feed(data)
            continue
        if msg.opcode == OP_CLOSE:
            conn.sendall(bytes([0x80 | OP_CLOSE, 2]) + (1000).to_bytes(2, "big"))
            return
        hello = json.loads(msg.payload)
        if hello.get("t") == "hello":
            welcome = {"t": "welcome", "session": "e.fake", "epoch": "e", "resumed": "session" in hello,
                       "head_seq": 0, "agent": {"id": "a-fake", "turns": 0, "ctx_hash": "h"},
                       "hb_interval_ms": hb_interval_ms, "idle_timeout_ms": int(hb_interval_ms * 1.5),
                       "token_exp": 0, "resume_window_s": 60}  # fmt: skip
            payload = json.dumps(welcome).encode()
            conn.sendall(bytes([0x80 | OP_TEXT, 126]) + len(payload).to_bytes(2, "big") + payload)


def _welcome_but_never_ack_hb(conn):
    """A backend that answers hello and then ignores every heartbeat (a hung application)."""
    welcome_each_hello(conn, FrameReader(_upgrade(conn)), hb_interval_ms=200)


def test_heartbeat_user_declares_a_silent_connection_dead_and_resumes(tmp_path, stub):
    server = TinyServer(_welcome_but_never_ack_hb)
    try:
        options = ("--token-url", f"{stub.url}/auth/token", "--backoff-base-ms", "50")
        run = run_locust(tmp_path, server.url, "HeartbeatUser", 2, 3, *options)
    finally:
        server.close()
    dead = run.of("hb_rtt", ok=0)
    assert len(dead) >= 4, run.describe()  # hb at 200 ms, dead 400 ms later: ~600 ms a round per user
    assert {r["failure"] for r in run.failures()} == {"RequestFailed('no hb_ack within two intervals')"}
    reconnects = run.of("reconnect", ok=1)
    assert len(reconnects) >= len(dead) - 2 and {e["detail"] for e in reconnects} == {"resumed"}, run.describe()
    # measured from the detection, so the first backoff sleep (at most 50 ms here) is inside it
    assert all(e["latency_ms"] < 300 for e in reconnects), run.describe()
    assert_clean_end(run)
