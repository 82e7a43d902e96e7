"""Processes the harness runs: targets run like the reference backend (:class:`TargetProcess`), and what they
need beside them: free loopback ports, children that die with the harness, a throwaway ``redis-server`` (the
Socket.IO target's Redis streams adapter; the tests' Redis store)."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from server_stub.process import StubProcess


class HelperError(RuntimeError):
    """A helper process that could not start; the message names why and where its log is."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the harness dies (prctl PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass


class RedisServer:
    """A ``redis-server`` on a free loopback port with no persistence, its log and files in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise HelperError("redis-server is not installed (bin/setup installs Debian's package)")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        log_path = self.directory / "redis.log"
        args = ["--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [binary, *args, "--dir", str(self.directory)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=die_with_parent,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self._answers():
                return self
            time.sleep(0.05)
        self.stop()
        tail = log_path.read_text(errors="replace")[-1000:]
        raise HelperError(f"redis-server did not start; log {log_path}:\n{tail}")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class TargetProcess(StubProcess):
    """A target other than the reference backend, run like it: own process group, ready line, same port on restart."""

    def __init__(self, target, *args: str, log_path: Path) -> None:
        super().__init__(*args, log_path=log_path)
        self.target = target

    def command(self, args: list[str]) -> list[str]:
        return [*self.target.program, *args, "--parent-pid", str(os.getpid())]

    def start(self, timeout: float = 15.0) -> TargetProcess:
        super().start(timeout)
        self.admin_token = str(self.info.get("admin_token") or self.admin_token)
        return self

    @property
    def ws_url(self) -> str:
        return str(self.info.get("ws_url") or "")
