"""Real Locust runs of every user class against a real backend process (``locust --headless`` child)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_users_plugin import ACTIVE_S_ENV, EVENTS_PATH_ENV, Run

ROOT = Path(__file__).resolve().parent.parent
LOCUST = str(Path(sys.executable).with_name("locust"))
#: How long a run may take to start (imports, first connect) before a ``during`` action goes ahead anyway.
FIRST_EVENT_WAIT_S = 30.0


def run_locust(
    tmp_path, host: str, user_class: str, users: int, seconds: float, *options: str, rate=50, during=None
) -> Run:
    """``locust --headless`` with one user class, ``seconds`` from its users' first protocol event
    (``-t`` bounds it at 30 s more); the events it recorded. Its run directory goes under ``tmp_path``.
    No drain unless ``options`` ask for one: these runs judge the users' events, not the backend after them.

    ``during=(after_s, action)`` calls ``action()`` in the test process ``after_s`` after that first event.
    """
    path = tmp_path / f"{user_class}-{len(list(tmp_path.glob('*.jsonl')))}.jsonl"
    cmd = [
        LOCUST, "-f", "locustfile.py,tests/test_users_plugin.py", "--headless",
        "-u", str(users), "-r", str(rate), "-t", f"{seconds + 30}s", "--stop-timeout", "3",
        "--host", host, "--loglevel", "WARNING", "--only-summary", "--run-dir", str(tmp_path / "runs"),
        *(() if "--drain" in options else ("--drain", "0")), *options, user_class,
    ]  # fmt: skip
    env = {**os.environ, EVENTS_PATH_ENV: str(path), ACTIVE_S_ENV: str(seconds)}
    pipes = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "text": True}
    with subprocess.Popen(cmd, cwd=ROOT, env=env, **pipes) as proc:
        if during is not None:
            after_s, action = during
            first_event_within(path, FIRST_EVENT_WAIT_S, proc)
            time.sleep(after_s)
            action()
        try:
            _, stderr = proc.communicate(timeout=seconds + 70)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
    return Run(path, proc.returncode, stderr)


def first_event_within(path: Path, timeout_s: float, proc: subprocess.Popen) -> None:
    """Wait until the run has written its first event (or ended, or ``timeout_s`` passed)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and path.stat().st_size:
            return
        time.sleep(0.05)


def assert_clean_end(run: Run) -> None:
    assert run.end, run.describe()
    assert run.end["sockets"] == 0, run.describe()
    # gevent's resolver threads (_WorkerGreenlet, each with a bare thread greenlet) may stay, and Locust's
    # -t timer (the run quit before it, see ACTIVE_S_ENV); no user's may
    ignored = ("Hub", "greenlet", "_WorkerGreenlet", "main.<locals>.stop_and_optionally_quit")
    spawned = [g for g in run.end["greenlets"] if g not in ignored]
    assert spawned == ["stats_history"], run.describe()
    assert "Traceback" not in run.stderr, run.describe()


def test_flapping_user_resumes_the_same_agent_every_cycle(tmp_path, stub_factory):
    stub = stub_factory("--rate-limit", "0", "--resume-window", "5")
    run = run_locust(tmp_path, stub.url, "FlappingUser", 5, 4, "--flap-abrupt-share", "0.3")
    assert not run.failures(), run.describe()
    resumed = run.of("welcome", ok=1)
    assert len(resumed) >= 5 * 15, run.describe()
    assert not run.of("welcome", ok=0), run.describe()
    assert len(run.of("reconnect", ok=1)) >= 5 * 14, run.describe()
    details = {e["detail"] for e in run.of("disconnect")}
    assert {"flap_close", "flap_abrupt"} <= details, run.describe()
    assert stub.stats()["duplicate_agents_total"] == 0
    assert_clean_end(run)


def test_flapping_user_sees_the_duplicate_agent_fault(tmp_path, stub_factory):
    stub = stub_factory("--rate-limit", "0", "--fault", "duplicate-agent")
    run = run_locust(tmp_path, stub.url, "FlappingUser", 3, 3)
    changed = run.of("welcome", ok=0)
    assert changed and {e["detail"] for e in changed} == {"resumed:agent_changed"}, run.describe()
    assert_clean_end(run)


