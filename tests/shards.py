"""Run the test files in parallel pytest processes, sized to the machine's cores, not to a fixed number.

Most of the suite's time is spent in real runs (a ``locust`` process with its embedded backend, a
browser), and their timings are what the tests judge: reconnect latency, heartbeats, a restart's
storm. A run starved of CPU fails them; a run mostly waits on its timers, so a machine idle between
them wastes the suite's time. ``tests/capacity.py`` says how many real runs may go at once: two per
core (at least 1; ``TEST_REAL_RUNS=N`` or ``-j N`` overrides it). With N that number:

- N test files run at once, each in its own ``pytest`` process (one real run at a time each),
  the longest first (SECONDS), a free slot taking the next file;
- a file that runs several real runs at once inside (PARALLEL_INSIDE: the verdict runs, the
  scenarios' brief runs, the generator-fitness runs) takes all N slots and runs N at a time, alone,
  once the one-slot files are done: no other file's timing-sensitive run competes with its runs for
  the CPU, and the longest one-slot file (test_leak_managed_runtime.py's 4-minute runs) starts at
  once, beside the others, instead of running last with the slots around it idle.

On 2 cores (N = 4) ``bin/test`` must take 15 minutes or less (CI's budget; from SECONDS, about 12).
pytest-xdist cannot do this: its workers talk to the controller through threads, and importing
``locust`` (which gevent-patches ``threading``) in a worker deadlocks them. A pytest process per file
keeps module fixtures to one run each and output readable.

Tests write their runs under pytest's tmp_path (``--run-dir``): a run directory left in the clone's
``runs/`` fails the suite, named with what it ran, to find the test.

``python -m tests.shards [-j N] [--durations-out] [PYTEST_ARGS...]`` (``bin/test`` with no file
arguments). Each file's output is printed whole when it ends; the exit code is the worst file's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.capacity import ENV as REAL_RUNS_ENV
from tests.capacity import real_runs

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
RUNS = ROOT / "runs"
#: Seconds each file's pytest process takes on a 2-core machine, N = 4 (``--durations-out`` prints fresh
#: figures); files not listed count as DEFAULT_S. Only the order files start in depends on them.
SECONDS = {
    "test_users_locust_runs.py": 155,
    "test_leak_managed_runtime.py": 280,
    "test_scenarios.py": 245,
    "test_mqtt_mosquitto.py": 225,
    "test_analysis_verdicts.py": 190,
    "test_harness_runs.py": 145,
    "test_generator_fitness.py": 65,
    "test_users_bad_targets.py": 47,
    "test_harness_control.py": 125,
    "test_users_tls.py": 31,
    "test_example_chatline.py": 75,
    "test_webui_e2e.py": 125,
    "test_users_rate_limit.py": 19,
    "test_harness_remote.py": 35,
    "test_socketio_bad_servers.py": 14,
    "test_analysis_report.py": 68,
    "test_bench_gen_rundir.py": 46,
    "test_bench_gen_soak.py": 25,
    "test_stub_faults.py": 28,
    "test_analysis_notebooks.py": 20,
}
DEFAULT_S = 10
#: Files that run several real runs at once inside, as many as ``tests/capacity.py`` allows (the number
#: this sets in their TEST_REAL_RUNS): each takes every slot, so no other file's run competes with theirs.
#: (test_leak_managed_runtime.py's four runs at once take one slot: 10 users each against a Node.js target,
#: a tenth of a core each, and nothing in them is timed; its 240 s runs alone would cost the suite 4 minutes.)
#: (test_mqtt_mosquitto.py's broker runs go one at a time in one slot: beside the other one-slot files there is
#: room for their 200 s, and alone they would cost the suite its minute and a half.)
PARALLEL_INSIDE = ("test_scenarios.py", "test_analysis_verdicts.py", "test_generator_fitness.py")
#: pytest's exit code when a file has no test to run (tests/test_users_plugin.py; a -k that selects none).
NO_TESTS = 5


@dataclass
class Job:
    """One test file in its own pytest process, and how many real runs it may have going at once."""

    path: Path
    slots: int


def schedule(files: list[Path], slots: int) -> list[Job]:
    """The one-slot files longest first; then the PARALLEL_INSIDE files, each with every slot, alone."""
    heavy = [Job(p, slots) for p in files if p.name in PARALLEL_INSIDE]
    rest = sorted((p for p in files if p.name not in PARALLEL_INSIDE), key=lambda p: -SECONDS.get(p.name, DEFAULT_S))
    return [Job(p, 1) for p in rest] + heavy


def run_entries() -> set[str]:
    """What the clone's ``runs/`` holds now (nothing if it does not exist)."""
    return {p.name for p in RUNS.iterdir()} if RUNS.is_dir() else set()


