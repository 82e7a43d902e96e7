"""`python -m server_stub` as a command: its listening line, its option checks, its SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from agentws.protocol import WS_PATH, Close, T
from server_stub.process import ROOT
from tests.conftest import FAST
from tests.stubclient import Clients, run


def test_listening_line_is_json_with_url_ws_url_and_pid(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "server_stub", "--store", "memory", "--fault", "leak"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        line = json.loads(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
    assert line["event"] == "listening" and line["pid"] == proc.pid
    assert line["url"].startswith("http://127.0.0.1:")
    assert line["ws_url"] == line["url"].replace("http://", "ws://") + WS_PATH
    assert line["store"] == "memory" and line["faults"] == ["leak"] and line["restored_sessions"] == 0
    assert proc.returncode == 0


@pytest.mark.parametrize(
    "args, option",
    [
        (["--port", "70000"], "--port"),
        (["--port", "http"], "--port"),
        (["--rate-limit", "x"], "--rate-limit"),
        (["--rate-limit", "5/0"], "--rate-limit"),
        (["--store", "bogus"], "--store"),
        (["--store", "sqlite:"], "--store"),
        (["--fault", "nope"], "--fault"),
        (["--hb-interval-ms", "0"], "--hb-interval-ms"),
        (["--resume-window", "-1"], "--resume-window"),
        (["--chunk-delay-ms", "fast"], "--chunk-delay-ms"),
    ],
)
def test_bad_option_value_exits_non_zero_naming_the_option(args, option):
    done = subprocess.run(
        [sys.executable, "-m", "server_stub", *args], cwd=ROOT, capture_output=True, text=True, timeout=20
    )
    assert done.returncode != 0
    assert option in done.stderr and done.stdout == ""


def test_port_in_use_exits_2_with_a_message(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "server_stub", "--store", "memory", "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=20,
        )
    assert done.returncode == 2 and "cannot listen" in done.stderr


def test_unreachable_store_exits_2_with_a_message():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket is closed
    done = subprocess.run(
        [sys.executable, "-m", "server_stub", "--store", f"redis://127.0.0.1:{port}/0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 2 and "cannot open store" in done.stderr


def test_sigterm_with_50_clients_sends_goaway_and_1012_then_exits_0_within_5_s(stub_factory):
    stub = stub_factory(*FAST)
    n = 50

    async def go():
        async with Clients(stub) as cs:
            clients = [await cs.session(f"drain-{i}") for i in range(n)]
            started = time.monotonic()
            stub.proc.terminate()
            codes = await asyncio.gather(*(c.recv_closed(timeout=5) for c in clients))
            exited = await asyncio.to_thread(stub.proc.wait, 5)
            return clients, codes, exited, time.monotonic() - started

    clients, codes, exited, took = run(go())
    assert exited == 0 and took < 5
    assert codes == [Close.SERVICE_RESTART] * n
    for c in clients:
        assert c.frames[-1]["t"] == T.GOAWAY and c.frames[-1]["retry_after_ms"] > 0


def test_an_embedded_backend_exits_when_the_process_that_started_it_is_killed(tmp_path):
    """kill -9 of a harness must not leave its backend running (it has its own process group)."""
    script = (
        "import sys, time\n"
        "from server_stub.process import StubProcess\n"
        f"s = StubProcess('--store', 'sqlite:{tmp_path}/p.db').start()\n"
        "print(s.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    try:
        backend = psutil.Process(int(parent.stdout.readline()))
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while backend.is_running() and backend.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not backend.is_running() or backend.status() == psutil.STATUS_ZOMBIE
    finally:
        parent.kill()
