"""The load generator's own lateness in three runs, and what the verdicts said in each.

The same short run (every user class, 15 users, the fast timings of the verdict
tests, the embedded backend) three times, one after the other:

* **calm**: nothing else added;
* **hog**: ``2 x cores`` busy loops (plain Python ``while True``) run beside it,
  niced to 0 like the run itself: the machine is saturated, generator and
  backend alike;
* **stopped**: the Locust process (not its backend) is stopped with SIGSTOP for
  2.5 s, four times, as a long GC pause or a frozen VM would.

For each run it prints the Locust process's event-loop lag (median, p99, max
of its samples), the late stretches beyond the harness-health threshold, the
machine's run queue, and each verdict's status. The point is the contrast: a
starved or stopped generator shows in harness-health and in the verdicts that
set its figures aside, and no verdict blames the backend for it.

    .venv/bin/python bench/bench_generator_lateness.py [--seconds 36]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from tests.locustfiles.verdict_runs import FAST_BACKEND, FAST_USERS  # noqa: E402

ALL = ("ConversationUser", "FlappingUser", "HeartbeatUser", "TokenRefreshUser", "ZombieUser")
STOP_S, STOPS, FIRST_STOP_S, STOP_EVERY_S = 2.5, 4, 8.0, 6.0
HOG = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass\n"


def run(root: Path, name: str, seconds: int, during=None) -> Path:
    args = [
        sys.executable, "-m", "locust", "-f", "locustfile.py", "--headless", "--only-summary",
        "-u", "15", "-r", "15", "-t", f"{seconds}s", "--run-dir", str(root), "--run-id", name,
        "--drain", "3", "--sample-interval", "0.5", *FAST_BACKEND, *FAST_USERS, *ALL,
    ]  # fmt: skip
    with open(root / f"{name}.log", "wb") as log:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    helper = threading.Thread(target=during, args=(proc,), daemon=True) if during else None
    if helper:
        helper.start()
    proc.wait(seconds + 120)
    if helper:
        helper.join(30)
    subprocess.run([sys.executable, "-m", "analysis", str(root / name)], cwd=ROOT, capture_output=True, timeout=300)
    return root / name


def stop_generator(proc: subprocess.Popen) -> None:
    time.sleep(FIRST_STOP_S)
    for _ in range(STOPS):
        if proc.poll() is not None:
            return
        proc.send_signal(signal.SIGSTOP)
        time.sleep(STOP_S)
        proc.send_signal(signal.SIGCONT)
        time.sleep(STOP_EVERY_S - STOP_S)


def hog(seconds: int):
    def start(proc: subprocess.Popen) -> None:
        code = HOG.format(seconds=seconds + 10)
        loops = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2 * (os.cpu_count() or 1))]
        proc.wait()
        for loop in loops:
            loop.kill()

    return start


def figures(run_dir: Path) -> dict:
    samples = pd.read_csv(run_dir / "samples.csv")
    local = samples.loc[samples["source"] == "local", "loop_lag_ms"].dropna()
    machine = samples.loc[samples["source"] == "machine"]
    verdicts = {v["name"]: v for v in json.loads((run_dir / "verdicts.json").read_text())["verdicts"]}
    health = verdicts["harness-health"]["details"]
    return {
        "lag_median_ms": local.median(),
        "lag_p99_ms": local.quantile(0.99),
        "lag_max_ms": local.max(),
        "late_stretches": health["late_stretches"],
        "late_s": health["late_seconds"],
        "run_queue_median": machine["run_queue"].median(),
        "verdicts": {n: v["status"] for n, v in verdicts.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=36)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-lateness-") as tmp:
        root = Path(tmp)
        results = {
            "calm": figures(run(root, "calm", args.seconds)),
            "hog": figures(run(root, "hog", args.seconds, hog(args.seconds))),
            "stopped": figures(run(root, "stopped", args.seconds, stop_generator)),
        }
    print(f"machine: {os.cpu_count()} cores; harness-health late beyond 250 ms (analysis/thresholds.toml)\n")
    print(f"{'run':8s} {'lag median':>10s} {'p99':>8s} {'max':>8s} {'late':>14s} {'run queue':>9s}")
    for name, f in results.items():
        late = f"{f['late_stretches']} / {f['late_s']:.1f} s"
        print(
            f"{name:8s} {f['lag_median_ms']:8.0f} ms {f['lag_p99_ms']:5.0f} ms {f['lag_max_ms']:5.0f} ms"
            f" {late:>14s} {f['run_queue_median']:9.0f}"
        )
    print()
    names = list(next(iter(results.values()))["verdicts"])
    print(f"{'verdict':18s} " + " ".join(f"{n:>13s}" for n in results))
    for verdict in names:
        print(f"{verdict:18s} " + " ".join(f"{results[n]['verdicts'][verdict]:>13s}" for n in results))


if __name__ == "__main__":
    main()
