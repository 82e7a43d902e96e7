"""MQTT users at scale: HeartbeatUser RSS per user and CPU, FlappingUser CPU per cycle, against mosquitto.

One Eclipse Mosquitto broker (``harness.mosquitto.MosquittoProcess``: websockets listener on
loopback, persistence in a temp dir) and one reference backend (``--store memory --rate-limit 0``)
run as children; everything else runs in this process under Locust's gevent patching, in
Locust ``LocalRunner``s, with ``--protocol mqtt`` (MQTT 5) set in the options namespace.

1. Heartbeat: N HeartbeatUsers (15,000; ``--quick`` 3,000) connect to the broker (CONNECT,
   CONNACK, SUBSCRIBE, SUBACK) and send a PINGREQ every ``--mqtt-keepalive-s`` (30 s;
   ``--quick`` 3 s), timing each PINGRESP (``hb_rtt``). Reported: this process's RSS growth
   per connected user, its CPU (% of one core) over a steady window (60 s; ``--quick`` 6 s),
   the CPU per heartbeat, and that CPU projected to 15,000 users at a 30 s keepalive.
   Connected users are counted by their ``welcome`` events (the session opened) and
   cross-checked against the broker's open file descriptors.
2. Flapping: FlappingUser with 0 ms connected / 0 ms away, as ``bench_users_flapping.py``'s
   ``locust_flapping_ms``: this process's CPU (``time.process_time``) per completed cycle
   (connect or resume + open + clean close; completed cycles are the successful ``connect``
   and ``reconnect`` request events), mqtt against mosquitto and agentws against the reference
   backend, in alternating rounds; medians quoted, and the ratio mqtt / agentws. mosquitto
   2.0.11 answers a WebSocket upgrade only on its loop tick (100-200 ms), so an MQTT cycle's
   wall time is mostly waiting: the figure is CPU per cycle, not cycles per second. Each
   round runs 1 user (as bench_users_flapping.py) and 8 users at once (``--flap-users``, the
   same for both protocols). A control, "agentws paced", runs agentws with an away time that
   brings its cycle rate down to the rate mqtt just had: a loop idle ~200 ms per cycle costs
   more CPU per cycle (cold caches, more hub wake-ups per unit of work) whatever the protocol,
   so mqtt / agentws includes the pacing and mqtt / agentws paced compares loops as idle.

Goals: 15,000 MQTT HeartbeatUsers in one process at <= 25 KiB RSS per user and <= 10 % of a
core. The flapping figures have no goal: they are measured, with their ratios.
Both this process and mosquitto need more open files than users (the limit here is 20,000).

    .venv/bin/python bench/bench_users_mqtt.py [--quick] [--users N] [--window S] [--rounds R]
"""

from __future__ import annotations

import argparse
import gc
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gevent
import locust  # noqa: F401  (gevent monkey-patching, as in a worker)
import psutil
from _common import median, pct
from _users import Cycles, bare_harness, idle_cpu_ms_per_s, options
from locust.env import Environment

from contract.events import Kind, RequestName
from server_stub.process import StubProcess
from users.flapping import FlappingUser
from users.heartbeat import HeartbeatUser
from users.recording import protocol_events

bare_harness()
from harness.mosquitto import MosquittoProcess  # noqa: E402

GOAL_KIB_PER_USER = 25
GOAL_CPU_PERCENT = 10
GOAL_USERS = 15_000
GOAL_KEEPALIVE_S = 30
FD_MARGIN = 500  #: files a process needs besides the users' sockets


