"""Scenarios: every config file loads and runs briefly with its verdicts; the restart and flapping
scenarios fail on the faults they exist to catch; bad input is refused before any load starts.

Runs are real ``locust --config scenarios/<name>.conf`` processes (time-compressed with ``-t``
and ``--drain``), each with its embedded backend on loopback, as many at once as the machine has
cores (tests/capacity.py), under the test's temporary directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.rundir import load
from analysis.stats import quantile
from scenarios.__main__ import config_text
from scenarios.catalog import SCENARIOS, SOCKETIO_APP
from scenarios.table import markdown
from tests import rundirs
from tests.capacity import real_runs
from tests.locustfiles.harness_runs import ROOT
from tests.locustfiles.verdict_runs import assert_generator_fit

#: The brief runs take about 700 s of run time over the real runs at once (a hang guard, not a figure).
pytestmark = pytest.mark.timeout(300 + 1600 // real_runs())

#: name -> extra arguments of its brief run (None: the scenario's own numbers). Every scenario is here.
BRIEF = {
    "flapping": [],
    "flapping-resources": [],
    "flapping-scale": ["-u", "20", "-r", "20", "-t", "20s"],
    "context": ["-t", "15s"],
    "context-cycles": ["-t", "15s"],
    "context-full": ["-u", "2", "-t", "5s"],
    "midstream": ["-t", "10s"],
    "queuing": ["-t", "10s"],
    "heartbeat": ["-t", "16s"],
    "refresh": ["-t", "15s"],
    "restart": ["-u", "20", "-t", "14s", "--stub-restart-at", "6"],
    "restart-kill": ["-u", "20", "-t", "14s", "--stub-restart-at", "6"],
    "soak": ["-u", "30", "-r", "30", "-t", "30s", "--drain", "3"],
    "ci-soak": ["-u", "30", "-t", "24s", "--stub-restart-at", "10"],
    "mqtt-flapping": ["-t", "10s"],
    "mqtt-offline-queue": ["-t", "10s"],
    "mqtt-keepalive": ["-t", "12s"],
    "mqtt-restart": ["-u", "12", "-t", "12s", "--stub-restart-at", "6"],
    "mqtt-restart-kill": ["-u", "12", "-t", "12s", "--stub-restart-at", "6"],
    "mqtt-soak": ["-u", "8", "-r", "8", "-t", "30s", "--drain", "3"],
    "mqtt-ci-soak": ["-u", "12", "-t", "20s"],
    "socketio-flapping": ["-t", "10s"],
    "socketio-recovery": ["-t", "10s"],
    "socketio-restart": ["-u", "12", "-t", "12s", "--stub-restart-at", "6"],
    "socketio-restart-redis": ["-u", "12", "-t", "12s", "--stub-restart-at", "6"],
    "socketio-soak": ["-u", "12", "-r", "12", "-t", "30s", "--drain", "3"],
    "socketio-ci-soak": ["-u", "12", "-t", "20s"],
}
#: What the scenarios as shipped find on stock mosquitto 2.0.11 and socket.io 4.8 (scenarios/README.md, the
#: findings): the verdicts that fail there, and why. Every other verdict of theirs must not fail.
FOUND_ON_STOCK = {
    # clean-started sessions are not saved at SIGTERM (src/persist_write.c): a conversation client still on its
    # first connection at the restart loses its session too, and its context check says so
    "mqtt-restart": {"restart", "context"},
    # kill -9 15 s in: nothing saved since the start (autosave every 1800 s); conversations lose theirs too
    "mqtt-restart-kill": {"restart", "context"},
    # socket.io's default in-memory adapter keeps its sessions in the process: a restart loses every one
    "socketio-restart": {"restart", "context"},
}
#: Verdicts a brief run of a stock server may fail, by chance: with the Redis streams adapter, a recovery in
#: flight at the SIGTERM loses its session (the adapter takes it out of Redis as the recovery starts; socket.io's
#: close() saves connected sockets only): a flapping client caught reconnecting at that moment comes back new.
MAY_FAIL_ON_STOCK = {"socketio-restart-redis": {"restart", "context"}}
#: Brief runs that must fail: (scenario, fault) -> the verdict that must fail.
FAULTS = {
    ("restart", "forget-on-restart"): "restart",
    ("flapping", "duplicate-agent"): "duplicate-agent",
    ("flapping-scale", "leak"): "leak",
}
#: Brief runs of the Socket.IO reference app with a fault of its own (targets/socketio): run id -> (scenario,
#: extra arguments, the verdict that must fail, what its summary must say).
SOCKETIO_FAULTS = {
    "socketio-recovery+recovery-off": (
        "socketio-recovery", ["--target-args", SOCKETIO_APP + " --recovery off"], "context", "not resumed",
    ),
    "socketio-recovery+volatile-push": (
        "socketio-recovery", ["--target-args", SOCKETIO_APP + " --push-mode volatile"], "delivery",
        "push missing after resume",
    ),
    "socketio-recovery+ack-push": (
        "socketio-recovery", ["--target-args", SOCKETIO_APP + " --push-mode ack"], "delivery",
        "push missing after resume",
    ),
    # gaps of 2.5 s beside a 1.5 s window: those fail and are named; the 0.2 s ones inside it pass
    "socketio-recovery+short-window": (
        "socketio-recovery",
        ["--target-args", SOCKETIO_APP + " --max-disconnection-ms 1500", "--gap-medium-s", "2.5",
         "--gap-weights", "1,1,0"],
        "context",
        "after medium gaps (away",
    ),
}  # fmt: skip
#: A 3 s drain instead of each scenario's: enough for the leak verdict's return to baseline.
DRAIN = ["--drain", "3"]
#: Verdicts a brief run may leave inconclusive for want of samples (never allowed to fail).
TOO_BRIEF_FOR = {"reconnect-latency", "leak", "context", "refresh", "zombie", "restart", "delivery"}


def locust(*args: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "locust", *args],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def load_seconds(args: list[str]) -> int:
    """How long a run's load lasts: its last ``-t``, else its config file's ``run-time``."""
    if "-t" in args:
        value = args[len(args) - args[::-1].index("-t")]
    else:
        conf = (ROOT / args[args.index("--config") + 1]).read_text()
        value = next(line.split("=", 1)[1] for line in conf.splitlines() if line.startswith("run-time"))
    value = value.strip()
    unit = {"s": 1, "m": 60, "h": 3600}.get(value[-1])
    return int(value[:-1]) * unit if unit else int(value)


def run_brief(jobs: dict[str, list[str]], root: Path, parallel: int | None = None, timeout: float = 180) -> dict:
    """Run ``jobs`` (run id -> locust args), longest first, ``parallel`` at a time (default:
    ``capacity.real_runs()``); run id -> (exit code, run dir, log)."""
    parallel = parallel or real_runs()
    pending, running, done = sorted(jobs.items(), key=lambda job: -load_seconds(job[1])), {}, {}
    while pending or running:
        while pending and len(running) < parallel:
            run_id, args = pending.pop(0)
            log = root / f"{run_id}.log"
            running[run_id] = (locust(*args, "--run-dir", str(root), "--run-id", run_id, log=log), time.monotonic())
        for run_id, (proc, started) in list(running.items()):
            if proc.poll() is None and time.monotonic() - started < timeout:
                continue
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            del running[run_id]
            done[run_id] = (proc.returncode, root / run_id, (root / f"{run_id}.log").read_text(errors="replace"))
        time.sleep(0.2)
    return done


def verdicts(run_dir: Path) -> dict[str, str]:
    return {v["name"]: v["status"] for v in json.loads((run_dir / "verdicts.json").read_text())["verdicts"]}


@pytest.fixture(scope="module")
def brief_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenario-runs")
    jobs = {name: ["--config", f"scenarios/{name}.conf", *DRAIN, *extra] for name, extra in BRIEF.items()}
    for (name, fault), _ in FAULTS.items():
        jobs[f"{name}+{fault}"] = ["--config", f"scenarios/{name}.conf", *DRAIN, *BRIEF[name], "--stub-fault", fault]
    for run_id, (name, extra, _, _) in SOCKETIO_FAULTS.items():
        jobs[run_id] = ["--config", f"scenarios/{name}.conf", *DRAIN, *BRIEF[name], *extra]
    return run_brief(jobs, root)


def test_every_scenario_has_a_brief_run():
    assert set(BRIEF) == set(SCENARIOS)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_runs_briefly_with_its_verdicts(brief_runs, name):
    code, run_dir, log = brief_runs[name]
    assert (run_dir / "verdicts.json").exists(), log[-3000:]
    statuses = verdicts(run_dir)
    found = FOUND_ON_STOCK.get(name, set()) | MAY_FAIL_ON_STOCK.get(name, set())
    assert "fail" not in [v for verdict, v in statuses.items() if verdict not in found], log[-3000:]
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["scenario"] == name and meta["complete"] is True
    mix = SCENARIOS[name].mix
    assert {c for c, n in meta["user_classes"].items() if n} == set(mix), meta["user_classes"]
    gate = SCENARIOS[name].gate or tuple(statuses)
    if "harness-health" in gate:
        assert_generator_fit(run_dir)
    for verdict in set(gate) - found:
        assert statuses[verdict] == "pass" or verdict in TOO_BRIEF_FOR, (verdict, log[-3000:])
    assert code in ((0, 1, 3) if found else (0, 3)), log[-3000:]
    assert "verdict " in log and "report:" in log  # the run ends with its verdict table


@pytest.mark.parametrize("name", ["flapping", "flapping-resources", "restart", "restart-kill", "heartbeat"])
def test_scenarios_pass_their_gate_even_when_brief(brief_runs, name):
    code, run_dir, log = brief_runs[name]
    assert_generator_fit(run_dir)
    assert code == 0, log[-3000:]


@pytest.mark.parametrize("name", sorted(FOUND_ON_STOCK))
def test_restart_scenarios_show_what_stock_servers_lose(brief_runs, name):
    """As written down in scenarios/README.md: sessions come back new after the broker's or the socket.io
    server's (in-memory adapter) restart."""
    code, run_dir, log = brief_runs[name]
    restart = next(v for v in json.loads((run_dir / "verdicts.json").read_text())["verdicts"] if v["name"] == "restart")
    assert restart["status"] == "fail" and "came back new" in restart["summary"], log[-3000:]
    assert code == 1


