"""Short real runs against the reference backend, clean or with one planted fault, for the verdict tests.

Each run is a real ``locust --headless`` process with the root locustfile and
its embedded backend on loopback. Several run at once, as many as the machine has
cores (``tests/capacity.py``): more would starve the runs whose timings are judged.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..capacity import real_runs
from .harness_runs import ROOT, start_locust

#: Backend timings shortened so every behaviour happens within seconds.
FAST_BACKEND = (
    "--stub-hb-interval-ms", "1000",      # zombies reaped after 1.5 s
    "--stub-resume-window", "4",          # extended gaps expire quickly
    "--stub-chunk-delay-ms", "20",
    "--stub-token-ttl", "4",
    "--stub-refresh-grace-ms", "1000",
)  # fmt: skip
FAST_USERS = (
    "--token-ttl-s", "4",
    "--refresh-ahead-s", "1.5",
    "--zombie-max-wait-s", "5",
    "--gap-medium-s", "0.5",
    "--gap-extended-s", "5",
    "--backoff-base-ms", "200",
    "--backoff-cap-ms", "2000",
)  # fmt: skip


@dataclass(frozen=True)
class Spec:
    """One run: the user classes, how many users, for how long, and the fault planted (if any)."""

    classes: tuple[str, ...]
    users: int
    seconds: int
    fault: str | None = None
    extra: tuple[str, ...] = ()

    def args(self, run_dir: Path, run_id: str) -> list[str]:
        fault = ["--stub-fault", self.fault] if self.fault else []
        return [
            "--headless", "--only-summary",
            "-u", str(self.users), "-r", str(self.users), "-t", f"{self.seconds}s",
            "--run-dir", str(run_dir), "--run-id", run_id,
            "--drain", "3", "--sample-interval", "0.5",
            *FAST_BACKEND, *FAST_USERS, *fault, *self.extra, *self.classes,
        ]  # fmt: skip


ALL = ("ConversationUser", "FlappingUser", "HeartbeatUser", "TokenRefreshUser", "ZombieUser")
FLAPPING = ("FlappingUser",)
CONVERSATION = ("ConversationUser",)

#: name -> the run. "clean" exercises every verdict (a restart included) and must pass them all.
SPECS = {
    # The same write-behind as forget-on-restart: a clean backend flushes on SIGTERM and loses nothing.
    "clean": Spec(
        ALL,
        15,
        24,
        extra=("--stub-restart-at", "10", "--stub-flush-interval-ms", "8000", "--flap-takeover-share", "0.1"),
    ),
    "leak": Spec(FLAPPING, 8, 16, "leak"),
    "fd-leak": Spec(FLAPPING, 8, 12, "fd-leak"),
    # Also the quit hook: --verdicts makes the analysis's exit code Locust's.
    "duplicate-agent": Spec(FLAPPING, 4, 8, "duplicate-agent", ("--verdicts",)),
    # Takeover probes: a second connection resumes each session while its first is open.
    "no-takeover": Spec(FLAPPING, 4, 8, "no-takeover", ("--flap-takeover-share", "0.3")),
    "lose-offline": Spec(CONVERSATION, 6, 12, "lose-offline"),
    "stream-gap": Spec(CONVERSATION, 6, 12, "stream-gap"),
    "no-reap": Spec(("ZombieUser",), 3, 10, "no-reap"),
    # A 1.5-3 s resume outlasts the fast idle timeout: keep the backend's usual heartbeat here.
    "slow-resume": Spec(FLAPPING, 6, 12, "slow-resume", ("--stub-hb-interval-ms", "15000")),
    "refresh-breaks": Spec(("TokenRefreshUser",), 4, 10, "refresh-breaks"),
    # An 8 s write-behind and a restart at 6 s: every session exists only in memory when the backend stops.
    "forget-on-restart": Spec(
        CONVERSATION, 10, 14, "forget-on-restart", ("--stub-restart-at", "6", "--stub-flush-interval-ms", "8000")
    ),
}

#: The verdict each planted fault must fail (README, Planted faults).
TARGET = {
    "leak": "leak",
    "fd-leak": "leak",
    "duplicate-agent": "duplicate-agent",
    "no-takeover": "duplicate-agent",
    "lose-offline": "delivery",
    "stream-gap": "delivery",
    "no-reap": "zombie",
    "slow-resume": "reconnect-latency",
    "refresh-breaks": "refresh",
    "forget-on-restart": "restart",
}

#: Verdicts a fault may fail besides its target. forget-on-restart: a forgotten session's pushes and
#: history are gone too; and with few reconnects, those through the restart set the p99, which a busy
#: machine's slower backend start can push past 2 s.
MAY_ALSO_FAIL = {"forget-on-restart": ("delivery", "context", "reconnect-latency")}


def run_all(
    names, root: Path, parallel: int | None = None, timeout: float = 120, specs: dict[str, Spec] | None = None
) -> dict[str, tuple[Path, int | None]]:
    """Run the named specs (of ``specs``, default :data:`SPECS`), longest first, at most ``parallel`` at a time
    (default: ``capacity.real_runs()``); return name -> (run directory, locust's exit code)."""
    specs = SPECS if specs is None else specs
    parallel = parallel or real_runs()
    pending = sorted(names, key=lambda name: -specs[name].seconds)
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    done: dict[str, tuple[Path, int | None]] = {}
    while pending or running:
        while pending and len(running) < parallel:
            name = pending.pop(0)
            spec = specs[name]
            proc = start_locust(*spec.args(root, name), log=root / f"{name}.log", locustfile="locustfile.py")
            running[name] = (proc, time.monotonic() + spec.seconds + timeout)
        for name, (proc, deadline) in list(running.items()):
            if proc.poll() is None and time.monotonic() < deadline:
                continue
            code = proc.poll()
            if code is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            del running[name]
            done[name] = (root / name, code)
        time.sleep(0.2)
    return done


def assert_generator_fit(run_dir: Path) -> None:
    """A test that needs a calm machine says so when it did not have one: harness-health, which judges the
    generator's own lateness and load, must have passed before any other verdict is held against the backend."""
    health = next(
        v for v in json.loads((run_dir / "verdicts.json").read_text())["verdicts"] if v["name"] == "harness-health"
    )
    why = health["summary"]
    assert health["status"] == "pass", f"the load generator was not fit to measure (a busy machine?): {why}"


def analyse(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """``python -m analysis RUN_DIR`` as a user (or the quit hook) runs it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "analysis", str(run_dir), *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
