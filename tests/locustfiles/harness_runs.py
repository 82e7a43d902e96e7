"""Helpers for the harness tests: run real ``locust`` processes and read back the run directory."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

from tests import rundirs

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = "tests/locustfiles/events_locustfile.py"
LOCUST = [sys.executable, "-m", "locust"]
EVENTS_PER_TASK = 10


def secret_digest(secret: str) -> str:
    """What EventUser reports of --test-secret: enough to compare, not the secret."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12] if secret else ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_locust(*args: str, log: Path, locustfile: str = LOCUSTFILE) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    out = open(log, "wb")
    return subprocess.Popen(
        [*LOCUST, "-f", locustfile, *args],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


@contextmanager
def locust_running(*args: str, log: Path, locustfile: str = LOCUSTFILE):
    """A locust child for the block; whatever the block leaves running is killed with its process group."""
    proc = start_locust(*args, log=log, locustfile=locustfile)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def stop(proc: subprocess.Popen, timeout: float = 30) -> int:
    """SIGTERM, as Ctrl-C or a CI job's cancel would send, and its exit code."""
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout)


def run_locust(*args: str, log: Path, timeout: float = 60) -> int:
    proc = start_locust(*args, log=log)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(f"locust did not finish within {timeout} s; log:\n{log.read_text()[-3000:]}") from None


def http_up(url: str) -> bool:
    """True when ``url`` answers (any status but a connection error)."""
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def only_run(root: Path) -> Path:
    runs = [p for p in root.iterdir() if p.is_dir() and not p.is_symlink()]
    assert len(runs) == 1, runs
    assert (root / "latest").resolve() == runs[0].resolve()
    return runs[0]


def meta(run: Path) -> dict:
    return json.loads((run / "meta.json").read_text())


def read_csv(path: Path) -> list[dict]:
    text = path.read_text()
    assert text.endswith("\n"), f"{path.name} ends in a partial line"
    rows = list(csv.DictReader(text.splitlines()))
    return rows


def read_events(run: Path) -> list[dict]:
    """The run's raw event rows (the events table), as dicts."""
    return rundirs.read(run).to_dict("records")


def events_on_disk(run: Path) -> int:
    """Bytes of the events table written so far (its parts and live segment)."""
    directory = run / "events"
    return sum(p.stat().st_size for p in directory.iterdir()) if directory.is_dir() else 0


def check_events(run: Path) -> list[dict]:
    """The events table reads, every hb_rtt burst is whole, each user's seq runs 1..n, and it matches Locust's
    count (the test users' events are none of them routine: each one is a raw row)."""
    rows = read_events(run)
    m = meta(run)
    assert len(rows) == m["recording"]["events_received"] == m["rows"]["events"]
    for w, tally in m["recording"]["per_worker"].items():
        assert tally.get("undelivered", 0) == 0, (w, tally)
        if "emitted" in tally:
            assert tally["emitted"] == tally["received"], (w, tally)
    assert m["recording"].get("workers_not_flushed", []) == []
    seqs = defaultdict(list)
    for r in rows:
        if r["kind"] == "hb_rtt":
            seqs[(r["worker"], r["user"])].append(int(r["seq"]))
    for key, s in seqs.items():
        assert sorted(s) == list(range(1, len(s) + 1)), key
        assert len(s) % EVENTS_PER_TASK == 0, key
    stats = {r["Name"]: r for r in read_csv(run / "locust_stats.csv")}
    hb = sum(len(s) for s in seqs.values())
    assert int(stats["burst"]["Request Count"]) * EVENTS_PER_TASK == hb
    assert hb > 0
    return rows


def check_exports(run: Path) -> None:
    for name in (
        "locust_stats.csv",
        "locust_stats_history.csv",
        "locust_failures.csv",
        "locust_exceptions.csv",
        "locust_report.html",
    ):
        assert (run / name).stat().st_size > 0, name


def sample_sources(run: Path) -> dict[str, list[dict]]:
    by_source = defaultdict(list)
    for r in read_csv(run / "samples.csv"):
        by_source[r["source"]].append(r)
    return by_source


def check_event_accounting(run: Path) -> dict:
    """Every event a worker emitted is either in the run directory (a raw row, or counted in a tally) or counted
    undelivered: exactly, per worker."""
    m = meta(run)
    rec = m["recording"]
    raw, tallies = rundirs.read(run), rundirs.read(run, "tallies")
    assert len(raw) == m["rows"]["events"]
    assert raw["n"].sum() + tallies["count"].sum() == rec["events_received"]
    assert rec["workers_not_flushed"] == []
    per_worker = rec["per_worker"]
    assert set(per_worker) == set(m["workers"])
    for w, t in per_worker.items():
        assert t["emitted"] == t["received"] + t["undelivered"], (w, t)
        arrived = raw.loc[raw["worker"] == w, "n"].sum() + tallies.loc[tallies["worker"] == w, "count"].sum()
        assert arrived == t["received"], w
    assert rec["events_undelivered"] == sum(t["undelivered"] for t in per_worker.values())
    return rec