def test_flapping_user_with_new_sessions_never_resumes(tmp_path, stub_factory):
    stub = stub_factory("--rate-limit", "0")
    run = run_locust(tmp_path, stub.url, "FlappingUser", 3, 3, "--flap-new-session", "true", "--flap-cycles", "5")
    assert not run.failures(), run.describe()
    assert {e["detail"] for e in run.of("welcome")} == {"new"}, run.describe()
    assert len(run.of("welcome")) == 15, run.describe()
    assert_clean_end(run)


def test_heartbeat_user_times_every_heartbeat(tmp_path, stub_factory):
    stub = stub_factory("--hb-interval-ms", "300", "--rate-limit", "0")
    run = run_locust(tmp_path, stub.url, "HeartbeatUser", 20, 4)
    assert not run.failures(), run.describe()
    rtts = run.of("hb_rtt", ok=1)
    assert len(rtts) >= 20 * 8, run.describe()
    assert all(0 <= e["latency_ms"] < 300 for e in rtts), run.describe()
    assert len(run.requests_named("hb", failed=False)) == len(rtts)
    assert not run.of("close") and not run.of("reconnect"), run.describe()
    assert stub.stats()["zombies_reaped_total"] == 0
    assert_clean_end(run)


ZOMBIE_SERVER = ("--hb-interval-ms", "300", "--rate-limit", "0")


def test_heartbeat_user_refreshes_its_expired_token_and_keeps_its_connection(tmp_path, stub_factory):
    # Heartbeats every 300 ms, a reap only after 2 s of silence: what is judged is the refresh, not how late a
    # busy machine's scheduler lets a heartbeat go (1.5 x 300 ms leaves 150 ms; a loaded CI runner takes that).
    stub = stub_factory(
        "--rate-limit", "0", "--hb-interval-ms", "300", "--idle-timeout-ms", "2000", "--refresh-grace-ms", "500"
    )
    run = run_locust(tmp_path, stub.url, "HeartbeatUser", 3, 6, "--token-ttl-s", "2")
    assert len(run.of("refresh_required", ok=1)) >= 3 * 2, run.describe()
    assert len(run.of("refresh", ok=1)) >= 3 * 2 and not run.of("refresh", ok=0), run.describe()
    assert not run.of("close") and len(run.of("connect")) == 3, run.describe()
    assert stub.stats()["token_expired_closes_total"] == 0
    assert_clean_end(run)


def test_zombie_user_is_reaped_with_4001(tmp_path, stub_factory):
    stub = stub_factory(*ZOMBIE_SERVER)
    run = run_locust(tmp_path, stub.url, "ZombieUser", 5, 4)
    closes = run.of("close", ok=1)
    assert len(closes) >= 5 * 3, run.describe()
    assert {e["code"] for e in closes} == {"4001"}, run.describe()
    # the adapter classified it: the contract says idle_reaped, with the server's announced bound beside it
    assert {(e["role"], e["reason"], e["detail"]) for e in closes} == {("zombie", "idle_reaped", "reaped")}
    assert {e["idle_timeout_ms"] for e in closes} == {450}, run.describe()
    assert all(400 <= e["latency_ms"] < 1000 for e in closes), run.describe()
    assert not run.of("close", ok=0) and not run.failures(), run.describe()
    assert_clean_end(run)


def test_zombie_user_sees_the_no_reap_fault(tmp_path, stub_factory):
    stub = stub_factory(*ZOMBIE_SERVER, "--fault", "no-reap")
    run = run_locust(tmp_path, stub.url, "ZombieUser", 3, 3, "--zombie-max-wait-s", "1")
    assert run.of("close", ok=0) and not run.of("close", ok=1), run.describe()
    assert_clean_end(run)


REFRESH_SERVER = ("--rate-limit", "0", "--refresh-grace-ms", "500", "--chunk-delay-ms", "20", "--chunks-per-reply", "8")
REFRESH_USERS = ("--token-ttl-s", "2", "--refresh-ahead-s", "1")


