"""What recording costs a worker: CPU seconds at 1,000 events/s, recording on vs ``--no-record``.

Each trial runs two ``locust --processes 1`` side by side on loopback (same
locustfile, same embedded backend setup, one with ``--no-record``) and measures
the worker process's CPU seconds (psutil) over the same fixed window after the
users have spawned. Prints the median of the trials and the ratio; the budget
is recording + telemetry <= 5 % of a worker's CPU.

    .venv/bin/python bench/bench_harness_recording.py [--quick] [--rate 1000] [--trials 3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = "tests/locustfiles/events_locustfile.py"
USERS = 10
EVENTS_PER_TASK = 10


def start(record: bool, rate: float, run_time: float, run_dir: str) -> subprocess.Popen:
    wait = USERS * EVENTS_PER_TASK / rate  # each user: EVENTS_PER_TASK events every `wait` seconds
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HARNESS_TEST_EVENTS_PER_TASK": str(EVENTS_PER_TASK),
        "HARNESS_TEST_WAIT_S": str(wait),
    }
    args = [sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--headless", "--processes", "1", "--only-summary"]
    args += ["-u", str(USERS), "-r", str(USERS), "--run-time", str(int(run_time)), "--run-dir", run_dir]
    port = free_port()  # two masters side by side: each needs its own port
    args += ["--master-bind-host", "127.0.0.1", "--master-bind-port", str(port), "--master-port", str(port)]
    args += [] if record else ["--no-record"]
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_of(proc: subprocess.Popen, timeout: float = 15) -> psutil.Process:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(proc.pid).children():
            if "server_stub" not in " ".join(child.cmdline()):
                return child
        time.sleep(0.05)
    raise RuntimeError("the worker process did not appear")


def wait_started(run_root: str, timeout: float = 20) -> None:
    """Until the harness has recorded the test start in meta.json (users are being spawned)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads((Path(run_root) / "latest" / "meta.json").read_text()).get("test_starts_utc"):
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise RuntimeError("the test did not start")


def cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def trial(rate: float, window: float, warmup: float) -> tuple[float, float]:
    """One pair of runs: worker CPU seconds over ``window`` with recording on and off."""
    with tempfile.TemporaryDirectory() as tmp:
        run_time = warmup + window + 2
        procs = {rec: start(rec, rate, run_time, f"{tmp}/{rec}") for rec in (True, False)}
        try:
            workers = {rec: worker_of(p) for rec, p in procs.items()}
            for rec in procs:
                wait_started(f"{tmp}/{rec}")
            time.sleep(warmup)
            before = {rec: cpu(w) for rec, w in workers.items()}
            time.sleep(window)
            used = {rec: cpu(w) - before[rec] for rec, w in workers.items()}
            for p in procs.values():
                p.wait(run_time + 30)
        finally:
            for p in procs.values():
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
    return used[True], used[False]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short windows (< 30 s in all)")
    ap.add_argument("--rate", type=float, default=1000.0, help="events per second on the worker")
    ap.add_argument("--trials", type=int, default=3)
    a = ap.parse_args()
    window, warmup = (2.5, 1.0) if a.quick else (15.0, 3.0)
    on, off = [], []
    for i in range(a.trials):
        with_rec, without = trial(a.rate, window, warmup)
        on.append(with_rec)
        off.append(without)
        print(f"trial {i + 1}: worker CPU over {window:.1f} s: recording {with_rec:.3f} s, --no-record {without:.3f} s")
    m_on, m_off = statistics.median(on), statistics.median(off)
    extra = (m_on - m_off) / window  # CPU seconds per second: a fraction of one core
    print(f"events/s per worker     : {a.rate:.0f}")
    print(f"worker CPU, recording   : {100 * m_on / window:.1f} % (median of {a.trials})")
    print(f"worker CPU, --no-record : {100 * m_off / window:.1f} %")
    print(f"ratio on/off            : {m_on / m_off:.3f}" if m_off else "ratio on/off: n/a")
    print(f"recording cost          : {100 * extra:.2f} % of one core (budget 5 %)")


if __name__ == "__main__":
    main()
