"""What the analysis costs on a 24-hour soak: wall time and peak RSS of ``python -m analysis RUN_DIR``.

Requirement: a generated 24-hour soak run directory (1 s samples, 5 million events) gives
verdicts + report in <= 30 s and <= 2 GiB RSS on this 2-core machine.

    .venv/bin/python bench/bench_analysis.py [--dir DIR] [--repeat 3] [--analyser analysis]
                                             [--hours 24 --events 5000000 --users 2000 --seed 1]

How. ``bench/gen_rundir.py`` writes the run directory once (into a temp dir, removed at the
end unless ``--keep``; or into / from ``--dir``: an existing run directory is reused as is).
Each of ``--repeat`` runs is a fresh ``python -m ANALYSER DIR`` child from the repository
root, interpreter start and imports included (that is what a user waits for), with
``verdicts.json`` and ``report.html`` removed before and checked after. Per run:

* wall time, spawn to exit (a thread blocks in ``wait4``, so no polling error);
* peak RSS two ways: psutil on the child and all its descendants every 50 ms, summed (what
  the machine must hold; a peak shorter than 50 ms can be missed), and the kernel's
  ``ru_maxrss`` of the child from ``wait4`` (exact, but of the largest single process of the
  tree, not the sum). The figure judged is the larger of the two.

The floor, for context: a child that only does ``pandas.read_csv(events.csv)``, measured the
same way, once with default dtypes and once with the string columns as ``category``. The
run directory was just written, so every run reads from the page cache (a warm disk).

Exit 0 with the figures, whatever they are (a benchmark, not a test: over budget prints
OVER); exit 2 when it could not measure: the generator failed, the analyser module has no
``__main__``, or a run crashed (exit code not 0/1/3) or wrote no verdicts.json / report.html.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from _common import banner  # noqa: E402

GiB = 1 << 30
BUDGET_S, BUDGET_RSS = 30.0, 2 * GiB
ANALYSIS_CODES = {0: "pass", 1: "fail", 3: "inconclusive"}  #: the analysis's exit codes; anything else crashed
OUTPUTS = ("verdicts.json", "report.html")
POLL_S = 0.05
STRING_COLUMNS = ("worker", "user", "session", "kind", "agent", "code", "detail")
SIZED = ("events.csv", "samples.csv", "server_stats.csv", "locust_stats_history.csv")
READ_CSV = "import sys, pandas as pd; pd.read_csv(sys.argv[1]{kw})"


@dataclass
class Measured:
    code: int
    wall_s: float
    tree_peak: int  #: bytes: the sum over the process tree, sampled
    maxrss: int  #: bytes: the kernel's peak of the largest single process
    stderr: str

    @property
    def peak(self) -> int:
        return max(self.tree_peak, self.maxrss)


def tree_rss(proc: psutil.Process) -> int:
    """RSS of a process and all its descendants (those that vanish meanwhile count 0)."""
    total = 0
    try:
        members = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in members:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def measure(args: list[str], timeout: float) -> Measured:
    """Run one child to its end: wall time, sampled tree RSS peak, kernel ru_maxrss."""
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        result: dict = {}

        def reap() -> None:  # wait4 rather than Popen.wait: it returns this child's rusage
            _, status, usage = os.wait4(proc.pid, 0)
            result.update(end=time.perf_counter(), status=status, usage=usage)

        waiter = threading.Thread(target=reap, daemon=True)
        waiter.start()
        watched, peak = psutil.Process(proc.pid), 0
        while waiter.is_alive():
            peak = max(peak, tree_rss(watched))
            if time.perf_counter() - started > timeout:
                proc.kill()
            waiter.join(POLL_S)
        proc.returncode = os.waitstatus_to_exitcode(result["status"])  # reaped by wait4: tell Popen
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    return Measured(proc.returncode, result["end"] - started, peak, result["usage"].ru_maxrss * 1024, stderr)


def has_main(analyser: str) -> bool:
    """Whether ``python -m ANALYSER`` can run, as the child sees it (cwd = repo root, same environment)."""
    probe = f"import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({analyser + '.__main__'!r}) else 1)"
    return subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True).returncode == 0


def prepare_run_dir(a) -> tuple[Path, Path | None]:
    """The run directory to analyse (generated unless ``--dir`` holds one) and a temp dir to remove after."""
    if a.dir is not None and (a.dir / "meta.json").exists():
        print(f"run directory: {a.dir} (reused)")
        return a.dir, None
    tmp = None
    if a.dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="bench-analysis-"))
    run_dir = a.dir or tmp / "run"
    args = [sys.executable, str(BENCH / "gen_rundir.py"), str(run_dir), "--hours", str(a.hours)]
    args += ["--events", str(a.events), "--users", str(a.users), "--seed", str(a.seed)]
    args += ["--leak-mib-per-hour", str(a.leak_mib_per_hour)]
    m = measure(args, timeout=600)
    if m.code != 0:
        print(m.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"bench_analysis: the generator failed (exit {m.code})")
    print(f"run directory: {run_dir} (generated in {m.wall_s:.1f} s, generator peak RSS {gib(m.peak)})")
    return run_dir, tmp


def describe(run_dir: Path) -> None:
    meta = json.loads((run_dir / "meta.json").read_text())
    rows = meta.get("rows", {})
    hours = (meta.get("load_stopped_utc", 0) - (meta.get("test_starts_utc") or [0])[0]) / 3600
    files = [run_dir / name for name in SIZED if (run_dir / name).exists()]
    sizes = ", ".join(f"{p.name} {p.stat().st_size / (1 << 20):.0f} MiB" for p in files)
    print(f"   {hours:.1f} h, {rows.get('events', 0):,} events, {rows.get('samples', 0):,} samples, {sizes}")


def gib(n: int) -> str:
    return f"{n / GiB:.2f} GiB"


def run_analysis(run_dir: Path, analyser: str, timeout: float) -> Measured:
    for name in OUTPUTS:
        (run_dir / name).unlink(missing_ok=True)
    return measure([sys.executable, "-m", analyser, str(run_dir)], timeout)


def check_outputs(run_dir: Path, m: Measured) -> str:
    """'' when the run produced what it must, else why not."""
    if m.code not in ANALYSIS_CODES:
        return f"exit code {m.code}"
    missing = [name for name in OUTPUTS if not (run_dir / name).is_file()]
    if missing:
        return f"exit code {m.code} but no {' / '.join(missing)}"
    try:
        json.loads((run_dir / "verdicts.json").read_text())
    except ValueError as e:
        return f"verdicts.json is not JSON: {e}"
    return ""


def verdict_summary(run_dir: Path) -> str:
    """``name: status`` of each verdict, whatever the exact shape (a list, or a dict holding one)."""
    data = json.loads((run_dir / "verdicts.json").read_text())
    items = data.get("verdicts", data) if isinstance(data, dict) else data
    if isinstance(items, dict):
        items = [{"name": k, **v} if isinstance(v, dict) else {"name": k, "status": v} for k, v in items.items()]
    return ", ".join(f"{v.get('name', '?')}: {v.get('status', '?')}" for v in items if isinstance(v, dict))


def floor(run_dir: Path, timeout: float) -> None:
    events = str(run_dir / "events.csv")
    kinds = {
        "default dtypes": READ_CSV.format(kw=""),
        "string columns as category": READ_CSV.format(kw=f", dtype=dict.fromkeys({STRING_COLUMNS!r}, 'category')"),
    }
    for label, code in kinds.items():
        m = measure([sys.executable, "-c", code, events], timeout)
        status = "" if m.code == 0 else f"  (exit {m.code}: {m.stderr.strip().splitlines()[-1:]})"
        print(f"floor: read_csv(events.csv), {label:<27} {m.wall_s:6.1f} s  {gib(m.peak)}{status}")


def report(runs: list[Measured]) -> None:
    print(f"{'run':>4} {'exit':>5} {'wall s':>8} {'RSS tree (50 ms)':>17} {'ru_maxrss':>10}")
    for i, m in enumerate(runs, 1):
        print(f"{i:>4} {m.code:>5} {m.wall_s:>8.1f} {gib(m.tree_peak):>17} {gib(m.maxrss):>10}")
    wall = statistics.median(m.wall_s for m in runs)
    peak = int(statistics.median(m.peak for m in runs))
    time_ok, rss_ok = wall <= BUDGET_S, peak <= BUDGET_RSS
    print(f"median of {len(runs)}: {wall:.1f} s (budget {BUDGET_S:.0f} s), ", end="")
    print(f"peak RSS {gib(peak)} (budget {gib(BUDGET_RSS)})")
    verdict = "PASS" if time_ok and rss_ok else "OVER"
    print(f"{verdict}: time {'ok' if time_ok else 'over'}, memory {'ok' if rss_ok else 'over'}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, help="run directory: reused if it holds meta.json, else generated there")
    ap.add_argument("--keep", action="store_true", help="keep the generated temp directory")
    ap.add_argument("--repeat", type=int, default=3, help="analysis runs (the median is judged)")
    ap.add_argument("--analyser", default="analysis", help="module run as python -m MODULE RUN_DIR")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds before a run is killed")
    ap.add_argument("--no-floor", action="store_true", help="skip the read_csv baselines")
    g = ap.add_argument_group("generated run directory (bench/gen_rundir.py)")
    g.add_argument("--hours", type=float, default=24.0)
    g.add_argument("--events", type=int, default=5_000_000)
    g.add_argument("--users", type=int, default=2000)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--leak-mib-per-hour", type=float, default=0.0)
    a = ap.parse_args()

    banner(f"analysis: python -m {a.analyser} RUN_DIR, budget {BUDGET_S:.0f} s and {gib(BUDGET_RSS)}")
    run_dir, tmp = prepare_run_dir(a)
    try:
        describe(run_dir)
        if not a.no_floor:
            floor(run_dir, a.timeout)
        if not has_main(a.analyser):
            print(f"cannot run: no module {a.analyser}.__main__ (python -m {a.analyser} has no entry yet)")
            return 2
        runs = []
        for i in range(a.repeat):
            m = run_analysis(run_dir, a.analyser, a.timeout)
            problem = check_outputs(run_dir, m)
            if problem:
                print(f"run {i + 1}: the analysis did not complete: {problem} after {m.wall_s:.2f} s")
                print("\n".join(m.stderr.strip().splitlines()[-15:]))
                return 2
            runs.append(m)
            if i == 0:
                print(f"verdicts ({ANALYSIS_CODES[m.code]}): {verdict_summary(run_dir)}")
        report(runs)
        return 0
    finally:
        if tmp is not None and not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp is not None:
            print(f"kept: {tmp}")


if __name__ == "__main__":
    sys.exit(main())
