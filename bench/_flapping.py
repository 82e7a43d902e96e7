"""CPU per flapping cycle of a whole Locust process (issue 16's method), for bench_users_flapping.py and
bench_flapping_vs_artillery.py.

A ``locust`` child runs N FlappingUsers (``bench/flapping_locustfile.py``: the users and Locust, no
harness) for a short and a long run against one backend; the figure is

    (CPU of the long run - CPU of the short run) / (cycles of the long run - cycles of the short run)

so what every run pays once (interpreter start, imports, spawning, stopping) cancels out. The CPU is
the child's own user + system time from ``os.wait4`` once it exited, every thread included. The backend
(the reference server_stub, ``--store memory --rate-limit 0``) is pinned to CPU 0 and the load
generator to CPU 1 (on a machine with 2 CPUs or more), so neither takes the other's core.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench._common import pin_process
from server_stub.process import StubProcess

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "bench" / "flapping_locustfile.py"
BACKEND_CPU, LOAD_CPU = 0, 1
#: The issue's cycle: 30 users, 50 ms connected, 50 ms away, a new session every cycle.
USERS, CONNECTED_MS, AWAY_MS = 30, 50.0, 50.0
SHORT_S, LONG_S = 5, 25


def pinned() -> bool:
    return (os.cpu_count() or 1) >= 2


@contextmanager
def reference_backend():
    """The reference backend as the users' benchmarks start it, pinned to CPU 0 (threads included)."""
    with StubProcess("--store", "memory", "--rate-limit", "0") as stub:
        if pinned():
            pin_process(stub.pid, BACKEND_CPU)
        yield stub


@dataclass
class Run:
    """One Locust process's run: its CPU seconds (user + system, and each), completed cycles, failed requests."""

    seconds: float
    cpu_s: float
    cycles: int
    failures: dict
    events: int = 0
    user_s: float = 0.0
    sys_s: float = 0.0

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


@dataclass
class PerCycle:
    """The difference of a long and a short run: CPU per extra cycle."""

    short: Run
    long: Run

    @property
    def ms(self) -> float:
        extra = self.long.cycles - self.short.cycles
        return (self.long.cpu_s - self.short.cpu_s) / extra * 1000 if extra > 0 else float("nan")

    @property
    def user_ms(self) -> float:
        """The user-mode part of :attr:`ms` (the interpreter: our code, gevent, Locust)."""
        extra = self.long.cycles - self.short.cycles
        return (self.long.user_s - self.short.user_s) / extra * 1000 if extra > 0 else float("nan")

    @property
    def sys_ms(self) -> float:
        """The kernel's part of :attr:`ms` (system calls; on loopback also the receiving side's TCP work that
        the kernel does in the sender's context)."""
        extra = self.long.cycles - self.short.cycles
        return (self.long.sys_s - self.short.sys_s) / extra * 1000 if extra > 0 else float("nan")

    @property
    def extra_cycles(self) -> int:
        return self.long.cycles - self.short.cycles


def locust_run(
    host: str,
    seconds: int,
    *,
    users: int = USERS,
    connected_ms: float = CONNECTED_MS,
    away_ms: float = AWAY_MS,
    count_events: bool = False,
    root: Path = ROOT,
) -> Run:
    """One ``locust --headless`` child of ``users`` FlappingUsers, a new session each cycle, for ``seconds``;
    ``root``: the source tree whose users it runs (another checkout compares a change in one run)."""
    with tempfile.TemporaryDirectory(prefix="bench-flap-") as tmp:
        out = Path(tmp) / "figures.json"
        env = {**os.environ, "PYTHONPATH": str(root), "BENCH_FLAP_OUT": str(out)}
        if count_events:
            env["BENCH_FLAP_EVENTS"] = "1"
        args = [
            sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary", "--skip-log-setup",
            "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--host", host, "--flap-new-session", "true",
            "--flap-connected-ms", str(connected_ms), "--flap-disconnected-ms", str(away_ms), "FlappingUser",
        ]  # fmt: skip
        proc = subprocess.Popen(
            args, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=pin_to_load_cpu if pinned() else None,
        )  # fmt: skip
        user_s, sys_s = wait_cpu(proc)
        if not out.exists():
            raise RuntimeError(f"the Locust child wrote no figures (exit code {proc.returncode})")
        figures = json.loads(out.read_text())
    return Run(seconds, user_s + sys_s, figures["cycles"], figures["failures"], figures["events"], user_s, sys_s)


def pin_to_load_cpu() -> None:
    """A load generator's ``preexec_fn``: the child and every thread it starts run on CPU 1."""
    os.sched_setaffinity(0, {LOAD_CPU})


def wait_cpu_s(proc: subprocess.Popen) -> float:
    """Wait for the child to exit; its CPU seconds (user + system: its threads, and children it waited for)."""
    return sum(wait_cpu(proc))


def wait_cpu(proc: subprocess.Popen) -> tuple[float, float]:
    """Wait for the child to exit; its user and its system CPU seconds (its threads, children it waited for)."""
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime, usage.ru_stime


def cpu_per_cycle(host: str, short_s: int = SHORT_S, long_s: int = LONG_S, **kw) -> PerCycle:
    """CPU per cycle by the issue's method: a short run, then a long one, against ``host``."""
    return PerCycle(locust_run(host, short_s, **kw), locust_run(host, long_s, **kw))
