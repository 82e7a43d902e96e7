"""What recording costs a worker, and whether the master keeps up: recording on vs ``--no-record``.

Each trial runs two ``locust --processes N`` side by side on loopback (same
locustfile, same embedded backend setup, one with ``--no-record``) and measures
every worker's and the master's CPU seconds (psutil) over the same fixed window
after the users have spawned. Prints the medians of the trials, the recording's
cost per worker as a share of one core (budget: recording + telemetry <= 5 %),
the master's CPU, and whether the master kept up: every event each worker
emitted arrived (meta.json ``recording``), none undelivered.

``--mix routine`` (the default) emits what a soak emits most: a flapping user's
routine cycle and heartbeats (tests/locustfiles/events_locustfile.py ``MIX``),
counted per interval by the workers (harness/tally.py). ``--mix raw`` emits
events that are each a raw row (the worst case: a backend failing everything).
The issue's target: 10,000 heartbeat users (667 events/s) and 500 flapping users
(~15,500 events/s) over 4 workers, about 4,000 events/s each:

    .venv/bin/python bench/bench_harness_recording.py [--quick] [--rate 4000] [--processes 4] [--mix routine]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = "tests/locustfiles/events_locustfile.py"
USERS = 10
EVENTS_PER_TASK = 10


def start(record: bool, rate: float, run_time: float, run_dir: str, processes: int, mix: str) -> subprocess.Popen:
    wait = USERS * EVENTS_PER_TASK / rate  # each user: EVENTS_PER_TASK events every `wait` seconds
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HARNESS_TEST_EVENTS_PER_TASK": str(EVENTS_PER_TASK),
        "HARNESS_TEST_WAIT_S": str(wait),
        "HARNESS_TEST_ROUTINE": "mix" if mix == "routine" else "",
    }
    users = USERS * processes
    args = [sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--headless", "--processes", str(processes)]
    args += ["--only-summary", "-u", str(users), "-r", str(users), "--run-time", str(int(run_time))]
    args += ["--run-dir", run_dir, "--drain", "0"]
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


def workers_of(proc: subprocess.Popen, n: int, timeout: float = 15) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [c for c in psutil.Process(proc.pid).children() if "server_stub" not in " ".join(c.cmdline())]
        if len(found) >= n:
            return found
        time.sleep(0.05)
    raise RuntimeError(f"{n} worker processes did not appear")


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


@dataclass
class Trial:
    worker_cpu_s: dict[bool, float]  #: recording on / off: CPU seconds per worker over the window (mean)
    master_cpu_s: dict[bool, float]
    events_per_s: float  #: per worker, over the whole run (Locust's count of bursts)
    kept_up: bool  #: every event each worker emitted arrived at the master (recording on)
    rows: dict  #: what the run directory holds (recording on)


def trial(rate: float, window: float, warmup: float, processes: int, mix: str) -> Trial:
    """One pair of runs: every worker's and the master's CPU seconds over ``window``, recording on and off."""
    with tempfile.TemporaryDirectory() as tmp:
        run_time = warmup + window + 2
        procs = {rec: start(rec, rate, run_time, f"{tmp}/{rec}", processes, mix) for rec in (True, False)}
        try:
            workers = {rec: workers_of(p, processes) for rec, p in procs.items()}
            masters = {rec: psutil.Process(p.pid) for rec, p in procs.items()}
            for rec in procs:
                wait_started(f"{tmp}/{rec}")
            time.sleep(warmup)
            before = {rec: [cpu(w) for w in ws] for rec, ws in workers.items()}
            master_before = {rec: cpu(m) for rec, m in masters.items()}
            time.sleep(window)
            used = {rec: statistics.mean(cpu(w) - b for w, b in zip(ws, before[rec], strict=True))
                    for rec, ws in workers.items()}  # fmt: skip
            master = {rec: cpu(m) - master_before[rec] for rec, m in masters.items()}
            for p in procs.values():
                p.wait(run_time + 60)
            meta = json.loads((Path(tmp) / "True" / "latest" / "meta.json").read_text())
            bursts = stats_count(Path(tmp) / "True" / "latest" / "locust_stats.csv")
        finally:
            for p in procs.values():
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
    rec = meta["recording"]
    kept_up = (
        rec.get("events_undelivered") == 0
        and not rec.get("workers_not_flushed")
        and all(t["emitted"] == t["received"] for t in rec["per_worker"].values())
    )
    events_per_s = bursts * EVENTS_PER_TASK / run_time / processes
    return Trial(used, master, events_per_s, kept_up, meta.get("rows") or {})


def stats_count(path: Path) -> int:
    with open(path, newline="") as f:
        return next(int(r["Request Count"]) for r in csv.DictReader(f) if r["Name"] == "burst")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short windows (< 40 s in all)")
    ap.add_argument("--rate", type=float, default=4000.0, help="events per second on each worker")
    ap.add_argument("--processes", type=int, default=4, help="Locust worker processes (--processes)")
    ap.add_argument("--mix", choices=("routine", "raw"), default="routine")
    ap.add_argument("--trials", type=int, default=3)
    a = ap.parse_args()
    window, warmup = (4.0, 2.0) if a.quick else (15.0, 3.0)
    trials = []
    for i in range(a.trials):
        t = trial(a.rate, window, warmup, a.processes, a.mix)
        trials.append(t)
        print(
            f"trial {i + 1}: per worker over {window:.0f} s: recording {t.worker_cpu_s[True]:.3f} s, --no-record "
            f"{t.worker_cpu_s[False]:.3f} s; master {t.master_cpu_s[True]:.3f} s (off {t.master_cpu_s[False]:.3f} s);"
            f" {t.events_per_s:,.0f} events/s per worker; kept up: {t.kept_up}; rows {t.rows}"
        )
    med = statistics.median
    on, off = med(t.worker_cpu_s[True] for t in trials), med(t.worker_cpu_s[False] for t in trials)
    master_on, master_off = med(t.master_cpu_s[True] for t in trials), med(t.master_cpu_s[False] for t in trials)
    rate = med(t.events_per_s for t in trials)
    extra = (on - off) / window  # CPU seconds per second: a fraction of one core
    print(f"workers x events/s      : {a.processes} x {rate:,.0f} ({a.mix} mix; asked {a.rate:,.0f})")
    print(f"worker CPU, recording   : {100 * on / window:.1f} % of a core (median of {a.trials})")
    print(f"worker CPU, --no-record : {100 * off / window:.1f} %")
    print(f"recording cost          : {100 * extra:.2f} % of one core per worker (budget 5 %), "
          f"{1e6 * (on - off) / window / rate:.1f} us per event" if rate else "")  # fmt: skip
    print(
        f"master CPU              : {100 * master_on / window:.1f} % recording, {100 * master_off / window:.1f} % off"
    )
    print(f"master kept up          : {all(t.kept_up for t in trials)} (every event arrived, none undelivered)")


if __name__ == "__main__":
    main()