def test_token_refresh_user_refreshes_without_breaking_streams(tmp_path, stub_factory):
    stub = stub_factory(*REFRESH_SERVER)
    run = run_locust(tmp_path, stub.url, "TokenRefreshUser", 5, 6, *REFRESH_USERS)
    assert not run.failures(), run.describe()
    assert len(run.of("refresh", ok=1)) >= 5 * 3, run.describe()
    assert not run.of("refresh", ok=0), run.describe()
    assert len(run.of("stream_done", ok=1)) >= 5 * 2 and not run.of("stream_done", ok=0), run.describe()
    assert not run.of("close") and not run.of("chunk_gap") and not run.of("refresh_required"), run.describe()
    assert stub.stats()["refreshes_total"] >= 5 * 3
    assert_clean_end(run)


def test_a_refresh_user_waiting_longer_than_the_idle_timeout_heartbeats_and_is_never_reaped(tmp_path, stub_factory):
    # Tokens of 4 s refreshed 1 s ahead: 3 s idle between refreshes, against an idle timeout of 1.5 s (heartbeats
    # every 300 ms; a scheduler hiccup on a busy runner must not reap a live client: what is judged is the wait).
    stub = stub_factory(*REFRESH_SERVER, "--hb-interval-ms", "300", "--idle-timeout-ms", "1500")
    run = run_locust(tmp_path, stub.url, "TokenRefreshUser", 3, 6, "--token-ttl-s", "4", "--refresh-ahead-s", "1")
    assert not run.of("close"), run.describe()
    assert len(run.of("hb_rtt", ok=1)) >= 3 * 10, run.describe()
    assert len(run.of("refresh", ok=1)) >= 3, run.describe()
    assert stub.stats()["zombies_reaped_total"] == 0
    assert_clean_end(run)


def test_token_refresh_user_letting_its_token_expire_gets_4002(tmp_path, stub_factory):
    stub = stub_factory(*REFRESH_SERVER)
    run = run_locust(tmp_path, stub.url, "TokenRefreshUser", 3, 5, *REFRESH_USERS, "--refresh-expire-share", "1")
    assert len(run.of("refresh_required", ok=1)) >= 3, run.describe()
    assert {e["code"] for e in run.of("close")} == {"4002"}, run.describe()
    assert len(run.of("reconnect", ok=1)) >= 3, run.describe()
    assert_clean_end(run)


def test_token_refresh_user_sees_the_refresh_breaks_fault(tmp_path, stub_factory):
    stub = stub_factory(*REFRESH_SERVER, "--fault", "refresh-breaks")
    run = run_locust(tmp_path, stub.url, "TokenRefreshUser", 3, 5, *REFRESH_USERS)
    broken = run.of("refresh", ok=0)
    assert broken and {e["detail"] for e in broken} == {"connection closed after refresh"}, run.describe()
    assert {e["code"] for e in run.of("close")} == {"1011"}, run.describe()
    assert_clean_end(run)


CONVERSATION_SERVER = ("--rate-limit", "0", "--chunk-delay-ms", "20", "--chunks-per-reply", "5", "--resume-window", "2")


def conversation_users(stub, weights: str = "1,1,0") -> tuple[str, ...]:
    return (
        f"--admin-token={stub.admin_token}", "--gap-brief-s", "0.1", "--gap-medium-s", "0.4",
        "--gap-weights", weights, "--turns-per-connection", "2",
    )  # fmt: skip


def test_conversation_user_keeps_its_context_across_drops(tmp_path, stub_factory):
    stub = stub_factory(*CONVERSATION_SERVER)
    run = run_locust(tmp_path, stub.url, "ConversationUser", 5, 8, *conversation_users(stub))
    assert not run.failures(), run.describe()
    checks = run.of("history_check")
    assert len(checks) >= 5 * 3 and all(e["ok"] for e in checks), run.describe()
    assert len(run.of("stream_done", ok=1)) >= 5 * 6 and not run.of("stream_done", ok=0), run.describe()
    assert len(run.of("notify", ok=1)) >= 5 * 3 * 2 and not run.of("notify", ok=0), run.describe()
    assert not run.of("chunk_gap") and not run.of("dup_frame") and not run.of("welcome", ok=0), run.describe()
    assert {e["detail"] for e in run.of("reconnect")} == {"resumed"}, run.describe()
    assert_clean_end(run)


