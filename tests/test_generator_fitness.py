"""A red verdict means the backend is at fault: the generator's own lateness, lost workers, unexercised parts.

Unit tests pin the rules (where a late stretch lies, how set-aside figures leave a
p99 judgement undecided). Real runs show them on a live backend: a Locust
process stopped with SIGSTOP for 2.5 s at a time while the embedded backend
runs on (its silent clients are reaped, its timers fire late: nothing may fail),
a ``--processes 2`` run that loses a worker to SIGKILL halfway, and a run against
a backend the harness did not start, with no admin token (no push is ever sent).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from analysis.verdicts.base import Status
from analysis.verdicts.latency import judge_p99
from analysis.verdicts.lateness import late_stretches, measured_late, process_of
from harness.lag import FLOOR_MS, LoopLag
from tests.capacity import real_runs
from tests.conftest import FAST
from tests.locustfiles.harness_runs import start_locust
from tests.locustfiles.verdict_runs import FAST_BACKEND, FAST_USERS, analyse

pytestmark = pytest.mark.timeout(600)

ALL = ("ConversationUser", "FlappingUser", "HeartbeatUser", "TokenRefreshUser", "ZombieUser")
#: SIGSTOP the generator this long, this many times, this far apart (the backend runs on).
STOP_S, STOPS, STOP_EVERY_S, FIRST_STOP_AT_S = 2.5, 4, 6.0, 8.0


# -- the rules, on their own --------------------------------------------------------------------------


def test_loop_lag_reports_the_worst_lateness_and_where_it_began():
    wall = iter([1000.0, 1001.0, 1002.0, 1003.0]).__next__
    lag = LoopLag(tick_s=0.05, clock=lambda: 0.0, wall=wall)
    lag.observe(10.0, 10.01)  # 10 ms: below the floor, worst so far
    lag.observe(11.0, 11.0 + 2 * FLOOR_MS / 1000)  # the first past the floor: lateness began here
    lag.observe(12.0, 12.5)  # the worst, but later
    taken = lag.take()
    assert taken["loop_lag_ms"] == 500.0
    assert taken["loop_late_from"] == pytest.approx(1001.0 - 2 * FLOOR_MS / 1000 - 0.05)
    assert taken["loop_late_until"] == 1002.0  # the last wake-up past the floor
    assert lag.take() == {"loop_lag_ms": 0.0, "loop_late_from": "", "loop_late_until": ""}


def test_late_stretches_are_placed_and_merged_per_process():
    samples = pd.DataFrame(
        {
            "ts": [10.0, 11.0, 12.0, 13.0, 10.5, 11.5],
            "source": ["local", "local", "local", "local", "worker:a", "worker:a"],
            "loop_lag_ms": [5.0, 900.0, 800.0, 5.0, 3000.0, 4.0],
            "loop_late_from": [np.nan, 10.05, 10.9, np.nan, np.nan, np.nan],
            "loop_late_until": [np.nan, 10.95, 11.7, np.nan, np.nan, np.nan],
        }
    )
    s = late_stretches(samples, 250.0).set_index("source")
    assert s.loc["local", "start"] == pytest.approx(10.05) and s.loc["local", "end"] == 11.7  # two merged
    assert s.loc["local", "lag_ms"] == 900.0
    # Not placed (an older run): from the previous sample (none: one median gap before) minus the lag, to the sample.
    assert s.loc["worker:a", "start"] == pytest.approx(10.5 - 1.0 - 3.0) and s.loc["worker:a", "end"] == 10.5
    late = measured_late(
        s.reset_index(),
        process_of(pd.Series(["local", "local", "a", "b"])),
        pd.Series([9.0, 12.5, 9.0, 9.0]),
        pd.Series([10.1, 13.0, 9.5, 20.0]),
    )
    assert late.tolist() == [True, False, True, False]  # another process's lateness is not this one's


def test_set_aside_reconnects_can_neither_pass_nor_fail_a_p99():
    fast, slow = np.full(600, 50.0), np.full(600, 5000.0)
    assert judge_p99(pd.Series(fast), 2000, 0.95)[0] is Status.PASS
    assert judge_p99(pd.Series(fast), 2000, 0.95, set_aside=1)[0] is Status.PASS  # one unknown fits the bound
    undecided, _, why = judge_p99(pd.Series(fast), 2000, 0.95, set_aside=30)
    assert undecided is Status.INCONCLUSIVE and "generator was late" in why
    assert judge_p99(pd.Series(slow), 2000, 0.95, set_aside=30)[0] is Status.FAIL  # slow whatever they were
    assert judge_p99(pd.Series(dtype=float), 2000, 0.95, set_aside=5)[0] is Status.INCONCLUSIVE


# -- real runs -----------------------------------------------------------------------------------------


def _fast(users: int, seconds: int, root: Path, run_id: str, *extra: str) -> list[str]:
    return [
        "--headless", "--only-summary", "-u", str(users), "-r", str(users), "-t", f"{seconds}s",
        "--run-dir", str(root), "--run-id", run_id, "--drain", "3", "--sample-interval", "0.5",
        *FAST_USERS, *extra,
    ]  # fmt: skip


def _stop_generator(proc: subprocess.Popen) -> None:
    """SIGSTOP the Locust process (not its backend) STOPS times for STOP_S seconds."""
    time.sleep(FIRST_STOP_AT_S)
    for _ in range(STOPS):
        if proc.poll() is not None:
            return
        proc.send_signal(signal.SIGSTOP)
        time.sleep(STOP_S)
        proc.send_signal(signal.SIGCONT)
        time.sleep(STOP_EVERY_S - STOP_S)


def _kill_one_worker(proc: subprocess.Popen, after_s: float, killed: dict) -> None:
    """SIGKILL one of the ``--processes`` workers (the master's children that are not the backend)."""
    time.sleep(after_s)
    children = psutil.Process(proc.pid).children()
    workers = [c for c in children if "server_stub" not in " ".join(c.cmdline())]
    if workers:
        killed["pid"], killed["at"] = workers[0].pid, time.time()
        os.kill(workers[0].pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, module_stub_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fitness-runs")
    remote = module_stub_factory(*FAST, "--resume-window", "4")  # the users' extended gap (5 s) outlasts it
    killed: dict = {}
    plans = {
        "stopped": (
            _fast(15, 36, root, "stopped", *FAST_BACKEND, *ALL),
            _stop_generator,
        ),
        "lost-worker": (
            _fast(12, 30, root, "lost-worker", "--processes", "2", *FAST_BACKEND, "FlappingUser", "HeartbeatUser"),
            lambda proc: _kill_one_worker(proc, 12.0, killed),
        ),
        # A backend the harness did not start, and no --admin-token: the users cannot push.
        "no-pushes": (_fast(4, 16, root, "no-pushes", "--host", remote.url, "ConversationUser"), None),
    }
    parallel = max(1, min(len(plans), real_runs()))
    pending, done = list(plans), {}
    while pending:
        batch, pending = pending[:parallel], pending[parallel:]
        started = []
        for name in batch:
            args, action = plans[name]
            proc = start_locust(*args, log=root / f"{name}.log", locustfile="locustfile.py")
            thread = threading.Thread(target=action, args=(proc,), daemon=True) if action else None
            if thread:
                thread.start()
            started.append((name, proc, thread))
        for name, proc, thread in started:
            try:
                proc.wait(150)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            if thread:
                thread.join(10)
            assert (root / name / "meta.json").exists(), (root / f"{name}.log").read_text()[-3000:]
            analyse(root / name)
            done[name] = root / name
    done["killed"] = killed
    return done


def verdicts(run_dir: Path) -> dict[str, dict]:
    return {v["name"]: v for v in json.loads((run_dir / "verdicts.json").read_text())["verdicts"]}


def test_a_stopped_generator_fails_no_verdict_and_is_named(runs):
    v = verdicts(runs["stopped"])
    table = {n: (x["status"], x["summary"][:300]) for n, x in v.items()}
    assert not [n for n, x in v.items() if x["status"] == "fail"], table
    health = v["harness-health"]
    assert health["status"] == "inconclusive" and "generator was late" in health["summary"], table
    assert health["figure"] >= 0.8 * STOP_S * 1000  # the loop lag saw the stops
    stretches = [e for e in health["evidence"] if "lag_ms" in e]
    assert len(stretches) >= STOPS - 1 and {e["process"] for e in stretches} == {"local"}
    assert health["details"]["late_seconds"] < STOPS * (STOP_S + 1.5)  # placed where they were, not smeared
    # Clients silent because their process was stopped: set aside as the generator's doing, named as such.
    zombie = v["zombie"]
    if zombie["details"]["set_aside_generator_late"]:
        assert zombie["status"] == "inconclusive" and "generator" in zombie["summary"]
    latency = v["reconnect-latency"]
    assert latency["details"]["set_aside_late"] > 0, latency["summary"]


def test_a_lost_worker_is_named_with_its_users_and_its_unknown_events(runs):
    assert runs["killed"], "no worker was found to kill"
    v = verdicts(runs["lost-worker"])
    health = v["harness-health"]
    assert health["status"] == "inconclusive", health["summary"]
    lost = health["details"]["workers_lost"]
    assert len(lost) == 1, lost
    assert lost[0]["lost_utc"] >= runs["killed"]["at"] - 1
    assert sum((lost[0]["users"] or {}).values()) > 0, lost  # the users that went with it
    summary = health["summary"]
    assert f"worker {lost[0]['worker']} lost at" in summary and "went with it" in summary
    assert "events after its last batch at" in summary and "are unknown" in summary
    # Event verdicts cannot pass on a run that lost a worker's events.
    assert v["duplicate-agent"]["status"] != "pass"


def test_delivery_with_no_push_says_the_offline_queue_was_not_exercised(runs):
    delivery = verdicts(runs["no-pushes"])["delivery"]
    assert delivery["status"] == "inconclusive", delivery["summary"]
    assert "offline queue was never exercised" in delivery["summary"] and "--admin-token" in delivery["summary"]
    assert delivery["details"]["not_exercised"] == ["pushes"]
    assert delivery["details"]["streams_complete"] > 0  # what was exercised is still judged and said
