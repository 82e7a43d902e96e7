"""The Resilience tab's live figures and provisional verdicts, fed in-process (the browser test drives the real UI)."""

from __future__ import annotations

import time
from types import SimpleNamespace

from analysis import thresholds
from harness.live import RESERVOIR, WAITING, Live, Provisional, Reservoir

ROLES = {"Flapping": "flapping", "Heartbeat": "heartbeat", "Zombie": "zombie", "TokenRefresh": "refresh"}


def _event(user, kind, ok=1, latency_ms=None, code="", detail="", ts=0.0, reason="", idle=None):
    """A row of events.csv (format 2), its role from the user's class name."""
    role = ROLES.get(user.partition("User")[0], "conversation")
    session = "s-" + user
    return (ts, "local", user, role, session, kind, ok, latency_ms, "a1", None, code, reason, detail, idle, None, "")


def _run(starts=(0.0,), stops=()):
    return SimpleNamespace(
        dir=SimpleNamespace(meta={"test_starts_utc": list(starts), "test_stops_utc": list(stops)}),
        backend=None,
        recorder=None,
    )


def _sample(live: Live, ts: float, rss: float, **stats) -> None:
    live.observe_sample(
        {
            "ts": ts,
            "backend": {"pid": 7, "rss_bytes": rss},
            "locust": [{"source": "local", "cpu_percent": 12.0}],
            "stats": {"pid": 7, "connections": 10, **stats},
            "stats_error": "",
        }
    )


def test_reservoir_is_bounded_and_counts_everything():
    r = Reservoir(100)
    for i in range(10_000):
        r.add(float(i))
    assert r.seen == 10_000 and len(r.values) == 100
    assert max(r.values) > 5_000  # a sample of the whole stream, not its first 100


def test_a_clean_stream_passes_so_far():
    th = thresholds.load()
    live = Live(th)
    rows = []
    for n in range(40):
        user = f"FlappingUser-1-{n}"
        rows += [
            _event(user, "disconnect", detail="flap_close"),
            _event(user, "reconnect", latency_ms=5.0 + n, detail="resumed"),
            _event(user, "welcome", detail="resumed"),
        ]
    rows += [_event("ConversationUser-1-1", "stream_done"), _event("ConversationUser-1-1", "history_check")]
    rows += [_event("ZombieUser-1-1", "close", latency_ms=1500.0, reason="idle_reaped", idle=1500.0)]
    rows += [_event("TokenRefreshUser-1-1", "refresh")]
    live.observe_events(rows)
    for t in range(3):  # harness health needs sustained_samples rounds
        _sample(live, float(t), 50e6, duplicate_agents_total=0, max_agents_per_session=1)
    judged = Provisional(live, th, _run()).judge_all()
    status = {name: v[0] for name, v in judged.items()}
    assert status["duplicate-agent"] == status["delivery"] == status["context"] == "pass", judged
    assert status["zombie"] == status["refresh"] == status["harness-health"] == "pass", judged
    assert status["reconnect-latency"] == "inconclusive"  # 40 reconnects: a bound on p99 needs 299
    assert status["leak"] == status["restart"] == WAITING
    assert live.reconnect_quantile(0.5).value == 24.0 and live.reconnects.seen == 40
    assert live.brief_reconnects.seen == 40  # flap_close is a planned brief gap


def test_each_failure_shows_as_it_arrives():
    th = thresholds.load()
    live = Live(th)
    live.observe_events(
        [
            _event("FlappingUser-1-1", "welcome", detail="resumed:agent_changed"),
            _event("ConversationUser-1-2", "chunk_gap"),
            _event("ConversationUser-1-2", "notify", ok=0, detail="missing"),
            _event("ConversationUser-1-2", "history_check", ok=0),
            _event("ZombieUser-1-3", "close", latency_ms=9000.0, reason="idle_reaped", idle=1500.0),
            _event("HeartbeatUser-1-4", "close", reason="idle_reaped"),
            _event("TokenRefreshUser-1-5", "refresh", ok=0),
            _event("FlappingUser-1-6", "reconnect", ok=0, detail="gave up"),
            _event("FlappingUser-1-6", "reconnect", ok=0, detail="stopped by close code"),
        ]
    )
    _sample(live, 1.0, 50e6, duplicate_agents_total=2, max_agents_per_session=2)
    judged = Provisional(live, th, _run()).judge_all()
    for name in ("duplicate-agent", "delivery", "context", "zombie", "refresh"):
        assert judged[name][0] == "fail", (name, judged[name])
    assert judged["duplicate-agent"][1] == "3 duplicates"  # backend 2 + one agent change seen by a client
    assert judged["delivery"][1] == "2 failures"
    assert "1 reaped late" in judged["zombie"][4] and "1 live (heartbeating) client(s) reaped" in judged["zombie"][4]
    assert live.reconnects.seen == 1 and live.reconnect_quantile(0.5).value == float("inf")


def test_leak_is_judged_on_the_rss_history_after_warm_up():
    th = thresholds.load()
    # 1000 s: after the warm-up (a quarter), a 750 s window, long enough to fail on growth (leak.min_window_s)
    for slope, expected in ((0.1 * 1024 * 1024, "fail"), (0.0, "pass")):
        live = Live(th)
        for t in range(1000):
            _sample(live, float(t), 100e6 + slope * t + (t % 7) * 1000)
        status, figure, _, n, why = Provisional(live, th, _run()).leak()
        assert status == expected, (status, figure, why)
        assert n == 750
    # The same growth in a 10-minute run: too short to tell a heap growing in steps from a leak.
    live = Live(th)
    for t in range(600):
        _sample(live, float(t), 100e6 + 0.1 * 1024 * 1024 * t)
    status, _, _, _, why = Provisional(live, th, _run()).leak()
    assert status == "inconclusive" and "too short" in why, why


def test_reconnect_latencies_beyond_the_reservoir_are_sampled():
    th = thresholds.load()
    live = Live(th)
    live.observe_events(
        [_event("FlappingUser-1-1", "reconnect", latency_ms=float(i % 100)) for i in range(RESERVOIR + 500)]
    )
    assert live.reconnects.seen == RESERVOIR + 500 and len(live.reconnects.values) == RESERVOIR
    assert Provisional(live, th, _run()).reconnect_latency()[0] == "pass"


def test_reconnects_through_a_restart_are_left_to_the_restart_verdict():
    th = thresholds.load()
    live = Live(th, lambda: [{"ts": 100.0, "ready_ts": 102.0}])
    live.observe_events(
        [
            _event("FlappingUser-1-1", "reconnect", latency_ms=3000.0, ts=104.0),  # in the storm: not judged here
            _event("FlappingUser-1-1", "reconnect", latency_ms=20.0, ts=120.0),
        ]
    )
    assert live.reconnects.seen == 1 and live.reconnect_quantile(0.5).value == 20.0


def test_a_late_generator_makes_harness_health_inconclusive_so_far():
    th = thresholds.load()
    live = Live(th)
    for t in range(3):
        _sample(live, float(t), 50e6)
    now = time.time()
    live.observe_sample(
        {
            "ts": now,
            "backend": {"pid": 7, "rss_bytes": 50e6},
            "locust": [
                {
                    "source": "local",
                    "cpu_percent": 12.0,
                    "loop_lag_ms": 4000.0,
                    "loop_late_from": now - 4.0,
                    "loop_late_until": now,
                }
            ],
            "stats": {},
            "stats_error": "",
        }
    )
    status, figure, _, _, why = Provisional(live, th, _run(starts=(now - 20.0,))).harness_health()
    assert status == "inconclusive" and "generator was late" in why and "4,000 ms" in why, why
