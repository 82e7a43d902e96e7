"""Shared fixtures: real backend processes (and a real redis-server) on free loopback ports."""

from __future__ import annotations

import itertools
import shutil
import socket
import subprocess

import pytest

from server_stub.process import StubProcess

#: Options for a backend that streams replies quickly (5 chunks, 5 ms apart).
FAST = ("--chunk-delay-ms", "5", "--chunks-per-reply", "5")

_users = itertools.count(1)


def _starter(directory):
    started: list[StubProcess] = []

    def start(*args: str, store: str | None = None, cafile: str | None = None) -> StubProcess:
        n = len(started)
        store = store or f"sqlite:{directory}/stub-{n}.db"
        stub = StubProcess("--store", store, *args, log_path=directory / f"stub-{n}.log", cafile=cafile)
        started.append(stub)
        return stub.start()

    return start, started


def _stop_all(started: list[StubProcess]) -> None:
    """Stop every backend; an exception the backend logged (and survived) fails the test too."""
    for stub in started:
        stub.close()
    for stub in started:
        log = stub.log_path.read_text(errors="replace")
        if "Traceback" in log:
            pytest.fail(f"server_stub logged an exception ({stub.log_path}):\n{log[-3000:]}")


@pytest.fixture
def stub_factory(tmp_path):
    """Start ``python -m server_stub`` with the given options; every one is stopped at teardown.

    The store defaults to a fresh SQLite file under the test's tmp_path.
    """
    start, started = _starter(tmp_path)
    yield start
    _stop_all(started)


@pytest.fixture
def stub(stub_factory):
    """A clean backend with short timings suited to tests."""
    return stub_factory(*FAST)


@pytest.fixture(scope="module")
def module_stub_factory(tmp_path_factory):
    """Like ``stub_factory``, but the backends live for the whole test module."""
    start, started = _starter(tmp_path_factory.mktemp("stubs"))
    yield start
    _stop_all(started)


@pytest.fixture(scope="module")
def shared_stub(module_stub_factory):
    """One clean, fast backend shared by a module's tests (each test uses its own user)."""
    return module_stub_factory(*FAST)


@pytest.fixture
def user(request) -> str:
    """A user name no other test uses, so per-user state (rate limit, sessions) never mixes."""
    return f"u{next(_users)}-{request.node.name[:40]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_url(tmp_path):
    """A real ``redis-server`` on a free loopback port, no persistence; stopped at teardown."""
    from harness.processes import HelperError, RedisServer

    server = RedisServer(tmp_path / "redis")
    try:
        server.start()
    except HelperError as e:
        pytest.fail(f"{e} (run bin/setup, or .ci/run, which installs it)")
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory) -> tuple[str, str]:
    """(cert, key): a self-signed P-256 certificate for 127.0.0.1, made once with the openssl CLI.

    It is its own CA (``CA:TRUE``), so a client trusts it by loading the same file as its CA bundle.
    """
    binary = shutil.which("openssl")
    if binary is None:
        pytest.fail("the openssl command is not installed (Debian: apt-get install openssl)")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            binary, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return str(cert), str(key)
