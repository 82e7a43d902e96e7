"""Every scenario: the question it answers, the seed test it reproduces, its population, timings and knobs.

One place for each scenario's facts. The Locust config files next to this
module (``scenarios/<name>.conf``) are generated from it (``python -m
scenarios write``; a test fails when one is stale), the load shape reads it
(:mod:`scenarios.shape`), and the README's table is checked against it.

Numbers are the seed plans' (``../shared/seeds/``). Waits the plans measure in
minutes are time-compressed through the backend's resume window (a gap "past
the window" is past a 4 s window as truly as past a 300 s one); each such
scenario keeps its full-length profile as ``<name>-full``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Backend options every time-compressed scenario shares: behaviours happen within seconds.
COMPRESSED_BACKEND = {
    "stub-hb-interval-ms": 1000,  # idle timeout 1.5 s
    "stub-resume-window": 4,
    "stub-chunk-delay-ms": 20,
    "stub-token-ttl": 6,
    "stub-refresh-grace-ms": 1000,
}
COMPRESSED_USERS = {
    "token-ttl-s": 6,
    "refresh-ahead-s": 2,
    "zombie-max-wait-s": 6,
    "gap-medium-s": 1,
    "gap-extended-s": 0,  # the resume window (from welcome) + 1 s
    "backoff-base-ms": 200,
    "backoff-cap-ms": 2000,
}
COMPRESSED = COMPRESSED_BACKEND | COMPRESSED_USERS


@dataclass(frozen=True)
class Scenario:
    """One question, answered by one command: ``locust --config scenarios/<name>.conf``."""

    name: str
    question: str
    seed: str  #: the seed test plan it reproduces
    criteria: str  #: success, in the verdicts' words
    mix: dict[str, int]  #: user class -> weight (users are split by weight)
    users: int
    spawn_rate: float
    seconds: int  #: run time
    options: dict = field(default_factory=dict)  #: Locust / harness / user / backend options (names without --)
    min_seconds: int = 5  #: shortest run in which the scenario can still show what it is for
    drain: int = 10
    gate: tuple[str, ...] = ()  #: the verdicts its exit code is decided on (() = all of them)

    def config(self) -> dict:
        """The Locust config file's settings, in order."""
        return {
            "locustfile": "locustfile.py,scenarios/shape.py",
            "headless": "true",
            "only-summary": "true",
            "scenario": self.name,
            "users": self.users,
            "spawn-rate": self.spawn_rate,
            "run-time": f"{self.seconds}s",
            "drain": self.drain,
            "verdicts": "true",
            **({"gate": ",".join(self.gate)} if self.gate else {}),
            **self.options,
        }


SOAK_MIX = {"HeartbeatUser": 12, "FlappingUser": 3, "TokenRefreshUser": 2, "ConversationUser": 3, "ZombieUser": 1}

#: MQTT on the mosquitto target the harness starts (harness/mosquitto.py). MQTT has no refresh in place, so
#: no TokenRefreshUser; takeover probes stand for the agent counts a broker does not publish.
MQTT_MIX = {"HeartbeatUser": 12, "FlappingUser": 3, "ConversationUser": 3, "ZombieUser": 1}
MQTT = {"target": "mosquitto", "flap-takeover-share": 0.1}
#: Time-compressed: keepalive 2 s (a silent client dropped after 3 s), sessions kept 10 s while away.
MQTT_COMPRESSED = MQTT | {
    "mqtt-keepalive-s": 2,
    "mqtt-session-expiry-s": 10,
    "zombie-max-wait-s": 15,
    "gap-medium-s": 1,
    "gap-weights": "6,3,0",  # an MQTT broker gives no reason for a session gone: no gap past the expiry
    "backoff-base-ms": 200,
    "backoff-cap-ms": 2000,
    # mosquitto 2.0 checks keepalives every 6 s, in whole seconds: the reap's grace is that (thresholds file).
    "thresholds": "scenarios/thresholds/mosquitto.toml",
}