@pytest.mark.parametrize(("name", "fault"), sorted(FAULTS))
def test_scenario_fails_on_its_fault(brief_runs, name, fault):
    code, run_dir, log = brief_runs[f"{name}+{fault}"]
    assert verdicts(run_dir)[FAULTS[(name, fault)]] == "fail", log[-3000:]
    assert code == 1


def first_opens_after_restart(run_dir: Path, role: str) -> list[str]:
    """How each ``role`` user's session first opened once the restarted backend was up (welcome details)."""
    meta = json.loads((run_dir / "meta.json").read_text())
    ready = meta["backend"]["restarts"][0]["ready_ts"]
    events = rundirs.read(run_dir)  # every event is a raw row around a restart
    opens = events[(events["kind"] == "welcome") & (events["role"] == role) & (events["ts"] > ready)]
    return list(opens.groupby("user")["detail"].first())


def test_socketio_restart_recovers_held_sessions_from_redis_and_not_from_memory(brief_runs):
    """The Redis streams adapter keeps what socket.io's in-memory adapter loses at a restart: every long-lived
    client connected at the SIGTERM recovers its session from Redis, none from memory. (A recovery in flight
    at the SIGTERM may lose its session even with Redis: scenarios/README.md, socket.io finding 2.)"""
    for name, recovered in (("socketio-restart-redis", True), ("socketio-restart", False)):
        _, run_dir, log = brief_runs[name]
        opens = first_opens_after_restart(run_dir, "heartbeat")
        assert opens, log[-3000:]
        assert all((d == "resumed") is recovered for d in opens), (name, opens)