class Counts:
    """Counts protocol events by kind (and ok=0 ones) without keeping them: 15,000 users' events are memory."""

    def __init__(self, environment) -> None:
        self.by_kind: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        self.hb_rtt_ms: list[float] | None = None  #: a list: the round trips from then on (the window's)
        protocol_events(environment).add_listener(self._on_event)

    def _on_event(self, event, **_) -> None:
        self.by_kind[event.kind] = self.by_kind.get(event.kind, 0) + 1
        if not event.ok:
            self.failed[event.kind] = self.failed.get(event.kind, 0) + 1
        elif self.hb_rtt_ms is not None and event.kind == Kind.HB_RTT:
            self.hb_rtt_ms.append(event.latency_ms)

    def __getitem__(self, kind: Kind) -> int:
        return self.by_kind.get(kind, 0)

    def ok(self, kind: Kind) -> int:
        return self.by_kind.get(kind, 0) - self.failed.get(kind, 0)


def open_files_limit(pid: int) -> int:
    return psutil.Process(pid).rlimit(resource.RLIMIT_NOFILE)[0]


# -- 1. heartbeat --------------------------------------------------------------------------------------
def heartbeat(broker: MosquittoProcess, users: int, keepalive_s: int, window: float, spawn_rate: float) -> dict:
    me = psutil.Process()
    opts = options(protocol="mqtt", mqtt_keepalive_s=keepalive_s)
    env = Environment(user_classes=[HeartbeatUser], host=broker.info["url"], parsed_options=opts)
    counts = Counts(env)
    runner = env.create_local_runner()
    broker_fds0 = psutil.Process(broker.pid).num_fds()
    gc.collect()
    rss0 = me.memory_info().rss
    t_spawn = time.monotonic()
    runner.start(users, spawn_rate=spawn_rate)
    deadline = t_spawn + users / spawn_rate + 60
    while counts.ok(Kind.WELCOME) < users and time.monotonic() < deadline:
        gevent.sleep(0.5)
    connected = counts.ok(Kind.WELCOME)
    spawn_s = time.monotonic() - t_spawn
    gevent.sleep(2.0)  # let the spawn's garbage go
    gc.collect()
    rss1 = me.memory_info().rss
    mosquitto = psutil.Process(broker.pid)
    broker_fds = mosquitto.num_fds() - broker_fds0
    counts.hb_rtt_ms = []  # after the RSS sample: the window's round trips only
    hb0, cpu0, t0 = counts.ok(Kind.HB_RTT), sum(me.cpu_times()[:2]), time.monotonic()
    disc0, broker_cpu0 = counts[Kind.DISCONNECT], sum(mosquitto.cpu_times()[:2])
    gevent.sleep(window)
    hb1, cpu1, t1 = counts.ok(Kind.HB_RTT), sum(me.cpu_times()[:2]), time.monotonic()
    broker_cpu = sum(mosquitto.cpu_times()[:2]) - broker_cpu0
    rtts = sorted(counts.hb_rtt_ms)
    counts.hb_rtt_ms = None
    out = {
        "users": users,
        "keepalive_s": keepalive_s,
        "connected": connected,
        "spawn_s": spawn_s,
        "broker_fds": broker_fds,
        "broker_rss": mosquitto.memory_info().rss,
        "broker_cpu_s": broker_cpu,
        "rss0": rss0,
        "rss1": rss1,
        "window_s": t1 - t0,
        "cpu_s": cpu1 - cpu0,
        "hb_window": hb1 - hb0,
        "hb_total": counts.ok(Kind.HB_RTT),
        "hb_failed": counts.failed.get(Kind.HB_RTT, 0),
        "disconnects_in_window": counts[Kind.DISCONNECT] - disc0,
        "welcome_failed": counts.failed.get(Kind.WELCOME, 0),
        "errors": counts[Kind.ERROR],
        "failures": env.stats.total.num_failures,
        "hb_rtt_ms": {q: pct(rtts, q) for q in (50, 99)} | {100: rtts[-1] if rtts else float("nan")},
        "hb_rtt_max_all_ms": env.stats.get(str(RequestName.HB), "WS").max_response_time,
    }
    t_quit = time.monotonic()
    runner.quit()
    out["quit_s"] = time.monotonic() - t_quit
    return out


