"""Run the test files in parallel pytest processes (shards), balanced by how long each file takes.

Most of the suite's wall time is waiting on real runs (Locust, the backend, a browser),
not CPU, so a 2-core machine runs several files at once. pytest-xdist cannot: its workers
talk to the controller through threads, and importing ``locust`` (which gevent-patches
``threading``) in a worker deadlocks them. So each shard is a plain ``pytest`` process on
whole files: module fixtures run once, output stays readable.

``python -m tests.shards [-j N] [PYTEST_ARGS...]`` (``bin/test`` with no file arguments).
Each shard's output is printed whole when it ends; the exit code is the worst shard's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
#: Seconds each file takes in a shard on this 2-core machine (``--durations-out`` prints fresh figures);
#: files not listed count as DEFAULT_S. Only the balance depends on them.
SECONDS = {
    "test_users_locust_runs.py": 265,
    "test_analysis_verdicts.py": 200,
    "test_scenarios.py": 240,
    "test_harness_runs.py": 145,
    "test_users_bad_targets.py": 100,
    "test_harness_control.py": 95,
    "test_users_tls.py": 70,
    "test_webui_e2e.py": 80,
    "test_users_rate_limit.py": 35,
    "test_harness_remote.py": 30,
}
DEFAULT_S = 10
#: Files that run several Locust runs at once inside: one shard runs them one after the other, or
#: together they would starve the CPU that the timing-sensitive files of the other shards need.
PARALLEL_INSIDE = ("test_scenarios.py", "test_analysis_verdicts.py")


def balance(files: list[Path], shards: int) -> list[list[Path]]:
    """The PARALLEL_INSIDE files in one shard; the others longest first, each to the least loaded shard."""
    heavy = [p for p in files if p.name in PARALLEL_INSIDE]
    bins: list[tuple[float, list[Path]]] = [(sum(SECONDS.get(p.name, DEFAULT_S) for p in heavy), heavy)]
    bins += [(0.0, []) for _ in range(shards - 1)]
    for path in sorted((p for p in files if p not in heavy), key=lambda p: -SECONDS.get(p.name, DEFAULT_S)):
        i = min(range(len(bins)), key=lambda k: bins[k][0])
        load, members = bins[i]
        bins[i] = (load + SECONDS.get(path.name, DEFAULT_S), [*members, path])
    return [members for _, members in bins if members]


def file_seconds(junit: Path) -> dict[str, float]:
    """Per test file, the seconds its tests took (from a junit XML report)."""
    totals: dict[str, float] = {}
    for case in ET.parse(junit).iter("testcase"):
        name = case.get("classname", "").split(".")[-1] + ".py"
        totals[name] = totals.get(name, 0.0) + float(case.get("time", 0))
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.shards", description=__doc__.split("\n\n")[0])
    parser.add_argument("-j", "--jobs", type=int, default=int(os.environ.get("TEST_JOBS", 3)), help="shards at once")
    parser.add_argument("--durations-out", action="store_true", help="print each file's seconds at the end")
    args, pytest_args = parser.parse_known_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs: {args.jobs} must be 1 or more")
    files = sorted(TESTS.glob("test_*.py"))
    groups = balance(files, args.jobs)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="shards-") as tmp:
        running = []
        for i, group in enumerate(groups):
            log, junit = Path(tmp) / f"shard-{i}.log", Path(tmp) / f"shard-{i}.xml"
            cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--junitxml={junit}", *pytest_args]
            cmd += [str(p.relative_to(ROOT)) for p in group]
            with open(log, "wb") as out:
                proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
            running.append((i, group, proc, log, junit))
        print(f"{len(files)} test files in {len(groups)} shards", flush=True)
        worst, seconds = 0, {}
        for i, group, proc, log, junit in running:
            code = proc.wait()
            worst = max(worst, code)
            names = " ".join(p.name for p in group)
            print(f"\n===== shard {i} (exit {code}): {names}\n{log.read_text(errors='replace')}", flush=True)
            if junit.exists():
                seconds.update(file_seconds(junit))
    if args.durations_out:
        for name, s in sorted(seconds.items(), key=lambda kv: -kv[1]):
            print(f"    {name!r}: {s:.0f},")
    verdict = "all shards passed" if worst == 0 else f"a shard failed (worst exit code {worst})"
    print(f"\n{verdict} in {time.monotonic() - started:.0f} s")
    return worst


if __name__ == "__main__":
    sys.exit(main())