def test_socketio_heartbeat_users_answer_the_servers_pings_and_time_them(brief_runs):
    """Engine.IO's heartbeat is the server's: each ping answered, how late it came recorded (hb_rtt, server_ping)."""
    _, run_dir, log = brief_runs["socketio-ci-soak"]
    events = load(run_dir).events
    pings = events[(events["kind"] == "hb_rtt") & (events["detail"] == "server_ping") & (events["n"] > 0)]
    assert pings["n"].sum() >= 12, log[-3000:]  # a dozen users, 20 s, a ping a second
    slowest = rundirs.read(run_dir).query("kind == 'hb_rtt'")  # each minute's slowest ping is kept as a raw row
    assert set(slowest["note"]) == {"ping every 1000 ms"}
    assert quantile(pings["latency_ms"], 0.5, weights=pings["n"]).value < 500, pings


@pytest.mark.parametrize("run_id", sorted(SOCKETIO_FAULTS))
def test_socketio_app_fails_the_verdict_of_its_fault(brief_runs, run_id):
    _, _, verdict, says = SOCKETIO_FAULTS[run_id]
    code, run_dir, log = brief_runs[run_id]
    found = next(v for v in json.loads((run_dir / "verdicts.json").read_text())["verdicts"] if v["name"] == verdict)
    assert found["status"] == "fail" and says in found["summary"], (found, log[-3000:])
    if run_id.endswith("short-window"):
        assert "kept after all" in found["summary"] and "brief gaps" in found["summary"], found
    assert code == 1