def report_heartbeat(r: dict) -> tuple[float, float]:
    per_user_kib = (r["rss1"] - r["rss0"]) / max(1, r["connected"]) / 1024
    cpu_pct = r["cpu_s"] / r["window_s"] * 100
    print(f"HeartbeatUser x {r['users']}, protocol mqtt (MQTT 5), keepalive {r['keepalive_s']} s, one Locust process")
    print(
        f"  connected            {r['connected']} in {r['spawn_s']:.1f} s "
        f"(broker holds {r['broker_fds']} more open files; {r['welcome_failed']} opens failed)"
    )
    rss0, rss1, broker_rss = (r[k] / 2**20 for k in ("rss0", "rss1", "broker_rss"))
    print(
        f"  RSS                  {rss0:.1f} MiB -> {rss1:.1f} MiB: {per_user_kib:.1f} KiB per user"
        f"   (mosquitto RSS {broker_rss:.1f} MiB)"
    )
    hb_rate = r["hb_window"] / r["window_s"]
    print(
        f"  CPU over {r['window_s']:.0f} s       {cpu_pct:.2f} % of one core ({hb_rate:.0f} hb/s answered; "
        f"mosquitto {r['broker_cpu_s'] / r['window_s'] * 100:.1f} %)"
    )
    print(f"  expected hb/s        {r['connected'] / r['keepalive_s']:.0f} at steady state")
    rtt = r["hb_rtt_ms"]
    print(f"  hb_rtt events        {r['hb_window']} in the window, {r['hb_total']} in all, {r['hb_failed']} failed")
    print(
        f"  PINGRESP round trip  window p50 {rtt[50]:.1f} ms, p99 {rtt[99]:.1f} ms, max {rtt[100]:.1f} ms "
        f"(max over the whole run, spawn included: {r['hb_rtt_max_all_ms']:.0f} ms)"
    )
    if r["hb_window"]:
        per_hb_ms = r["cpu_s"] / r["hb_window"] * 1000
        at_goal = per_hb_ms / 1000 * GOAL_USERS / GOAL_KEEPALIVE_S * 100
        print(
            f"  CPU per heartbeat    {per_hb_ms:.3f} ms -> {GOAL_USERS:,} users at {GOAL_KEEPALIVE_S} s: "
            f"~{at_goal:.1f} % of a core"
        )
    print(
        f"  failures             {r['failures']} requests, {r['errors']} error events, "
        f"{r['disconnects_in_window']} disconnects in the window"
    )
    print(f"  quit (stop all)      {r['quit_s']:.1f} s")
    at_goal = r["cpu_s"] / max(1, r["hb_window"]) * GOAL_USERS / GOAL_KEEPALIVE_S * 100 if r["hb_window"] else cpu_pct
    return per_user_kib, cpu_pct, at_goal


# -- 2. flapping ---------------------------------------------------------------------------------------
def locust_flapping_ms(
    host: str, protocol: str, users: int, seconds: float, away_ms: float = 0.0, warmup: float = 1.0
) -> tuple[float, int, dict, float]:
    """(client CPU ms per completed cycle, cycles, failures by request name, cycles/s wall) of FlappingUsers
    at 0 ms connected / ``away_ms`` away under a LocalRunner."""
    opts = options(protocol=protocol, flap_connected_ms=0.0, flap_disconnected_ms=away_ms)
    env = Environment(user_classes=[FlappingUser], host=host, parsed_options=opts)
    cycles = Cycles(env)
    runner = env.create_local_runner()
    runner.start(users, spawn_rate=max(10, users * 10))
    gevent.sleep(warmup)  # every user connected and flapping
    n0, t0, w0 = cycles.done, time.process_time(), time.monotonic()
    gevent.sleep(seconds)
    n, cpu, wall = cycles.done - n0, time.process_time() - t0, time.monotonic() - w0
    runner.quit()
    return cpu / max(1, n) * 1000, n, dict(cycles.failures), n / wall