_ALL = [
    Scenario(
        "flapping",
        "Does a client flapping 100 ms up / 50 ms down keep one agent and get its reply once it settles?",
        "WS-RESILIENCE-006 (flapping): 20 cycles of 100 ms connected / 50 ms disconnected, then a stable message",
        "duplicate-agent, delivery (the final reply complete, sha256 matching), leak",
        {"FlappingUser": 1},
        users=1,
        spawn_rate=1,
        seconds=20,
        options={"flap-cycles": 20, "flap-final-turn": "true", "stub-chunk-delay-ms": 20},
        min_seconds=5,
        drain=3,
        gate=("duplicate-agent", "leak", "delivery", "harness-health"),
    ),
    Scenario(
        "flapping-resources",
        "Do 3 clients flapping at once stay within the plan's memory bound?",
        "WS-RESILIENCE-006 resource check: 3 concurrent clients x 15 cycles, memory growth < 50 MB",
        "leak (with the plan's bound: growth under 50 MiB), duplicate-agent",
        {"FlappingUser": 1},
        users=3,
        spawn_rate=3,
        seconds=15,
        options={
            "flap-cycles": 15,
            "flap-final-turn": "true",
            "thresholds": "scenarios/thresholds/flapping-resources.toml",
        },
        min_seconds=5,
        drain=3,
        gate=("duplicate-agent", "leak", "delivery", "harness-health"),
    ),
    Scenario(
        "flapping-scale",
        "Does flapping at scale (hundreds of clients, thousands of cycles) leak or duplicate agents?",
        "WS-RESILIENCE-006 at scale",
        "duplicate-agent, leak (slope, held per cycle, fds and CLOSE_WAIT back to baseline), reconnect-latency",
        {"FlappingUser": 1},
        users=200,
        spawn_rate=50,
        seconds=120,
        options={"flap-jitter": 0.2, "flap-abrupt-share": 0.1},
        min_seconds=20,
        gate=("duplicate-agent", "leak", "reconnect-latency", "harness-health"),
    ),
    Scenario(
        "context",
        "Does a resumed session keep its history and agent context, and does one past the window expire cleanly?",
        "Context preservation TC1-TC3, TC5: history survives, agent context survives mid-workflow, "
        "another address, brief / medium / extended gaps (TC4: context-cycles)",
        "context, delivery, reconnect-latency (brief gaps)",
        {"ConversationUser": 1},
        users=10,
        spawn_rate=10,
        seconds=40,
        options={
            **COMPRESSED,
            "turns-per-connection": 5,
            "gap-weights": "6,3,1",
            "source-addresses": "127.0.0.1,127.0.0.2,127.0.0.3",  # TC3: each reconnect from another address
            "ws-headers": "X-Client-Network: roaming",
        },
        min_seconds=15,
        drain=5,
        gate=("context", "delivery", "harness-health"),
    ),
    Scenario(
        "context-cycles",
        "Does a session stay the same through 10 reconnects in a row, 1 to 5 s apart, without holding memory?",
        "Context preservation TC4: 10 disconnect/reconnect cycles, gaps varied 1-5 s, state checked after each, "
        "memory < 5 % up after the 10 cycles",
        "context (after every cycle), delivery, duplicate-agent, leak (the plan's bound: under 5 % of the "
        "backend's RSS held after the drain)",
        {"ConversationUser": 1},
        users=10,
        spawn_rate=10,
        seconds=75,  # 10 cycles of ~1 s of turns and a 1-5 s gap: about 45 s, 70 s at worst
        options={
            **COMPRESSED,
            "stub-resume-window": 10,  # every 1-5 s gap inside the window
            "turns-per-connection": 5,  # "a rich context" before the first drop
            "gap-weights": "0,1,0",
            "gap-medium-s": 3,
            "gap-spread-s": 2,
            "conversation-cycles": 10,
            "thresholds": "scenarios/thresholds/context-cycles.toml",
        },
        min_seconds=15,
        drain=15,  # past the window: the sessions of the stopped users expire before memory is compared
        gate=("context", "delivery", "duplicate-agent", "leak", "harness-health"),
    ),
    Scenario(
        "context-full",
        "The context scenario at the plan's real lengths: 15 s, 2 min and 10 min gaps, a 5 min window.",
        "Context preservation TC5 full length: brief 15 s, medium 2 min, extended 10 min (window 5 min)",
        "context, delivery",
        {"ConversationUser": 1},
        users=10,
        spawn_rate=1,
        seconds=3600,
        options={
            "stub-resume-window": 300,
            "gap-brief-s": 15,
            "gap-medium-s": 120,
            "gap-extended-s": 600,
            "turns-per-connection": 5,
        },
        min_seconds=5,  # it starts and shows its first turns; the gaps it is for take an hour
        gate=("context", "delivery", "harness-health"),
    ),
    Scenario(
        "midstream",
        "Does a client cut off in the middle of a streamed reply get the rest of it, once, after reconnecting?",
        "Mid-stream disconnection and recovery",
        "delivery (no chunk lost or doubled, sha256 matching), context",
        {"ConversationUser": 1},
        users=10,
        spawn_rate=10,
        seconds=30,
        options={**COMPRESSED, "drop-mid-stream-share": 1.0, "gap-weights": "1,1,0"},
        min_seconds=10,
        drain=5,
        gate=("delivery", "context", "harness-health"),
    ),
    Scenario(
        "queuing",
        "Are messages pushed while a client is away delivered on reconnect, once each, in order?",
        "Message queuing while disconnected",
        "delivery (pushes once each, in order), context",
        {"ConversationUser": 1},
        users=10,
        spawn_rate=10,
        seconds=30,
        options={**COMPRESSED, "pushes-while-away": 5, "gap-weights": "1,1,0", "drop-mid-stream-share": 0},
        min_seconds=10,
        drain=5,
        gate=("delivery", "context", "harness-health"),
    ),
    Scenario(
        "heartbeat",
        "Do heartbeats keep live clients alive, and does the backend reap silent sockets in time?",
        "Heartbeat and zombie cleanup",
        "zombie (every silent socket closed with 4001 within idle timeout + grace, no live client reaped)",
        {"HeartbeatUser": 3, "ZombieUser": 1},
        users=20,
        spawn_rate=20,
        seconds=30,
        options=dict(COMPRESSED),
        min_seconds=10,
        drain=5,
        gate=("zombie", "leak", "harness-health"),
    ),
    Scenario(
        "refresh",
        "Does a token refresh over the open socket work without a reconnect or a broken stream?",
        "Token refresh over the open socket",
        "refresh (every refresh answered, no close or seq gap after one, expiry enforced with 4002)",
        {"TokenRefreshUser": 1},
        users=10,
        spawn_rate=10,
        seconds=30,
        options={**COMPRESSED, "refresh-expire-share": 0.2},
        min_seconds=15,
        drain=5,
        gate=("refresh", "harness-health"),
    ),
    Scenario(
        "restart",
        "Can we deploy under load: does every client come back, with its session, after a backend restart?",
        "Backend restart under load (SIGTERM)",
        "restart (every client back within 30 s, every session inside its window resumed with its state; "
        "peak reconnects/s reported), duplicate-agent, delivery",
        SOAK_MIX,
        users=40,
        spawn_rate=20,
        seconds=40,
        options={**COMPRESSED, "stub-resume-window": 10, "stub-restart-at": 15, "stub-flush-interval-ms": 5000},
        min_seconds=12,
        drain=5,
        gate=("restart", "duplicate-agent", "delivery", "harness-health"),
    ),
    Scenario(
        "restart-kill",
        "The restart scenario with kill -9: sessions survive up to the last store flush.",
        "Backend restart under load (kill -9)",
        "restart (every client back; sessions resumed: none changed in the last flush interval), duplicate-agent",
        {"HeartbeatUser": 6, "FlappingUser": 3, "TokenRefreshUser": 2},
        users=40,
        spawn_rate=20,
        seconds=40,
        options={
            **COMPRESSED,
            "stub-resume-window": 10,
            "stub-restart-at": 15,
            "stub-restart-kill": "true",
        },
        min_seconds=12,
        drain=5,
        gate=("restart", "duplicate-agent", "harness-health"),
    ),
    Scenario(
        "soak",
        "Over an hour of mixed clients, does the backend leak, duplicate agents, lose messages or reconnect slowly?",
        "All seed plans together: long-lived heartbeat clients the majority, with flapping, refreshing and "
        "conversation clients",
        "all nine verdicts",
        SOAK_MIX,
        users=500,
        spawn_rate=20,
        seconds=3600,
        options={"stub-resume-window": 30, "token-ttl-s": 120, "stub-token-ttl": 120, "gap-extended-s": 35},
        min_seconds=30,
        drain=30,
    ),
    Scenario(
        "ci-soak",
        "The soak in two minutes: the CI gate.",
        "All seed plans together, time-compressed",
        "all nine verdicts pass (a restart included)",
        SOAK_MIX,
        users=60,
        spawn_rate=30,
        seconds=120,
        options={**COMPRESSED, "stub-resume-window": 8, "stub-restart-at": 60, "stub-flush-interval-ms": 5000},
        min_seconds=20,
        drain=10,
    ),
]

