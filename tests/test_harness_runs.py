"""The harness end to end: real headless ``locust`` runs on loopback, then the run directory is read back."""

from __future__ import annotations

import os
import re
import signal
import time

from analysis.rundir import load
from harness.recorder import MASTER_SILENT_S
from tests import rundirs
from tests.locustfiles.harness_runs import (
    EVENTS_PER_TASK,
    check_event_accounting,
    check_events,
    check_exports,
    events_on_disk,
    free_port,
    locust_running,
    meta,
    only_run,
    read_csv,
    run_locust,
    sample_sources,
    secret_digest,
    start_locust,
    stop,
    wait_for,
)


def test_processes_run_writes_a_complete_run_directory(tmp_path):
    root = tmp_path / "runs"
    code = run_locust(
        "--headless", "-u", "6", "-r", "6", "--run-time", "5", "--processes", "2",
        "--run-dir", str(root), "--scenario", "flapping", "--sample-interval", "0.5",
        log=tmp_path / "locust.log",
    )  # fmt: skip
    assert code == 0, (tmp_path / "locust.log").read_text()[-3000:]
    run = only_run(root)
    m = meta(run)
    assert m["complete"] and m["end_utc"] and m["scenario"] == "flapping"
    assert m["runner"] == "master" and len(m["workers"]) == 2
    assert m["user_classes"] == {"EventUser": 6}
    assert m["backend"]["embedded"] and m["backend"]["store"].startswith("sqlite:" + str(run))
    assert m["exit_reason"] == "run-time limit reached"
    rows = check_events(run)
    assert {r["worker"] for r in rows} == set(m["workers"])
    assert {r["detail"] for r in rows if r["kind"] == "connect"} == {m["host"]}  # workers got the embedded host
    check_exports(run)
    sources = sample_sources(run)
    assert {"backend", "master", *(f"worker:{w}" for w in m["workers"])} <= set(sources)
    assert all(r["pid"] for r in sources["backend"])
    assert any(r["pid"] for w in m["workers"] for r in sources[f"worker:{w}"])
    stats = read_csv(run / "server_stats.csv")
    assert stats and not any(r["error"] for r in stats) and "agents_live" in stats[0]


def test_master_and_two_workers(tmp_path):
    root, port = tmp_path / "runs", free_port()
    log = tmp_path / "master.log"
    master = start_locust(
        "--headless", "--master", "--expect-workers", "2", "--master-bind-host", "127.0.0.1",
        "--master-bind-port", str(port), "-u", "4", "-r", "4", "--run-time", "5", "--run-dir", str(root),
        "--test-secret", "w",
        log=log,
    )  # fmt: skip
    workers = [
        start_locust("--worker", "--master-host", "127.0.0.1", "--master-port", str(port), log=tmp_path / f"w{i}.log")
        for i in range(2)
    ]
    try:
        assert master.wait(60) == 0, log.read_text()[-3000:]
        for w in workers:
            assert w.wait(20) == 0
    finally:
        for p in (master, *workers):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    run = only_run(root)
    m = meta(run)
    assert m["complete"] and len(m["workers"]) == 2
    rows = check_events(run)
    assert {r["worker"] for r in rows} == set(m["workers"])
    assert {r["detail"] for r in rows if r["kind"] == "connect"} == {m["host"]}
    assert {r["agent"] for r in rows if r["kind"] == "connect"} == {secret_digest("w")}  # options reach workers
    assert {f"worker:{w}" for w in m["workers"]} <= set(sample_sources(run))


def test_sigterm_to_master_mid_run_closes_the_run_directory(tmp_path):
    root = tmp_path / "runs"
    log = tmp_path / "locust.log"
    with locust_running(
        "--headless", "-u", "6", "-r", "6", "--run-time", "60", "--processes", "2", "--run-dir", str(root), log=log
    ) as proc:
        run = wait_for(lambda: (root / "latest").exists() and (root / "latest").resolve(), 20, "the run directory")
        wait_for(lambda: events_on_disk(run) > 20_000, 20, "events on disk")
        stop(proc)
    m = meta(run)
    assert m["complete"] and m["end_utc"] and m["exit_reason"].startswith("interrupted")
    check_events(run)
    check_exports(run)


def test_backend_killed_mid_run_is_recorded_and_the_run_goes_on(tmp_path):
    root = tmp_path / "runs"
    log = tmp_path / "locust.log"
    with locust_running(
        "--headless", "-u", "2", "-r", "2", "--run-time", "7", "--run-dir", str(root), "--sample-interval", "0.5",
        log=log,
    ) as proc:  # fmt: skip
        run = wait_for(lambda: (root / "latest").exists() and (root / "latest").resolve(), 20, "the run directory")
        pid = wait_for(lambda: meta(run).get("backend", {}).get("pid"), 20, "the backend's pid")
        time.sleep(2)
        killed_at = time.time()
        os.killpg(pid, signal.SIGKILL)  # the stub runs in its own process group
        assert proc.wait(40) == 0, log.read_text()[-3000:]
    m = meta(run)
    assert m["complete"]
    assert any(n["event"] == "backend gone" for n in m["backend_notes"])
    assert any(n["event"] == "stats failing" for n in m["backend_notes"])
    sources = sample_sources(run)
    after = [r for r in sources["backend"] if float(r["ts"]) > killed_at + 0.5]
    assert len(after) >= 4 and all(r["rss_bytes"] == "" for r in after)  # sampled on, as "gone"
    assert len([r for r in sources["local"] if float(r["ts"]) > killed_at + 0.5]) >= 4
    stats = read_csv(run / "server_stats.csv")
    assert any(r["error"] for r in stats) and any(not r["error"] for r in stats)
    check_events(run)  # users (which do not talk to the backend) went on recording