def flapping(
    broker: MosquittoProcess, stub: StubProcess, rounds: int, seconds: float, levels: list[int], warmup: float
) -> dict:
    """Per (run, users at once): the rounds' (ms per cycle, cycles, failures, cycles/s, away ms).

    Each round and level: agentws and mqtt at 0/0 ms (which goes first alternates), then the control
    "agentws paced": agentws with an away time that brings its cycle rate down to mqtt's just measured,
    so that both loops are as idle between cycles (a loop that waits ~200 ms per cycle runs on cold caches
    and wakes the gevent hub more often per unit of work: it costs more CPU per cycle whatever the protocol).
    """
    targets = {"agentws": stub.url, "mqtt": broker.info["url"]}
    results: dict[tuple[str, int], list[tuple[float, int, dict, float, float]]] = {}

    def run(name: str, host: str, protocol: str, users: int, away_ms: float = 0.0) -> tuple:
        ms, n, failures, rate = locust_flapping_ms(host, protocol, users, seconds, away_ms, warmup)
        results.setdefault((name, users), []).append((ms, n, failures, rate, away_ms))
        print(
            f"  round {i + 1}  {name:13s} x {users:<2d} {ms:7.3f} ms CPU per cycle   ({n:5d} cycles, "
            f"{rate:6.0f}/s wall{f', away {away_ms:.0f} ms' if away_ms else ''}, failures "
            f"{sum(failures.values())}{' ' + str(failures) if failures else ''})"
        )
        return ms, rate

    for i in range(rounds):
        for users in levels:
            rates = {}
            for name in targets if i % 2 == 0 else reversed(targets):
                rates[name] = run(name, targets[name], name, users)[1]
            # per user: mqtt's cycle takes users / rate seconds; agentws's own cycle is the rest of it
            away_ms = max(0.0, (users / max(rates["mqtt"], 0.1) - users / max(rates["agentws"], 0.1)) * 1000)
            run("agentws paced", stub.url, "agentws", users, away_ms)
    return results