_ALL += [
    Scenario(
        "mqtt-flapping",
        "Does an MQTT broker keep a flapping client's session (same client id, session present) without leaking?",
        "WS-RESILIENCE-006 (flapping) on MQTT: 100 ms connected / 50 ms away, the same client id each cycle",
        "duplicate-agent (takeover probes: one live connection per client id), leak, reconnect-latency",
        {"FlappingUser": 1},
        users=10,
        spawn_rate=10,
        seconds=30,
        options=MQTT | {"flap-takeover-share": 0.2, "thresholds": "scenarios/thresholds/mosquitto.toml"},
        min_seconds=10,
        drain=5,
        gate=("duplicate-agent", "leak", "reconnect-latency", "harness-health"),
    ),
    Scenario(
        "mqtt-offline-queue",
        "Are QoS 1 messages published while a client is away delivered on its return, once each, in order?",
        "Message queuing while disconnected, on MQTT: the broker's offline queue",
        "delivery (pushes once each, in order; DUP redeliveries not counted twice), context (session present)",
        {"ConversationUser": 1},
        users=10,
        spawn_rate=10,
        seconds=30,
        options=MQTT_COMPRESSED | {"pushes-while-away": 5, "gap-weights": "1,1,0"},
        min_seconds=10,
        drain=5,
        gate=("delivery", "context", "harness-health"),
    ),
    Scenario(
        "mqtt-keepalive",
        "Do PINGREQs keep live MQTT clients connected, and does the broker drop silent ones after 1.5 keepalives?",
        "Heartbeat and zombie cleanup, on MQTT keepalive",
        "zombie (every silent client dropped within 1.5 x keepalive + the broker's 7 s sweep; no live client "
        "dropped), leak",
        {"HeartbeatUser": 3, "ZombieUser": 1},
        users=20,
        spawn_rate=20,
        seconds=30,
        options=dict(MQTT_COMPRESSED),
        min_seconds=10,
        drain=5,
        gate=("zombie", "leak", "harness-health"),
    ),
    Scenario(
        "mqtt-restart",
        "Does every MQTT client come back with its session (session present) after a broker restart (SIGTERM)?",
        "Backend restart under load (SIGTERM), on MQTT with persistence on",
        "restart (every client back, every session present), delivery",
        MQTT_MIX,
        users=40,
        spawn_rate=20,
        seconds=40,
        options=MQTT_COMPRESSED | {"stub-restart-at": 15},
        min_seconds=12,
        drain=5,
        gate=("restart", "delivery", "harness-health"),
    ),
    Scenario(
        "mqtt-restart-kill",
        "The mqtt-restart scenario with kill -9: what does the broker keep of its sessions?",
        "Backend restart under load (kill -9), on MQTT: persistence saves every autosave_interval",
        "restart (every client back; sessions present: none changed since the broker's last save)",
        MQTT_MIX,
        users=40,
        spawn_rate=20,
        seconds=40,
        options=MQTT_COMPRESSED | {"stub-restart-at": 15, "stub-restart-kill": "true"},
        min_seconds=12,
        drain=5,
        gate=("restart", "harness-health"),
    ),
    Scenario(
        "mqtt-soak",
        "Over an hour of mixed MQTT clients, does the broker leak, duplicate sessions, lose messages or "
        "reconnect slowly?",
        "All seed plans together on MQTT: keepalive clients the majority, with flapping, queuing and silent clients",
        "every verdict MQTT exercises (refresh: inconclusive, MQTT has no refresh in place)",
        MQTT_MIX,
        users=500,
        spawn_rate=20,
        seconds=3600,
        options=MQTT | {"mqtt-session-expiry-s": 120, "thresholds": "scenarios/thresholds/mosquitto.toml"},
        min_seconds=30,
        drain=30,
        gate=("duplicate-agent", "leak", "reconnect-latency", "delivery", "context", "zombie", "harness-health"),
    ),
    Scenario(
        "mqtt-ci-soak",
        "The MQTT soak in two minutes: a CI gate for a broker.",
        "All seed plans together on MQTT, time-compressed (restarts: mqtt-restart)",
        "every verdict MQTT exercises (refresh: inconclusive, MQTT has no refresh in place)",
        MQTT_MIX,
        users=60,
        spawn_rate=30,
        seconds=120,
        options=MQTT_COMPRESSED | {"pushes-while-away": 3},
        min_seconds=20,
        drain=10,
        gate=("duplicate-agent", "leak", "reconnect-latency", "delivery", "context", "zombie", "harness-health"),
    ),
]

