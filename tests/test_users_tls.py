"""Users over wss against the TLS backend, and the upgrade request's custom headers and subprotocols."""

from __future__ import annotations

import threading

import pytest

from tests.test_users_bad_targets import TinyServer, welcome_each_hello
from tests.test_users_locust_runs import assert_clean_end, run_locust
from users.frames import FrameReader, accept_for


@pytest.fixture
def tls_stub(stub_factory, tls_cert):
    cert, key = tls_cert
    return stub_factory(
        "--tls-cert", cert, "--tls-key", key, "--rate-limit", "0", "--hb-interval-ms", "300", cafile=cert
    )


@pytest.mark.parametrize(
    ("user_class", "options", "enough"),
    [
        ("HeartbeatUser", (), lambda run: len(run.of("hb_rtt", ok=1)) >= 5 * 8),
        ("FlappingUser", (), lambda run: len(run.of("reconnect", ok=1)) >= 5 * 10),
    ],
)
def test_users_run_over_wss_with_one_ssl_context(tmp_path, tls_stub, tls_cert, user_class, options, enough):
    run = run_locust(tmp_path, tls_stub.url, user_class, 5, 4, "--ca-file", tls_cert[0], *options)
    assert not run.failures(), run.describe()
    assert enough(run) and not run.of("welcome", ok=0), run.describe()
    # every token request and every wss handshake of the process shared one context
    assert run.end["ssl_contexts"] == 1, run.describe()
    assert_clean_end(run)


@pytest.mark.parametrize(
    ("options", "failures"),
    [
        (("--tls-verify", "false"), set()),  # no CA given, nothing checked: works
        ((), {("connect", "RequestFailed('no token')")}),  # verifying against the system CAs: refused
    ],
)
def test_tls_verification_is_on_unless_switched_off(tmp_path, tls_stub, options, failures):
    run = run_locust(tmp_path, tls_stub.url, "HeartbeatUser", 2, 2, "--backoff-cap-ms", "300", *options)
    assert {(r["name"], r["failure"]) for r in run.failures()} == failures, run.describe()
    if not failures:
        assert run.of("hb_rtt", ok=1), run.describe()
    else:
        errors = {(e["detail"], e["note"]) for e in run.of("error")}
        assert errors == {("token request failed", "unreachable")}, run.describe()
    assert run.end["ssl_contexts"] == 1, run.describe()
    assert_clean_end(run)


class UpgradeRecorder:
    """A tiny agentws/1 backend that keeps every upgrade request's headers and picks the last subprotocol."""

    def __init__(self) -> None:
        self.heads: list[dict[str, str]] = []
        self.lock = threading.Lock()
        self.server = TinyServer(self.serve)

    def serve(self, conn) -> None:
        buf = b""
        while b"\r\n\r\n" not in buf and len(buf) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                return
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")[1:]
        headers = {name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in lines)}
        if "sec-websocket-key" not in headers:  # the harness's telemetry polling /stats and /metrics
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        with self.lock:
            self.heads.append(headers)
        chosen = headers["sec-websocket-protocol"].split(",")[-1].strip()
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept_for(headers['sec-websocket-key'])}\r\n".encode()
            + f"Sec-WebSocket-Protocol: {chosen}\r\n\r\n".encode()
        )
        welcome_each_hello(conn, FrameReader(rest), hb_interval_ms=5000)


def test_custom_headers_and_subprotocols_reach_the_server(tmp_path, stub):
    recorder = UpgradeRecorder()
    options = (
        "--token-url", f"{stub.url}/auth/token", "--flap-cycles", "3",
        "--ws-headers", "X-Load-Test: agentws; X-Tenant: t-42", "--ws-subprotocols", "agentws.v1, agentws.probe",
    )  # fmt: skip
    try:
        run = run_locust(tmp_path, recorder.server.url, "FlappingUser", 2, 2, *options)
    finally:
        recorder.server.close()
    assert not run.failures(), run.describe()  # the chosen subprotocol was one offered: accepted
    assert len(recorder.heads) == 2 * 3, run.describe()
    for head in recorder.heads:
        assert head["x-load-test"] == "agentws" and head["x-tenant"] == "t-42", head
        assert head["sec-websocket-protocol"] == "agentws.v1, agentws.probe", head
    assert run.end["ssl_contexts"] == 0, run.describe()  # plain ws builds none
    assert_clean_end(run)