def report_flapping(results: dict, levels: list[int]) -> dict:
    medians = {}
    for users in levels:
        ms = {name: median([r[0] for r in results[name, users]]) for name in ("agentws", "mqtt", "agentws paced")}
        rate = {name: median([r[3] for r in results[name, users]]) for name in ("agentws", "mqtt", "agentws paced")}
        medians[users] = ms
        print(
            f"  {users} user{'s' if users > 1 else ' '} at once, medians: agentws {ms['agentws']:.3f} ms "
            f"({rate['agentws']:.0f}/s), mqtt {ms['mqtt']:.3f} ms ({rate['mqtt']:.0f}/s), agentws paced "
            f"{ms['agentws paced']:.3f} ms ({rate['agentws paced']:.0f}/s) per cycle"
        )
        print(
            f"      ratio mqtt / agentws x{ms['mqtt'] / ms['agentws']:.2f}; "
            f"mqtt / agentws paced to mqtt's rate x{ms['mqtt'] / ms['agentws paced']:.2f}"
        )
    return medians


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="3,000 users, keepalive 3 s, 6 s window, 2 short rounds (< 60 s)"
    )
    ap.add_argument("--users", type=int, default=None, help="HeartbeatUsers (15,000; quick 3,000)")
    ap.add_argument("--mqtt-keepalive-s", type=int, default=None, help="the users' keepalive (30; quick 3)")
    ap.add_argument("--window", type=float, default=None, help="seconds of steady state to measure CPU over")
    ap.add_argument("--spawn-rate", type=float, default=500, help="HeartbeatUsers started per second")
    ap.add_argument("--rounds", type=int, default=None, help="flapping rounds, alternating protocols (3; quick 2)")
    ap.add_argument("--flap-seconds", type=float, default=None, help="measured seconds per flapping run (6; quick 2)")
    ap.add_argument(
        "--flap-users", default="1,8", help="FlappingUsers at once, comma-separated levels, each for both protocols"
    )
    ap.add_argument("--skip-heartbeat", action="store_true")
    ap.add_argument("--skip-flapping", action="store_true")
    args = ap.parse_args()
    users = args.users or (3_000 if args.quick else GOAL_USERS)
    keepalive = args.mqtt_keepalive_s or (3 if args.quick else GOAL_KEEPALIVE_S)
    window = args.window or (6.0 if args.quick else 60.0)
    rounds = args.rounds or (2 if args.quick else 3)
    flap_s = args.flap_seconds or (2.0 if args.quick else 6.0)
    warmup = 0.5 if args.quick else 1.0
    levels = [int(n) for n in args.flap_users.split(",") if n.strip()]

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if not args.skip_heartbeat and users + FD_MARGIN > soft:
        print(f"open-file limit {soft} of this process is too low for {users} users (needs {users + FD_MARGIN})")
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="bench-mqtt-"))
    t_start = time.monotonic()
    try:
        broker = MosquittoProcess(None, "--host", "127.0.0.1", "--port", "0", log_path=tmp / "mosquitto.log").start()
        try:
            broker_limit = open_files_limit(broker.pid)
            print(
                f"mosquitto pid {broker.pid} on {broker.info['url']}, open-file limit {broker_limit} "
                f"(this process: {soft}); idle CPU of this process {idle_cpu_ms_per_s():.2f} ms/s"
            )
            if not args.skip_heartbeat and users + FD_MARGIN > broker_limit:
                print(f"mosquitto's open-file limit {broker_limit} is too low for {users} users")
                return 1
            if not args.skip_flapping:
                with StubProcess("--store", "memory", "--rate-limit", "0", log_path=tmp / "stub.log") as stub:
                    print(
                        f"FlappingUser, 0 ms connected / 0 ms away, client CPU (process_time) per completed cycle, "
                        f"{rounds} rounds of {flap_s:g} s; mqtt -> mosquitto, agentws -> server_stub pid {stub.pid}"
                    )
                    flaps = flapping(broker, stub, rounds, flap_s, levels, warmup)
                report_flapping(flaps, levels)
            if not args.skip_heartbeat:
                r = heartbeat(broker, users, keepalive, window, args.spawn_rate)
                per_user_kib, cpu_pct, cpu_at_goal = report_heartbeat(r)
                at_goal_size = users >= GOAL_USERS and keepalive == GOAL_KEEPALIVE_S
                # Smaller runs (--quick) are judged by the CPU per heartbeat projected to the goal's load.
                judged_cpu = cpu_pct if at_goal_size else cpu_at_goal
                kib_ok, cpu_ok = per_user_kib <= GOAL_KIB_PER_USER, judged_cpu <= GOAL_CPU_PERCENT
                all_in = r["connected"] >= users and r["hb_window"] > 0 and not r["hb_failed"]
                print(
                    f"  goals: {users:,} users connected, heartbeats answered {'met' if all_in else 'NOT met'}; "
                    f"<= {GOAL_KIB_PER_USER} KiB/user {'met' if kib_ok else 'NOT met'}; "
                    f"<= {GOAL_CPU_PERCENT} % CPU {'met' if cpu_ok else 'NOT met'}"
                    + ("" if at_goal_size else
                       f" (at {users:,} users and {keepalive} s, not {GOAL_USERS:,} at {GOAL_KEEPALIVE_S} s: "
                       f"CPU judged by its projection, {cpu_at_goal:.1f} %)")
                )  # fmt: skip
                verdict = "PASS" if all_in and kib_ok and cpu_ok else "FAIL"
                print(
                    f"{verdict}: MQTT HeartbeatUser x {r['connected']:,} in one process: {per_user_kib:.1f} KiB/user, "
                    f"{cpu_pct:.2f} % of a core at {keepalive} s keepalive"
                    + ("" if at_goal_size else f" (~{cpu_at_goal:.1f} % projected to {GOAL_USERS:,} at 30 s)")
                )
        finally:
            broker.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"total {time.monotonic() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
