"""The leak verdict on a managed runtime: a Node.js backend whose V8 heap grows in steps is no leak.

``targets/node-ws`` (Node 20, the ``ws`` library, installed by ``bin/setup`` with ``npm ci``)
runs as a real process on a free loopback port, clean or with ``--leak`` (64 KiB kept per
connection forever); a real headless Locust run of the root locustfile loads it with
FlappingUsers and HeartbeatUsers (``--host`` and ``--server-pid``: psutil for RSS and fds,
its ``/metrics`` for the heap), and ``python -m analysis`` judges the run directory. Clean,
at 60 s and 240 s, the leak verdict passes or is inconclusive, never fails; leaking, it fails.
The four runs go at once (they mostly wait). Without node or the target's node_modules the
runs are skipped, except in CI (``CI`` set), where that fails.

The first tests judge synthetic windows: the rules of :func:`analysis.verdicts.leak.judge`
that the real runs only touch on (a long window, a heap floor that grows).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import thresholds
from analysis.verdicts.base import Status
from analysis.verdicts.leak import floor_window_s, heap_floor, judge_window
from tests.locustfiles.harness_runs import ROOT, read_csv, start_locust, wait_for
from tests.locustfiles.verdict_runs import analyse

pytestmark = pytest.mark.timeout(600)

NODE_TARGET = ROOT / "targets" / "node-ws"
NODE = shutil.which("node") or "node"
#: name -> (--leak, seconds of load)
RUNS = {"clean-60": (False, 60), "clean-240": (False, 240), "leak-60": (True, 60), "leak-240": (True, 240)}
USERS = 10  #: five FlappingUsers (about 30 connect/disconnect cycles a second) and five HeartbeatUsers
DRAIN_S = 5
MiB = 1024 * 1024


# -- the rules on synthetic windows ---------------------------------------------------------------


def _window(seconds: float, rss, heap=None, th=None) -> dict:
    """Judge one process window of ``seconds`` sampled every second (rss and heap: functions of t)."""
    th = (th or thresholds.load())["leak"]
    t = np.arange(0, seconds, 1.0)
    load = pd.DataFrame({"ts": 1.8e9 + t, "rss_bytes": rss(t), "connections": 10.0})
    load["heap_bytes"] = heap(t) if heap is not None else np.nan
    floor = heap_floor(load["ts"], load["heap_bytes"], floor_window_s(float(t[-1]), th))
    return judge_window(load, load["rss_bytes"], floor, float(t[-1]), 4242, th)


def _steps(t):
    """V8 at work: RSS up in three steps as the heap grows toward its ceiling, then flat."""
    return 50 * MiB + 8 * MiB * ((t > 15).astype(float) + (t > 35) + (t > 70))


def _flat_heap(t):
    return 6 * MiB + 0.2 * MiB * np.sin(t / 7)


def test_a_heap_that_grew_in_steps_and_stopped_passes_in_a_short_run():
    w = _window(180, _steps, _flat_heap)
    assert w["status"] == Status.PASS and "levelled off" in w["reason"], w


def test_the_same_steps_without_heap_metrics_are_inconclusive_not_a_failure():
    w = _window(180, _steps)
    assert w["status"] == Status.INCONCLUSIVE and "too short to tell" in w["reason"], w


def test_a_short_run_never_fails_on_growth_alone():
    w = _window(180, lambda t: 50 * MiB + 2 * MiB * t, _flat_heap)  # 2 MiB/s to the end
    assert w["status"] == Status.INCONCLUSIVE and "of it in the last third" in w["reason"], w


def test_a_steady_leak_in_a_long_run_fails_and_says_it_is_outside_the_heap():
    w = _window(1800, lambda t: 50 * MiB + 0.05 * MiB * t, _flat_heap)  # 180 MiB/h
    assert w["status"] == Status.FAIL and "outside the managed heap" in w["finding"], w


def test_steps_that_stopped_in_a_long_run_pass_whatever_the_heap():
    assert _window(1800, _steps)["status"] == Status.PASS
    assert _window(1800, _steps, _flat_heap)["status"] == Status.PASS


def test_a_rising_heap_floor_in_a_long_run_fails():
    def heap(t):  # a sawtooth whose post-GC floor rises 60 MiB/h: objects kept per connection
        return 6 * MiB + 0.0167 * MiB * t + 10 * MiB * ((t % 30) / 30)

    w = _window(1800, lambda t: 90 * MiB + 0 * t, heap)
    assert w["status"] == Status.FAIL and w["finding"].startswith("the heap's post-GC floor grows"), w


def test_late_growth_needs_a_real_trend_and_a_size():
    """One step in the last third (8 MiB at once: a heap growing) of a long run, flat before and after: its
    plateau rose more than min_late_growth_mib, but Theil-Sen sees no trend in one step: not still growing."""
    w = _window(1800, lambda t: 50 * MiB + 10 * MiB * (t > 300) + 8 * MiB * (t > 1350))
    assert w["status"] == Status.PASS, w


# -- the real Node.js target ----------------------------------------------------------------------


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _node_or_skip() -> None:
    """node and the target's npm packages, or a skip (locally) / a failure (in CI) saying what is missing."""
    missing = []
    if shutil.which("node") is None:
        missing.append("node (Node.js 20+: Debian's nodejs)")
    if not (NODE_TARGET / "node_modules" / "ws" / "package.json").is_file():
        missing.append("targets/node-ws/node_modules (bin/setup runs npm ci there)")
    if missing:
        why = "the Node.js target needs " + " and ".join(missing)
        if _in_ci():
            pytest.fail(f"{why}; CI must run this test, not skip it")
        pytest.skip(why)


