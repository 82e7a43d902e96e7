"""MQTT judged on a real Eclipse Mosquitto broker: a clean broker passes what the run exercises, each setting
that should trip a verdict trips it, and what stock mosquitto does that no setting asks for is pinned as found.

Every run is a real ``locust --headless`` process of the root locustfile with ``--target mosquitto``: the
harness writes the broker's config into the run directory, starts Debian's mosquitto on free loopback ports,
restarts it, and reads its $SYS topics. The runs go as many at once as the machine has room for
(tests/capacity.py). Settings that decide a verdict are the broker's own (``--target-args``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from analysis.rundir import load
from harness import mosquitto
from tests import rundirs
from tests.locustfiles.verdict_runs import Spec, analyse, assert_generator_fit, run_all

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module", autouse=True)
def _broker_installed():
    """Locally a missing broker skips; in CI it fails: bin/setup installs it, and a skip there hides that."""
    if mosquitto.program() is None:
        why = "mosquitto is not installed (bin/setup installs Debian's package)"
        in_ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
        pytest.fail(f"{why}; CI must run these tests, not skip them") if in_ci else pytest.skip(why)


ROOT = Path(__file__).resolve().parent.parent
THRESHOLDS = str(ROOT / "scenarios/thresholds/mosquitto.toml")
#: Keepalive 2 s (silent clients dropped after 3 s, by mosquitto's 6 s sweep up to 10 s), sessions kept 10 s.
MQTT = (
    "--target", "mosquitto", "--mqtt-keepalive-s", "2", "--mqtt-session-expiry-s", "10",
    "--zombie-max-wait-s", "15", "--gap-weights", "6,3,0", "--pushes-while-away", "3", "--verdicts",
)  # fmt: skip
MIX = ("ConversationUser", "FlappingUser", "HeartbeatUser", "ZombieUser")


def broker(*args: str) -> tuple[str, ...]:
    return ("--target-args", " ".join(args)) if args else ()


SPECS = {
    # Clean start never: the sessions' current connections are all resumable ones (see "found" below).
    "clean": Spec(
        MIX,
        12,
        24,
        extra=(*MQTT, "--stub-restart-at", "10", "--mqtt-clean-start", "never", "--flap-takeover-share", "0.2"),
    ),  # fmt: skip
    # The offline queue holds 1 message: the second and third pushes to an away client are dropped.
    "max-queued": Spec(("ConversationUser",), 6, 10, extra=(*MQTT, *broker("--max-queued-messages", "1"))),
    # Keepalive 0 tells the broker never to drop the client.
    "keepalive-0": Spec(("ZombieUser",), 3, 10, extra=(*MQTT, "--mqtt-keepalive-s", "0", "--zombie-max-wait-s", "5")),
    "no-persistence": Spec(
        ("FlappingUser", "HeartbeatUser"),
        8,
        14,
        extra=(*MQTT, "--stub-restart-at", "6", "--mqtt-clean-start", "never", *broker("--persistence", "false")),
    ),  # fmt: skip
    # As found: persistence on, clean start on a session's first connection (paho's default).
    "clean-start-restart": Spec(("FlappingUser", "HeartbeatUser"), 8, 12, extra=(*MQTT, "--stub-restart-at", "6")),
    # MQTT 3.1.1 on the same broker: clean session off on every connection, so every session is saved.
    "v311-restart": Spec(
        ("FlappingUser", "HeartbeatUser"), 8, 12, extra=(*MQTT, "--protocol", "mqtt311", "--stub-restart-at", "6")
    ),
    # A listener that is not MQTT: the reference backend's agentws/1 endpoint answers the CONNECT in text.
    "not-mqtt": Spec(("FlappingUser",), 2, 5, extra=("--protocol", "mqtt", "--ws-path", "/ws", "--verdicts")),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, int | None]]:
    root = tmp_path_factory.mktemp("mqtt-runs")
    # No anonymous clients and no user: every CONNECT is refused (CONNACK not authorized).
    (root / "passwords").write_text("")
    specs = SPECS | {
        "refused": Spec(("FlappingUser",), 2, 6, extra=(*MQTT, *broker("--password-file", str(root / "passwords"))))
    }
    done = run_all(list(specs), root, specs=specs)
    done["refused"] += (root / "refused.log",)
    for name, (run_dir, *_) in done.items():
        assert (run_dir / "verdicts.json").exists(), (
            f"run {name} was not judged; log:\n" + (root / f"{name}.log").read_text()[-3000:]
        )
    return done


def judged(run_dir: Path) -> tuple[dict[str, dict], str]:
    done = analyse(run_dir, "--thresholds", THRESHOLDS)
    assert "Traceback" not in done.stderr, done.stderr
    verdicts = {v["name"]: v for v in json.loads((run_dir / "verdicts.json").read_text())["verdicts"]}
    return verdicts, done.stdout + done.stderr


def test_a_clean_mosquitto_passes_every_verdict_the_run_exercises(runs):
    run_dir = runs["clean"][0]
    verdicts, out = judged(run_dir)
    assert_generator_fit(run_dir)
    exercised = ("duplicate-agent", "leak", "delivery", "context", "zombie", "restart", "harness-health")
    assert {n: verdicts[n]["status"] for n in exercised} == dict.fromkeys(exercised, "pass"), out
    refresh = verdicts["refresh"]
    assert refresh["status"] == "inconclusive" and "cannot swap credentials" in refresh["summary"], out
    latency = verdicts["reconnect-latency"]
    assert latency["status"] == "pass" or (latency["status"] == "inconclusive" and "needs 299" in latency["summary"]), (
        out
    )
    assert "takeovers" in verdicts["duplicate-agent"]["summary"], out
    assert "pushes once each in order" in verdicts["delivery"]["summary"], out
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["protocol"]["name"] == "mqtt" and meta["target"] == "mosquitto"
    assert meta["backend"]["restarts"][0]["ok"], meta["backend"]
    assert "persistence true" in (run_dir / "broker" / "mosquitto.conf").read_text()
    stats = (run_dir / "server_stats.csv").read_text().splitlines()
    assert stats[0].startswith("ts,uptime_s,clients_connected"), stats[0]
    assert any(",," not in row.split(",", 3)[-1][:3] for row in stats[2:]), "no $SYS figures were recorded"


def test_an_offline_queue_shorter_than_the_pushes_fails_delivery(runs):
    verdicts, out = judged(runs["max-queued"][0])
    delivery = verdicts["delivery"]
    assert delivery["status"] == "fail", out
    assert any(e.get("detail") == "push missing after resume" for e in delivery["evidence"]), delivery["evidence"]


def test_a_zombie_with_keepalive_0_is_never_dropped_and_the_cause_is_named(runs):
    """Keepalive 0 asks the broker never to drop the client: the zombie verdict fails, naming the idle timeout
    the connection announced."""
    verdicts, out = judged(runs["keepalive-0"][0])
    zombie = verdicts["zombie"]
    assert zombie["status"] == "fail", out
    # mosquitto answers keepalive 0 with its max_keepalive (65535 s) as the server keepalive: never, in effect.
    assert "never reaped: the connection announced" in zombie["summary"], zombie["summary"]


def test_a_restart_without_persistence_loses_the_sessions(runs):
    verdicts, out = judged(runs["no-persistence"][0])
    restart = verdicts["restart"]
    assert restart["status"] == "fail", out
    assert "came back new" in restart["summary"], restart["summary"]
    users = {e["user"].partition("-")[0] for e in restart["evidence"]}
    assert "FlappingUser" in users, restart["evidence"]  # resumed sessions too: nothing was kept


def test_found_sigterm_keeps_only_sessions_whose_connection_did_not_ask_for_a_clean_start(runs):
    """Stock mosquitto 2.0.11 saves a client's session only when its current connection did not ask for a
    clean start (src/persist_write.c saves ``clean_start == false`` contexts), although MQTT 5 keeps a clean-started
    session for its expiry interval: a v5 client connected since its first (clean) CONNECT loses its session
    at a SIGTERM restart, while flapping clients, which resume, keep theirs."""
    verdicts, out = judged(runs["clean-start-restart"][0])
    restart = verdicts["restart"]
    assert restart["status"] == "fail", out
    lost = {e["user"].partition("-")[0] for e in restart["evidence"] if e.get("what") == "session came back new"}
    assert lost == {"HeartbeatUser"}, restart["evidence"]


def opened(run_dir) -> int:
    """Sessions that opened (welcome ok), raw or counted."""
    ev = load(run_dir).events
    return int(ev.loc[(ev["kind"] == "welcome") & (ev["ok"] == 1), "n"].sum())


def test_a_broker_that_refuses_connect_is_a_named_failure_with_bounded_retries(runs):
    """A broker that refuses every CONNECT: the users record the refusal, back off, and the run ends on time
    with its verdicts, nothing crashed, nothing delivered."""
    run_dir, code, log_path = runs["refused"]
    log = log_path.read_text()
    assert code is not None and "Traceback" not in log, log[-3000:]
    events = rundirs.read(run_dir).to_csv(index=False)
    assert "connack 0x87 not authorized" in events or "connack 0x86 bad username or password" in events, events[:2000]
    assert opened(run_dir) == 0
    refused = events.count("connack 0x8")
    assert 0 < refused < 200, f"{refused} refusals in 6 s: retries are not bounded"


def test_mqtt_311_keeps_every_session_across_a_sigterm_restart(runs):
    """MQTT 3.1.1 (``--protocol mqtt311``): clean session off on every connection, keepalive and queue as v5;
    mosquitto saves every such session, and the restart verdict passes."""
    run_dir = runs["v311-restart"][0]
    verdicts, out = judged(run_dir)
    assert verdicts["restart"]["status"] == "pass", out
    assert json.loads((run_dir / "meta.json").read_text())["protocol"]["name"] == "mqtt311"


def test_a_listener_that_is_not_mqtt_is_a_named_protocol_failure(runs):
    """The users speak MQTT to a server that answers in text: each attempt is an ``error`` naming what the
    server broke (reason protocol_error), the connection is dropped and retried with backoff; nothing opens."""
    run_dir = runs["not-mqtt"][0]
    events = rundirs.read(run_dir).to_csv(index=False)
    assert "a text frame: MQTT over WebSocket is binary frames only" in events, events[:2000]
    assert opened(run_dir) == 0
    assert 0 < events.count("protocol_error") < 100, "retries are not bounded"
    failures = (run_dir / "locust_failures.csv").read_text()
    assert "the server broke the protocol" in failures, failures
