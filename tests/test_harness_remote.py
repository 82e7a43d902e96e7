"""Telemetry of a backend the harness did not start (``--host``): through /metrics, or psutil with --server-pid."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

from tests.conftest import FAST
from tests.locustfiles.harness_runs import meta, only_run, read_csv, run_locust, sample_sources

RUN = ("--headless", "-u", "2", "-r", "2", "--run-time", "4", "--sample-interval", "0.5")


def _backend_rows(tmp_path, *args: str) -> tuple[dict, list[dict], list[dict]]:
    root = tmp_path / "runs"
    log = tmp_path / "locust.log"
    code = run_locust(*RUN, "--run-dir", str(root), *args, log=log)
    assert code == 0, log.read_text()[-3000:]
    run = only_run(root)
    return meta(run), sample_sources(run)["backend"], read_csv(run / "server_stats.csv")


def _check_server_stats(stats: list[dict], pid: int) -> None:
    assert len(stats) >= 5 and not any(r["error"] for r in stats)
    assert {r["pid"] for r in stats} == {str(pid)} and all(r["agents_live"] != "" for r in stats)


def test_remote_backend_is_sampled_through_its_metrics(tmp_path, stub_factory):
    stub = stub_factory(*FAST)
    m, rows, stats = _backend_rows(tmp_path, "--host", stub.url)
    assert m["host"] == stub.url and m["backend"] == {"embedded": False, "pid": None}
    assert len(rows) >= 5
    for r in rows:
        assert r["pid"] == "" and r["num_threads"] == ""  # /metrics has neither
        assert int(r["rss_bytes"]) > 10_000_000 and int(r["num_fds"]) > 0  # process_resident_memory_bytes, open_fds
        assert r["tcp_established"] == r["tcp_close_wait"] == ""  # sockets need the pid
    # cpu_percent is a delta of process_cpu_seconds_total: blank on the first poll only.
    assert rows[0]["cpu_percent"] == "" and all(float(r["cpu_percent"]) >= 0 for r in rows[1:])
    _check_server_stats(stats, stub.pid)


def test_remote_backend_with_its_pid_is_sampled_through_psutil(tmp_path, stub_factory):
    stub = stub_factory(*FAST)
    # One idle keep-alive connection from here, so the backend's port has an ESTABLISHED socket to count.
    conn = http.client.HTTPConnection("127.0.0.1", urlsplit(stub.url).port, timeout=5)
    conn.request("GET", "/healthz")
    conn.getresponse().read()
    try:
        m, rows, stats = _backend_rows(tmp_path, "--host", stub.url, "--server-pid", str(stub.pid))
    finally:
        conn.close()
    assert m["backend"] == {"embedded": False, "pid": stub.pid}
    assert len(rows) >= 5 and {r["pid"] for r in rows} == {str(stub.pid)}
    for r in rows:
        assert int(r["rss_bytes"]) > 10_000_000 and int(r["num_fds"]) > 0 and int(r["num_threads"]) > 0
        assert r["cpu_percent"] != "" and r["tcp_close_wait"] != ""
    assert min(int(r["tcp_established"]) for r in rows) >= 1
    _check_server_stats(stats, stub.pid)
