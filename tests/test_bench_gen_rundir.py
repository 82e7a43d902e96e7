"""The analysis benchmark's input means what bench/README.md says: a generated run is healthy (every
verdict passes) until ``--leak-mib-per-hour`` plants a leak, which the leak verdict catches; same seed,
same bytes. A small run (2 h, 200,000 events), analysed as users run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMALL = ("--hours", "2", "--events", "200000", "--users", "200")


def generate(out: Path, *extra: str) -> Path:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gen_rundir.py"), str(out), *SMALL, *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return out


def analysed(run_dir: Path) -> tuple[int, dict[str, str]]:
    done = subprocess.run(
        [sys.executable, "-m", "analysis", str(run_dir)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    verdicts = json.loads((run_dir / "verdicts.json").read_text())["verdicts"]
    return done.returncode, {v["name"]: v["status"] for v in verdicts}


def test_a_generated_run_passes_every_verdict_it_exercises(tmp_path):
    code, statuses = analysed(generate(tmp_path / "healthy"))
    assert code == 0, statuses
    assert statuses.pop("restart") == "skipped"  # the generator models no restart
    assert set(statuses.values()) == {"pass"}, statuses


def test_a_planted_leak_fails_the_leak_verdict_only(tmp_path):
    code, statuses = analysed(generate(tmp_path / "leaking", "--leak-mib-per-hour", "20"))
    assert code == 1
    assert {name for name, status in statuses.items() if status == "fail"} == {"leak"}


def test_same_seed_same_bytes(tmp_path):
    a, b = generate(tmp_path / "a"), generate(tmp_path / "b")
    for path in sorted(a.iterdir()):
        if path.name != "meta.json":  # names the directory it was written to
            assert path.read_bytes() == (b / path.name).read_bytes(), path.name
