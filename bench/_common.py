"""Shared plumbing of the server_stub benchmarks: worker processes, the echo baseline, pinning, figures."""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from server_stub.process import StubProcess  # noqa: E402

PY = sys.executable


class WorkerProc:
    """A ``bench/wsload.py worker`` child: one JSON command per line in, one JSON answer per line out."""

    def __init__(self, cpu: int | None = None) -> None:
        args = [PY, str(BENCH / "wsload.py"), "worker"]
        if cpu is not None:
            args += ["--cpu", str(cpu)]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, text=True)

    def send(self, cmd: str, **kw) -> None:
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}) + "\n")
        self.proc.stdin.flush()

    def recv(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"wsload worker {self.proc.pid} exited ({self.proc.poll()})")
        answer = json.loads(line)
        if not answer.get("ok"):
            raise RuntimeError(f"wsload worker: {answer.get('error')}")
        return answer

    def call(self, cmd: str, **kw) -> dict:
        self.send(cmd, **kw)
        return self.recv()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(10)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


class EchoServer:
    """``bench/echo_server.py`` as a child: the bare-aiohttp baseline."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [PY, str(BENCH / "echo_server.py")], stdout=subprocess.PIPE, cwd=ROOT, text=True, start_new_session=True
        )
        self.info = json.loads(self.proc.stdout.readline())
        self.pid = int(self.info["pid"])
        self.port = int(self.info["url"].rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def add_backend_arguments(ap) -> None:
    """The options every server_stub benchmark takes for the backend it starts."""
    ap.add_argument("--store", default=None, help="the backend's --store (default: a fresh SQLite file)")
    ap.add_argument(
        "--stub-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more command-line argument for the backend (repeatable), e.g. --stub-arg=--rate-limit=0",
    )


def start_stub(*args: str, store: str | None = None) -> tuple[StubProcess, Path]:
    """A backend on ``store``; by default a fresh SQLite file (the default store kind) in a temp dir."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-stub-"))
    stub = StubProcess("--store", store or f"sqlite:{tmp}/sessions.db", *args, log_path=tmp / "stub.log")
    stub.start()
    return stub, tmp


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def pin_process(pid: int, cpu: int) -> None:
    """Pin every thread of a process to one CPU (``taskset -a -c``)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), {cpu})
        except ProcessLookupError:
            pass


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def cpu_s(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def pct(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def banner(title: str) -> None:
    cpus = os.cpu_count()
    print(f"== {title}")
    print(
        f"   {time.strftime('%Y-%m-%d %H:%M')}  python {platform.python_version()}  {cpus} cpus  "
        f"{platform.machine()}  load avg {os.getloadavg()[0]:.2f}"
    )
