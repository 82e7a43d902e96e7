"""What the analysis costs on issue 16's target day, format 3: wall time, CPU, peak RSS, size on disk.

Targets (issue 16): a 24-hour soak of 10,000+ users (bench/gen_soak.py: 11,100 users over 4 workers,
one backend restart) gives verdicts + report in <= 60 s and <= 2 GiB RSS, its run directory is
<= 2 GiB on disk; 48 hours takes <= 2 x the 24 hours' time and about the same memory (<= 1.25 x).

    .venv/bin/python bench/bench_analysis_soak.py [--hours 24 48] [--repeat 3] [--seed 1]
                                                  [--dir-base DIR] [--keep] [--profile]

Each length is generated once (into a temp dir, removed at the end unless ``--keep``; or into
``--dir-base``/soak-<hours>h, reused if it holds a meta.json), then ``python -m analysis DIR``
runs ``--repeat`` times as fresh children, timed as bench/bench_analysis.py times them (bench/_common.py
``measure``: wall, the child's CPU from ``wait4``, peak RSS the larger of the sampled process tree
and ``ru_maxrss``). The median run is judged. ``--profile`` then runs the analysis of the first
length once more under cProfile and prints its hot spots (cumulative, in analysis/).

Exit 0 with the figures whatever they are (a benchmark: a target missed prints FAIL); 2 when it
could not measure (the generator failed, a run crashed or wrote no verdicts).
"""

from __future__ import annotations

import argparse
import io
import pstats
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from _common import (  # noqa: E402
    ANALYSIS_CODES,
    GiB,
    Measured,
    banner,
    check_outputs,
    gib,
    measure,
    run_analysis,
    verdict_summary,
)

BUDGET_S, BUDGET_RSS, BUDGET_DISK = 60.0, 2 * GiB, 2 * GiB
LONGER_TIME, LONGER_RSS = 2.0, 1.25  #: the longest length against the first: at most this much slower, this much larger


def on_disk(path: Path) -> tuple[int, int]:
    """(bytes allocated on disk, file bytes) of everything under ``path``."""
    files = [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_blocks * 512 for p in files), sum(p.stat().st_size for p in files)


def prepare(hours: float, a, base: Path) -> Path:
    run_dir = base / f"soak-{hours:g}h"
    if (run_dir / "meta.json").exists():
        print(f"{hours:g} h: {run_dir} (reused)")
        return run_dir
    args = [sys.executable, str(BENCH / "gen_soak.py"), str(run_dir), "--hours", str(hours), "--seed", str(a.seed)]
    m = measure(args, timeout=3600)
    if m.code != 0:
        print(m.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"bench_analysis_soak: the generator failed (exit {m.code})")
    print(f"{hours:g} h: {run_dir} generated in {m.wall_s:.0f} s ({m.cpu_s:.0f} s CPU), peak RSS {gib(m.peak)}")
    return run_dir


def tables(run_dir: Path) -> str:
    import pyarrow.parquet as pq

    rows = {
        name: sum(pq.read_metadata(p).num_rows for p in sorted((run_dir / name).glob("part-*.parquet")))
        for name in ("tallies", "events", "activity")
    }
    return ", ".join(f"{name} {n:,} rows" for name, n in rows.items())


def analysed(run_dir: Path, a) -> list[Measured] | None:
    runs = []
    for i in range(a.repeat):
        m = run_analysis(run_dir, "analysis", a.timeout)
        problem = check_outputs(run_dir, m)
        print(f"   run {i + 1}: exit {m.code}, {m.wall_s:.1f} s wall, {m.cpu_s:.1f} s CPU, peak RSS {gib(m.peak)}")
        if problem:
            print(f"   the analysis did not complete: {problem}")
            print("\n".join(m.stderr.strip().splitlines()[-15:]))
            return None
        if i == 0:
            print(f"   verdicts ({ANALYSIS_CODES[m.code]}): {verdict_summary(run_dir)}")
        runs.append(m)
    return runs


def profile(run_dir: Path, out: Path, top: int = 30) -> None:
    """cProfile of one ``python -m analysis`` run: the hot spots in analysis/, by cumulative time."""
    measure([sys.executable, "-m", "cProfile", "-o", str(out), "-m", "analysis", str(run_dir)], timeout=3600)
    text = io.StringIO()
    stats = pstats.Stats(str(out), stream=text)
    stats.sort_stats("cumulative").print_stats(r"analysis/", top)
    print(f"== profile of python -m analysis {run_dir} (cumulative, functions in analysis/)")
    print("\n".join(line for line in text.getvalue().splitlines() if line.strip())[-6000:])
    text = io.StringIO()
    pstats.Stats(str(out), stream=text).sort_stats("tottime").print_stats(15)
    print("== the same, by own time (any module)")
    print("\n".join(line for line in text.getvalue().splitlines() if line.strip())[-4000:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, nargs="+", default=[24.0, 48.0], help="lengths to generate and analyse")
    ap.add_argument("--repeat", type=int, default=3, help="analysis runs per length (the median is judged)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir-base", type=Path, help="where the run directories go (reused when present)")
    ap.add_argument("--keep", action="store_true", help="keep the generated temp directories")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds before an analysis run is killed")
    ap.add_argument("--profile", action="store_true", help="then profile the analysis of the first length")
    a = ap.parse_args()

    targets = f"<= {BUDGET_S:.0f} s, <= {gib(BUDGET_RSS)}, rundir <= {gib(BUDGET_DISK)}"
    banner(f"analysis of a generated soak (format 3): {targets}")
    tmp = None
    base = a.dir_base
    if base is None:
        tmp = base = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    base.mkdir(parents=True, exist_ok=True)
    results: dict[float, tuple[float, int, float, int]] = {}
    try:
        for hours in a.hours:
            run_dir = prepare(hours, a, base)
            disk, size = on_disk(run_dir)
            print(f"   {tables(run_dir)}; on disk {gib(disk)} ({size / (1 << 20):,.0f} MiB of files)")
            runs = analysed(run_dir, a)
            if runs is None:
                return 2
            wall = statistics.median(m.wall_s for m in runs)
            cpu = statistics.median(m.cpu_s for m in runs)
            peak = int(statistics.median(m.peak for m in runs))
            results[hours] = (wall, peak, cpu, disk)
        print(f"\n{'hours':>6} {'wall s (median)':>16} {'CPU s':>8} {'peak RSS':>10} {'on disk':>10}  targets")
        first = a.hours[0]
        ok_all = True
        for hours, (wall, peak, cpu, disk) in results.items():
            checks = [("time", wall <= BUDGET_S), ("RSS", peak <= BUDGET_RSS), ("disk", disk <= BUDGET_DISK)]
            if hours != first:
                w0, p0 = results[first][0], results[first][1]
                checks += [(f"<= {LONGER_TIME:g} x {first:g} h time", wall <= LONGER_TIME * w0)]
                checks += [(f"<= {LONGER_RSS:g} x {first:g} h RSS", peak <= LONGER_RSS * p0)]
            ok_all &= all(ok for _, ok in checks)
            judged = ", ".join(f"{name} {'ok' if ok else 'MISSED'}" for name, ok in checks)
            print(f"{hours:>6g} {wall:>16.1f} {cpu:>8.1f} {gib(peak):>10} {gib(disk):>10}  {judged}")
        print("PASS: every target met" if ok_all else "FAIL: a target missed (above)")
        if a.profile:
            profile(base / f"soak-{first:g}h", base / "analysis.prof")
        return 0
    finally:
        if tmp is not None and not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp is not None:
            print(f"kept: {tmp}")


if __name__ == "__main__":
    sys.exit(main())