def test_restart_scenario_reports_the_storm(brief_runs):
    _, run_dir, _ = brief_runs["restart"]
    restart = next(v for v in json.loads((run_dir / "verdicts.json").read_text())["verdicts"] if v["name"] == "restart")
    assert restart["details"]["restarts"][0]["peak_reconnects_per_s"] > 0
    assert "peak" in restart["summary"]


def test_context_scenario_reconnects_from_other_addresses(brief_runs):
    _, run_dir, _ = brief_runs["context"]
    backend_log = (run_dir / "backend.log").read_text()
    assert "Traceback" not in backend_log
    assert verdicts(run_dir)["context"] == "pass"


# -- bad input: refused before any load starts ---------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", "scenarios/flapping.conf", "--scenario", "nope"], "invalid choice: 'nope'"),
        (["--config", "scenarios/restart.conf", "-t", "10s"], "cannot fit scenario restart"),
        (["--config", "scenarios/flapping.conf", "--stub-restart-at", "18"], "less than 5 s to come back"),
        (["--config", "scenarios/flapping.conf", "--gate", "leak,bogus"], "unknown verdict(s) bogus"),
        (["--config", "scenarios/flapping.conf", "--thresholds", "nowhere.toml"], "no such thresholds file"),
        (["--config", "BADCONF"], "unrecognized arguments: --flap-cyclez=3"),
    ],
)
def test_bad_input_is_refused_before_load(tmp_path, args, message):
    conf = tmp_path / "bad.conf"
    conf.write_text("locustfile = locustfile.py,scenarios/shape.py\nheadless = true\nflap-cyclez = 3\n")
    args = [str(conf) if a == "BADCONF" else a for a in args]
    log = tmp_path / "log"
    proc = locust(*args, "--run-dir", str(tmp_path / "runs"), log=log)
    assert proc.wait(60) != 0
    text = log.read_text()
    assert message in text, text[-2000:]
    runs = tmp_path / "runs"
    assert not runs.exists() or not [p for p in runs.iterdir() if p.name != "latest"], "no run directory for a refusal"


# -- one place for each fact -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_config_file_is_generated_from_the_catalog(name):
    assert (ROOT / "scenarios" / f"{name}.conf").read_text() == config_text(name), "run: python -m scenarios write"


def test_readme_table_is_current():
    text = (ROOT / "scenarios" / "README.md").read_text()
    table = text.split("<!-- scenarios:begin -->\n")[1].split("\n<!-- scenarios:end -->")[0]
    assert table == markdown(), "regenerate the table: python -m scenarios.table"