class NodeTarget:
    """``node targets/node-ws/server.js --port 0 [--leak]`` until :meth:`stop`."""

    def __init__(self, log: Path, leak: bool) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [NODE, "server.js", "--port", "0", *(["--leak"] if leak else [])],
            cwd=NODE_TARGET,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        line = wait_for(self._listening, 15, f"the Node.js target to listen ({log})")
        self.url, self.pid = line["url"], line["pid"]
        assert self.pid == self.proc.pid

    def _listening(self) -> dict | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"the Node.js target exited with {self.proc.returncode}:\n{self.log.read_text()}")
        first = self.log.read_text().partition("\n")
        return json.loads(first[0]) if first[1] else None

    def stop(self) -> int | None:
        """SIGTERM (it closes its clients with 1012 and exits 0); its exit code, None if it had died before."""
        if self.proc.poll() is not None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -9


def _locust_args(root: Path, name: str, seconds: int, target: NodeTarget) -> list[str]:
    return [
        "--headless", "--only-summary", "-u", str(USERS), "-r", str(USERS), "-t", f"{seconds}s",
        "--host", target.url, "--server-pid", str(target.pid),
        "--run-dir", str(root), "--run-id", name, "--drain", str(DRAIN_S), "--sample-interval", "1",
        "FlappingUser", "HeartbeatUser",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    """Every run of :data:`RUNS`, at once: name -> its run directory, verdicts and the target's exit."""
    _node_or_skip()
    root = tmp_path_factory.mktemp("node-ws-runs")
    targets, locusts, exits = {}, {}, {}
    try:
        for name, (leak, seconds) in RUNS.items():
            targets[name] = NodeTarget(root / f"{name}.node.log", leak)
            args = _locust_args(root, name, seconds, targets[name])
            locusts[name] = start_locust(*args, log=root / f"{name}.log", locustfile="locustfile.py")
        deadline = time.monotonic() + max(s for _, s in RUNS.values()) + DRAIN_S + 120
        for proc in locusts.values():
            proc.wait(max(1.0, deadline - time.monotonic()))
        for name, target in targets.items():
            exits[name] = (target.proc.poll(), target.stop())  # (before the SIGTERM: None = alive, its exit)
    finally:
        for proc in locusts.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for target in targets.values():
            target.stop()
    done = {}
    for name in RUNS:
        run_dir = root / name
        assert (run_dir / "meta.json").exists(), (
            f"run {name} left no run directory:\n" + ((root / f"{name}.log").read_text()[-3000:])
        )
        analysed = analyse(run_dir)
        assert "Traceback" not in analysed.stderr, analysed.stderr
        verdicts = {v["name"]: v for v in json.loads((run_dir / "verdicts.json").read_text())["verdicts"]}
        done[name] = {"dir": run_dir, "verdicts": verdicts, "target_exit": exits[name], "table": analysed.stdout}
    return done


def _leak(runs, name: str) -> dict:
    return runs[name]["verdicts"]["leak"]


@pytest.mark.parametrize("name", ["clean-60", "clean-240"])
def test_clean_node_backend_is_never_judged_leaking(runs, name):
    leak = _leak(runs, name)
    assert leak["status"] in ("pass", "inconclusive"), runs[name]["table"]
    if leak["status"] == "inconclusive":
        assert "too short to tell" in leak["summary"], leak["summary"]


@pytest.mark.parametrize("name", ["leak-60", "leak-240"])
def test_leaking_node_backend_fails_the_leak_verdict(runs, name):
    leak = _leak(runs, name)
    assert leak["status"] == "fail", runs[name]["table"]
    assert "KiB per cycle" in leak["summary"], leak["summary"]  # ~64 KiB kept per connection
    assert 40 <= leak["details"]["held_kib_per_cycle"] <= 100, leak["details"]


@pytest.mark.parametrize("name", list(RUNS))
def test_the_runs_measured_the_heap_and_the_target_stayed_up(runs, name):
    """Telemetry read the heap from /metrics beside psutil; the target ran the whole load, spoke
    agentws/1 well enough for one agent per session across every resume, and stopped cleanly on SIGTERM."""
    run = runs[name]
    backend = [r for r in read_csv(run["dir"] / "samples.csv") if r["source"] == "backend"]
    heaps = [float(r["heap_bytes"]) for r in backend if r["heap_bytes"]]
    assert len(heaps) >= 0.9 * len(backend) and min(heaps) > 1 * MiB, (len(heaps), len(backend))
    assert run["target_exit"] == (None, 0)
    assert run["verdicts"]["duplicate-agent"]["status"] == "pass", run["table"]
