"""The soak benchmark's input means what bench/README.md says: a generated format-3 day (bench/gen_soak.py,
restart included) passes every verdict, each planted fault fails the verdict it is planted for, and the same
seed gives the same bytes. Small runs (users scaled down, an hour or less), analysed as users run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from harness.recorder import ACTIVITY_SCHEMA, EVENTS_SCHEMA, TALLIES_SCHEMA

ROOT = Path(__file__).resolve().parent.parent
SMALL = ("--users-scale", "0.12")
TABLES = {"events": EVENTS_SCHEMA, "tallies": TALLIES_SCHEMA, "activity": ACTIVITY_SCHEMA}

sys.path.insert(0, str(ROOT / "bench"))
from gen_soak import FAULTS  # noqa: E402

pytestmark = pytest.mark.timeout(300)


def generate(out: Path, *extra: str) -> Path:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gen_soak.py"), str(out), *SMALL, *extra],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    return out


def analysed(run_dir: Path) -> tuple[int, dict[str, str]]:
    done = subprocess.run(
        [sys.executable, "-m", "analysis", str(run_dir)], cwd=ROOT, capture_output=True, text=True, timeout=180
    )
    assert "Traceback" not in done.stderr, done.stderr
    verdicts = json.loads((run_dir / "verdicts.json").read_text())["verdicts"]
    return done.returncode, {v["name"]: v["status"] for v in verdicts}


def test_a_generated_day_passes_every_verdict_restart_included(tmp_path):
    run_dir = generate(tmp_path / "healthy", "--hours", "0.5")
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["format"] == 3 and len(meta["backend"]["restarts"]) == 1
    for name, schema in TABLES.items():  # read back as the harness writes them
        assert pq.read_schema(run_dir / name / "part-00000.parquet").equals(schema), name
    code, statuses = analysed(run_dir)
    assert code == 0, statuses
    assert set(statuses.values()) == {"pass"}, statuses


def test_every_planted_fault_fails_its_verdict(tmp_path):
    faults = [arg for name in FAULTS for arg in ("--fault", name)]
    run_dir = generate(tmp_path / "faulty", "--hours", "0.75", "--leak-mib-per-hour", "80", *faults)
    code, statuses = analysed(run_dir)
    assert code == 1
    expected = {verdict for _, verdict in FAULTS.values()} | {"leak"}
    assert {name for name, status in statuses.items() if status == "fail"} == expected, statuses


def test_same_seed_same_bytes(tmp_path):
    a, b = (generate(tmp_path / name, "--hours", "0.2", "--users-scale", "0.1") for name in "ab")
    for table in TABLES:
        parts = sorted((a / table).iterdir())
        assert parts, table
        for part in parts:
            assert part.read_bytes() == (b / table / part.name).read_bytes(), part
    for name in ("samples.csv", "server_stats.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