def test_conversation_user_past_the_window_starts_clean(tmp_path, stub_factory):
    stub = stub_factory(*CONVERSATION_SERVER)
    run = run_locust(tmp_path, stub.url, "ConversationUser", 3, 9, *conversation_users(stub, "0,0,1"))
    assert not run.failures(), run.describe()
    checks = run.of("history_check")
    assert checks and {e["detail"] for e in checks} == {"expired cleanly"}, run.describe()
    assert {e["detail"] for e in run.of("welcome") if e["detail"] != "new"} == {"new:expired"}, run.describe()
    assert_clean_end(run)


@pytest.mark.parametrize(
    ("fault", "symptom"),
    [
        ("stream-gap", lambda run: run.of("chunk_gap") and run.of("stream_done", ok=0)),
        ("lose-offline", lambda run: [e for e in run.of("notify", ok=0) if e["detail"] == "push missing after resume"]),
    ],
)
def test_conversation_user_sees_delivery_faults(tmp_path, stub_factory, fault, symptom):
    stub = stub_factory(*CONVERSATION_SERVER, "--fault", fault)
    options = (*conversation_users(stub, "1,0,0"), "--drop-mid-stream-share", "1")
    run = run_locust(tmp_path, stub.url, "ConversationUser", 4, 4, *options)
    assert symptom(run), run.describe()
    assert_clean_end(run)


def test_every_user_comes_back_after_a_backend_restart(tmp_path, stub_factory):
    stub = stub_factory("--hb-interval-ms", "300", "--rate-limit", "0")  # SQLite store: sessions survive
    options = ("--backoff-base-ms", "100", "--backoff-cap-ms", "500")
    run = run_locust(tmp_path, stub.url, "HeartbeatUser", 20, 7, *options, during=(2.5, stub.restart))
    closes = run.of("close")
    assert len(closes) == 20 and {e["code"] for e in closes} == {"1012"}, run.describe()
    back = run.of("reconnect", ok=1)
    assert {e["user"] for e in back} == {e["user"] for e in closes}, run.describe()
    assert {e["detail"] for e in back} == {"resumed"} and not run.of("welcome", ok=0), run.describe()
    # while the backend was down only resume attempts may fail, and only as refused connects
    assert {(r["name"], r["failure"]) for r in run.failures()} <= {
        ("resume", "RequestFailed('connect failed: tcp connect refused')")
    }, run.describe()
    assert len(run.of("hb_rtt", ok=1)) > 20 * 5 and not run.of("hb_rtt", ok=0), run.describe()
    assert_clean_end(run)


def test_an_adapter_that_raises_is_an_error_event_and_the_user_reconnects(tmp_path, stub_factory):
    """A bug in a team's adapter: an ``error`` event with its message, the connection dropped, the user back
    by the reconnect path; Locust and the worker carry on (no traceback, a clean end)."""
    stub = stub_factory("--rate-limit", "0")
    protocol = ("--protocol", "tests.locustfiles.raising_adapter:Raising")
    run = run_locust(tmp_path, stub.url, "FlappingUser", 3, 4, *protocol)
    errors = run.of("error")
    assert errors and {(e["detail"], e["code"]) for e in errors} == {("adapter error", "adapter")}, run.describe()
    assert all("Raising.receive: ValueError: cannot parse this frame" in e["note"] for e in errors), run.describe()
    dropped = [e for e in run.of("disconnect") if e["detail"] == "adapter_failed"]
    assert len(dropped) >= len(errors) - 3, run.describe()  # the last few may come as the run stops
    assert len(run.of("welcome", ok=1)) > len(errors), run.describe()  # back each time
    assert "Traceback" not in run.stderr, run.describe()
    assert_clean_end(run)