#: Socket.IO on the reference application the harness starts (targets/socketio, harness/socketio.py): every
#: role, with the app's own refresh event; duplicates by its /stats (one live socket per user, the app's rule).
SOCKETIO = {"target": "socketio", "thresholds": "scenarios/thresholds/socketio.toml"}
#: Time-compressed: the server pings every second and drops a silent client 1 s later; a session is kept
#: 10 s away; tokens live 6 s, refreshed on the open socket within a 1 s grace.
SOCKETIO_APP = "--ping-interval-ms 1000 --ping-timeout-ms 1000 --max-disconnection-ms 10000 --token-ttl-s 6 " + (
    "--refresh-grace-ms 1000 --chunk-delay-ms 20"
)
SOCKETIO_COMPRESSED = SOCKETIO | COMPRESSED_USERS | {"target-args": SOCKETIO_APP}
SOCKETIO_GATE = ("duplicate-agent", "leak", "reconnect-latency", "delivery", "context", "zombie", "refresh")

_ALL += [
    Scenario(
        "socketio-flapping",
        "Does socket.io recover a flapping client's connection state (same sid and pid) every cycle, without leaking?",
        "WS-RESILIENCE-006 (flapping) on Socket.IO: 100 ms connected / 50 ms away, recovering each cycle",
        "context (every recovery the same sid and pid), duplicate-agent (one live socket per user), "
        "reconnect-latency; leak reported, judged by socketio-soak (socket.io keeps a stored packet per "
        "connection past the window until its once-a-minute sweep: 30 s cannot tell that from a leak)",
        {"FlappingUser": 1},
        users=10,
        spawn_rate=10,
        seconds=30,
        options=dict(SOCKETIO_COMPRESSED),
        min_seconds=10,
        drain=5,
        gate=("context", "duplicate-agent", "reconnect-latency", "harness-health"),
    ),
    Scenario(
        "socketio-recovery",
        "Does a client away less than maxDisconnectionDuration get back its sid, its rooms and every event it "
        "missed, once each, in order?",
        "Message queuing while disconnected and mid-stream resume, on Socket.IO connection state recovery",
        "delivery (pushes and replies once each, in order), context (recovered within the window; a new session "
        "after it)",
        {"ConversationUser": 1},
        users=10,
        spawn_rate=10,
        seconds=30,
        options=SOCKETIO_COMPRESSED | {"pushes-while-away": 5},
        min_seconds=10,
        drain=5,
        gate=("delivery", "context", "harness-health"),
    ),
    Scenario(
        "socketio-restart",
        "Does every Socket.IO client recover its session after the server restarts (SIGTERM), with the default "
        "in-memory adapter?",
        "Backend restart under load (SIGTERM), on Socket.IO with the in-memory adapter",
        "restart (every client back, every session recovered): the in-memory adapter keeps nothing",
        SOAK_MIX,
        users=40,
        spawn_rate=20,
        seconds=40,
        options=SOCKETIO_COMPRESSED | {"stub-restart-at": 15},
        min_seconds=12,
        drain=5,
        gate=("restart", "delivery", "harness-health"),
    ),
    Scenario(
        "socketio-restart-redis",
        "The socketio-restart scenario on the Redis streams adapter: are sessions recovered from Redis?",
        "Backend restart under load (SIGTERM), on Socket.IO with @socket.io/redis-streams-adapter",
        "restart (every client back, every session recovered from Redis; found: a recovery in flight at the "
        "SIGTERM loses its session), delivery",
        SOAK_MIX,
        users=40,
        spawn_rate=20,
        seconds=40,
        options=SOCKETIO_COMPRESSED | {"stub-restart-at": 15, "target-args": SOCKETIO_APP + " --adapter redis-streams"},
        min_seconds=12,
        drain=5,
        gate=("restart", "delivery", "harness-health"),
    ),
    Scenario(
        "socketio-soak",
        "Over an hour of mixed Socket.IO clients, does the server leak, duplicate sockets, lose events or "
        "recover slowly?",
        "All seed plans together on Socket.IO: long-lived clients the majority, with flapping, token-refreshing, "
        "conversing and silent clients",
        "every verdict",
        SOAK_MIX,
        users=500,
        spawn_rate=20,
        seconds=3600,
        options=dict(SOCKETIO),
        min_seconds=30,
        drain=190,  # past the default 120 s window + socket.io's 60 s sweep
        gate=(*SOCKETIO_GATE, "harness-health"),
    ),
    Scenario(
        "socketio-ci-soak",
        "The Socket.IO soak in two minutes: a CI gate for a Socket.IO server.",
        "All seed plans together on Socket.IO, time-compressed (restarts: socketio-restart)",
        "every verdict",
        SOAK_MIX,
        users=60,
        spawn_rate=30,
        seconds=120,
        options=SOCKETIO_COMPRESSED | {"pushes-while-away": 3},
        min_seconds=20,
        drain=75,  # past what socket.io keeps for returning clients (10 s window + its 60 s sweep)
        gate=(*SOCKETIO_GATE, "harness-health"),
    ),
]

SCENARIOS: dict[str, Scenario] = {s.name: s for s in _ALL}


class UnknownScenario(KeyError):
    def __str__(self) -> str:
        return f"unknown scenario {self.args[0]!r} (known: {', '.join(SCENARIOS)})"


def get(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise UnknownScenario(name) from None
