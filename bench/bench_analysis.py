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
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from _common import (  # noqa: E402
    ANALYSIS_CODES,
    GiB,
    Measured,
    banner,
    check_outputs,
    gib,
    has_main,
    measure,
    run_analysis,
    verdict_summary,
)

BUDGET_S, BUDGET_RSS = 30.0, 2 * GiB
STRING_COLUMNS = ("worker", "user", "session", "kind", "agent", "code", "detail")
SIZED = ("events.csv", "samples.csv", "server_stats.csv", "locust_stats_history.csv")
READ_CSV = "import sys, pandas as pd; pd.read_csv(sys.argv[1]{kw})"


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