def describe_run(name: str) -> str:
    """A run directory's name and what ran in it (scenario, user classes), to find the test that left it."""
    try:
        meta = json.loads((RUNS / name / "meta.json").read_text())
    except (OSError, ValueError):
        return name
    classes = ", ".join(f"{c}={n}" for c, n in (meta.get("user_classes") or {}).items())
    scenario = f"scenario {meta['scenario']}, " if meta.get("scenario") else ""
    return f"{name} ({scenario}users {classes or '?'}, host {meta.get('host')})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.shards", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "-j", "--jobs", type=int, default=None, help=f"real runs at once (default: {REAL_RUNS_ENV}, else two per core)"
    )
    parser.add_argument("--durations-out", action="store_true", help="print each file's seconds at the end")
    args, pytest_args = parser.parse_known_args(argv)
    try:
        slots = real_runs() if args.jobs is None else args.jobs
    except ValueError as e:
        parser.error(str(e))
    if slots < 1:
        parser.error(f"--jobs: {slots} must be 1 or more")
    files = sorted(TESTS.glob("test_*.py"))
    pending = schedule(files, slots)
    runs_before = run_entries()
    started = time.monotonic()
    print(f"{len(files)} test files, {slots} real run(s) at once", flush=True)
    worst, seconds, failed = 0, {}, []
    with tempfile.TemporaryDirectory(prefix="shards-") as tmp:
        running: list[tuple[Job, subprocess.Popen, Path, float]] = []
        while pending or running:
            # In order: a job that needs every slot waits for them, and nothing overtakes it.
            while pending and pending[0].slots <= slots - sum(job.slots for job, *_ in running):
                job = pending.pop(0)
                log = Path(tmp) / f"{job.path.stem}.log"
                cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *pytest_args]
                env = {**os.environ, REAL_RUNS_ENV: str(job.slots)}
                with open(log, "wb") as out:
                    proc = subprocess.Popen(
                        [*cmd, str(job.path.relative_to(ROOT))], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
                    )
                running.append((job, proc, log, time.monotonic()))
            time.sleep(0.2)
            for entry in [e for e in running if e[1].poll() is not None]:
                running.remove(entry)
                job, proc, log, t0 = entry
                code = 0 if proc.returncode == NO_TESTS else proc.returncode
                worst = max(worst, code)
                if code:
                    failed.append(f"{job.path.name} (exit {code})")
                seconds[job.path.name] = took = time.monotonic() - t0
                print(
                    f"\n===== {job.path.name} (exit {code}, {took:.0f} s, {job.slots} real run(s) at once)", flush=True
                )
                print(log.read_text(errors="replace"), flush=True)
    if args.durations_out:
        for name, s in sorted(seconds.items(), key=lambda kv: -kv[1]):
            print(f"    {name!r}: {s:.0f},")
    left = sorted(run_entries() - runs_before)
    if left:
        print(f"\nthe tests left {len(left)} run(s) in {RUNS}; give their runs --run-dir under tmp_path:")
        for name in left:
            print(f"    {describe_run(name)}")
        worst = max(worst, 1)
    verdict = "all test files passed" if not failed else "failed: " + ", ".join(failed)
    if left:
        verdict += f"; {len(left)} run(s) left in runs/"
    print(f"\n{verdict} in {time.monotonic() - started:.0f} s")
    return worst


if __name__ == "__main__":
    sys.exit(main())