def test_embedded_backend_restart_is_recorded(tmp_path):
    root = tmp_path / "runs"
    log = tmp_path / "locust.log"
    code = run_locust(
        "--headless", "-u", "2", "-r", "2", "--run-time", "7", "--run-dir", str(root), "--sample-interval", "0.5",
        "--stub-restart-at", "1.5", "--stub-restart-kill", "--stub-fault", "leak", "--stub-chunk-delay-ms", "5",
        log=log,
    )  # fmt: skip
    assert code == 0, log.read_text()[-3000:]
    run = only_run(root)
    backend = meta(run)["backend"]
    assert backend["faults"] == ["leak"] and "--chunk-delay-ms" in backend["args"]
    [restart] = backend["restarts"]
    assert restart["ok"] and restart["hard"] and restart["new_pid"] != restart["old_pid"]
    assert backend["pids"] == [restart["old_pid"], restart["new_pid"]]
    pids = {r["pid"] for r in sample_sources(run)["backend"]}
    assert {str(restart["old_pid"]), str(restart["new_pid"])} <= pids  # telemetry followed the new process


def test_worker_buffer_overflow_is_counted_not_dropped(tmp_path):
    # A bound of 5 with bursts of 10 events and a send every 0.5 s: most events overflow, by design.
    root = tmp_path / "runs"
    log = tmp_path / "locust.log"
    code = run_locust(
        "--headless", "-u", "4", "-r", "4", "--run-time", "3", "--processes", "2", "--run-dir", str(root),
        "--record-buffer-max", "5",
        log=log,
    )  # fmt: skip
    assert code == 0, log.read_text()[-3000:]
    run = only_run(root)
    rec = check_event_accounting(run)
    assert rec["events_undelivered"] > 0
    assert all(t["undelivered"] > 0 and t["received"] > 0 for t in rec["per_worker"].values()), rec


def test_routine_events_are_counted_per_interval_and_every_one_is_accounted_for(tmp_path, monkeypatch):
    """Heartbeats that are routine leave no row each: the workers count them per second and latency bucket, and
    the counts add up to what Locust saw, exactly; what stays row by row is each minute's slowest (n = 0)."""
    monkeypatch.setenv("HARNESS_TEST_ROUTINE", "1")
    root = tmp_path / "runs"
    log = tmp_path / "locust.log"
    code = run_locust(
        "--headless", "-u", "4", "-r", "4", "--run-time", "4", "--processes", "2", "--run-dir", str(root), log=log
    )  # fmt: skip
    assert code == 0, log.read_text()[-3000:]
    run = only_run(root)
    rec = check_event_accounting(run)
    raw, tallies = rundirs.read(run), rundirs.read(run, "tallies")
    beats = tallies[tallies["kind"] == "hb_rtt"]
    stats = {r["Name"]: r for r in read_csv(run / "locust_stats.csv")}
    assert beats["count"].sum() == int(stats["burst"]["Request Count"]) * EVENTS_PER_TASK > 0
    assert len(tallies) * 10 < beats["count"].sum()  # far fewer rows than events
    assert set(raw.loc[raw["kind"] == "hb_rtt", "n"]) == {0}  # the slowest, kept as evidence, counted once
    assert rec["events_undelivered"] == 0
    ev = load(run).events
    assert ev.loc[ev["kind"] == "hb_rtt", "n"].sum() == beats["count"].sum()


def test_record_buffer_max_is_validated(tmp_path):
    log = tmp_path / "locust.log"
    code = run_locust(
        "--headless", "-u", "1", "-r", "1", "--run-time", "2", "--run-dir", str(tmp_path / "runs"),
        "--record-buffer-max", "0",
        log=log, timeout=30,
    )  # fmt: skip
    assert code == 2 and "--record-buffer-max" in log.read_text()


def test_master_killed_mid_run_the_worker_logs_what_it_could_not_deliver(tmp_path):
    root, port = tmp_path / "runs", free_port()
    master = start_locust(
        "--headless", "--master", "--expect-workers", "1", "--master-bind-host", "127.0.0.1",
        "--master-bind-port", str(port), "-u", "2", "-r", "2", "--run-time", "60", "--run-dir", str(root),
        log=tmp_path / "master.log",
    )  # fmt: skip
    wlog = tmp_path / "worker.log"
    worker = start_locust("--worker", "--master-host", "127.0.0.1", "--master-port", str(port), log=wlog)
    try:
        wait_for(lambda: (root / "latest" / "events").exists(), 20, "the run directory")
        wait_for(lambda: events_on_disk(root / "latest") > 5_000, 20, "events on disk")
        time.sleep(3)  # a few heartbeats after the first batches, so some are known to have arrived
        os.killpg(master.pid, signal.SIGKILL)
        master.wait(10)
        time.sleep(MASTER_SILENT_S + 1.5)  # the worker notices the silence (Locust itself waits 60 s)
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    finally:
        for p in (master, worker):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    out = wlog.read_text()
    found = re.search(r"protocol events: emitted (\d+), sent (\d+), undelivered (\d+)", out)
    assert found, out[-3000:]
    emitted, sent, undelivered = map(int, found.groups())
    assert emitted == sent + undelivered and undelivered > 0 and sent > 0, found.group(0)
    assert meta(only_run(root))["complete"] is False  # the master never closed it: the log is the record
