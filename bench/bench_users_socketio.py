"""Socket.IO users at scale: HeartbeatUser RSS per user and CPU, FlappingUser CPU per cycle, against the reference app.

The reference Socket.IO application (``targets/socketio/server.js``, Node 20, socket.io with connection state
recovery, memory adapter) and one reference backend (``--store memory --rate-limit 0``) run as children;
everything else runs in this process under Locust's gevent patching, in Locust ``LocalRunner``s, with
``--protocol socketio`` set in the options namespace. The users fetch their tokens from the app's own
``POST /auth/token`` (the default token URL).

1. Heartbeat: N HeartbeatUsers (15,000; ``--quick`` 3,000) connect to the app started with
   ``--ping-interval-ms 25000 --ping-timeout-ms 20000`` (socket.io's defaults; ``--quick`` 3000/3000). The
   server drives the heartbeat: each Engine.IO ping is answered with a pong (``HeartbeatUser.answer_pings``),
   and the client records how late each ping came after the one before (``hb_rtt``, detail ``server_ping``;
   a connection's first, after its open); the window starts one ping interval after the last user
   connected, every user then in its steady ping cycle). Reported: this process's RSS growth per connected
   user, its CPU (% of one core) over a steady window (60 s; ``--quick`` 6 s), the CPU per answered ping,
   and that CPU projected to 15,000 users at the 25 s interval. Connected users are counted by their
   ``welcome`` events and cross-checked against the app's ``/stats`` (``agents_live``, ``connections``).
2. Flapping: FlappingUser with 0 ms connected / 0 ms away, every cycle resuming the session, as
   ``bench_users_mqtt.py``: this process's CPU (``time.process_time``) per completed cycle (successful
   ``connect`` and ``reconnect`` request events), socketio against the app and agentws against the
   reference backend, in alternating rounds of 1 user and of 8 users at once; medians, and the ratio
   socketio / agentws. Also the share of socketio resumes the app recovered (the ``reconnect`` events'
   welcome detail: ``resumed`` against ``new...``): recovering every cycle is the point of the target.
   At 0 ms connected none is recovered: the client closes before the app's first stored event (``session``,
   sent right after ``40``) has come, so it has no offset to present, and socket.io recovers no pid without
   one (socketio/socket.io#5538). So every round runs 1 ms connected too (``--flap-connected-ms 0,1``),
   enough to read that event: then every cycle recovers.

Goals: 15,000 Socket.IO HeartbeatUsers in one process at <= 25 KiB RSS per user and <= 10 % of a core
(projected to 15,000 at 25 s). The flapping figures have no goal: they are measured, with their ratio.
This process and Node (which inherits the limit) need more open files than users (the limit here is 20,000);
Node's default heap limit here (~4 GiB) holds 15,000 sockets without ``NODE_OPTIONS``.

    .venv/bin/python bench/bench_users_socketio.py [--quick] [--users N] [--window S] [--rounds R]
"""

from __future__ import annotations

import argparse
import gc
import os
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

from contract.events import Detail, Kind, RequestName
from server_stub.process import StubProcess
from users.flapping import FlappingUser
from users.heartbeat import HeartbeatUser
from users.recording import protocol_events

ROOT = Path(__file__).resolve().parent.parent

bare_harness()
from harness.socketio import SocketIOProcess  # noqa: E402
from harness.targets import TARGETS  # noqa: E402

GOAL_KIB_PER_USER = 25
GOAL_CPU_PERCENT = 10
GOAL_USERS = 15_000
GOAL_PING_INTERVAL_MS, GOAL_PING_TIMEOUT_MS = 25_000, 20_000  #: socket.io's defaults
FD_MARGIN = 500  #: files a process needs besides the users' sockets
TOKEN_TTL_S = 3600  #: no refresh_required within a run


class Counts:
    """Counts protocol events by kind (and ok=0 ones) without keeping them: 15,000 users' events are memory."""

    def __init__(self, environment) -> None:
        self.by_kind: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        self.reconnects: dict[str, int] = {}  #: successful reconnects by welcome detail (resumed, new...)
        self.late_ms: list[float] | None = None  #: a list: the pings' lateness from then on (the window's)
        protocol_events(environment).add_listener(self._on_event)

    def _on_event(self, event, **_) -> None:
        self.by_kind[event.kind] = self.by_kind.get(event.kind, 0) + 1
        if not event.ok:
            self.failed[event.kind] = self.failed.get(event.kind, 0) + 1
        elif event.kind == Kind.RECONNECT:
            self.reconnects[event.detail] = self.reconnects.get(event.detail, 0) + 1
        elif self.late_ms is not None and event.kind == Kind.HB_RTT and event.detail == Detail.SERVER_PING:
            self.late_ms.append(event.latency_ms)

    def ok(self, kind: Kind) -> int:
        return self.by_kind.get(kind, 0) - self.failed.get(kind, 0)


def start_app(tmp: Path, name: str, *app_args: str) -> SocketIOProcess:
    return SocketIOProcess(
        TARGETS["socketio"], "--host", "127.0.0.1", "--port", "0", *app_args, log_path=tmp / f"{name}.log"
    ).start()


# -- 1. heartbeat --------------------------------------------------------------------------------------
def heartbeat(app: SocketIOProcess, users: int, interval_s: float, window: float, spawn_rate: float) -> dict:
    me, node = psutil.Process(), psutil.Process(app.pid)
    opts = options(protocol="socketio", token_ttl_s=TOKEN_TTL_S)
    env = Environment(user_classes=[HeartbeatUser], host=app.url, parsed_options=opts)
    counts = Counts(env)
    runner = env.create_local_runner()
    gc.collect()
    rss0, node_rss0 = me.memory_info().rss, node.memory_info().rss
    t_spawn = time.monotonic()
    runner.start(users, spawn_rate=spawn_rate)
    deadline = t_spawn + users / spawn_rate + 60
    while counts.ok(Kind.WELCOME) < users and time.monotonic() < deadline:
        gevent.sleep(0.5)
    connected = counts.ok(Kind.WELCOME)
    spawn_s = time.monotonic() - t_spawn
    # every user's first ping comes within an interval of its connect: the window sees steady cycles only
    gevent.sleep(interval_s + 2.0)
    gc.collect()
    rss1 = me.memory_info().rss
    stats = app.stats()
    counts.late_ms = []  # after the RSS sample: the window's pings only
    hb0, cpu0, t0 = counts.ok(Kind.HB_RTT), sum(me.cpu_times()[:2]), time.monotonic()
    disc0, node_cpu0 = counts.by_kind.get(Kind.DISCONNECT, 0), sum(node.cpu_times()[:2])
    gevent.sleep(window)
    hb1, cpu1, t1 = counts.ok(Kind.HB_RTT), sum(me.cpu_times()[:2]), time.monotonic()
    node_cpu = sum(node.cpu_times()[:2]) - node_cpu0
    late = sorted(counts.late_ms)
    counts.late_ms = None
    out = {
        "users": users,
        "interval_s": interval_s,
        "connected": connected,
        "spawn_s": spawn_s,
        "stats": stats,
        "node_rss0": node_rss0,
        "node_cpu_s": node_cpu,
        "rss0": rss0,
        "rss1": rss1,
        "window_s": t1 - t0,
        "cpu_s": cpu1 - cpu0,
        "hb_window": hb1 - hb0,
        "hb_total": counts.ok(Kind.HB_RTT),
        "hb_failed": counts.failed.get(Kind.HB_RTT, 0),
        "disconnects_in_window": counts.by_kind.get(Kind.DISCONNECT, 0) - disc0,
        "welcome_failed": counts.failed.get(Kind.WELCOME, 0),
        "errors": counts.by_kind.get(Kind.ERROR, 0),
        "failures": env.stats.total.num_failures,
        "late_ms": {q: pct(late, q) for q in (50, 99)} | {100: late[-1] if late else float("nan")},
        "late_max_all_ms": env.stats.get(str(RequestName.SERVER_PING), "WS").max_response_time,
    }
    t_quit = time.monotonic()
    runner.quit()
    out["quit_s"] = time.monotonic() - t_quit
    return out


def report_heartbeat(r: dict) -> tuple[float, float, float]:
    per_user_kib = (r["rss1"] - r["rss0"]) / max(1, r["connected"]) / 1024
    cpu_pct = r["cpu_s"] / r["window_s"] * 100
    st = r["stats"]
    print(
        f"HeartbeatUser x {r['users']}, protocol socketio, ping interval {r['interval_s']:g} s "
        f"(server-driven: each ping answered), one Locust process"
    )
    print(
        f"  connected            {r['connected']} in {r['spawn_s']:.1f} s ({r['welcome_failed']} opens failed; app "
        f"/stats: agents_live {st['agents_live']}, connections {st['connections']}, open_fds {st['open_fds']})"
    )
    rss0, rss1 = r["rss0"] / 2**20, r["rss1"] / 2**20
    node0, node1, heap = r["node_rss0"] / 2**20, st["rss_bytes"] / 2**20, st["heap_used_bytes"] / 2**20
    print(f"  RSS                  {rss0:.1f} MiB -> {rss1:.1f} MiB: {per_user_kib:.1f} KiB per user")
    print(
        f"  Node RSS             {node0:.1f} MiB -> {node1:.1f} MiB "
        f"({(node1 - node0) * 1024 / max(1, r['connected']):.1f} KiB per socket; heap used {heap:.1f} MiB)"
    )
    hb_rate = r["hb_window"] / r["window_s"]
    print(
        f"  CPU over {r['window_s']:.0f} s       {cpu_pct:.2f} % of one core ({hb_rate:.0f} pings/s answered; "
        f"Node {r['node_cpu_s'] / r['window_s'] * 100:.1f} %)"
    )
    print(f"  expected pings/s     {r['connected'] / r['interval_s']:.0f} at steady state")
    late = r["late_ms"]
    print(f"  hb_rtt events        {r['hb_window']} in the window, {r['hb_total']} in all, {r['hb_failed']} failed")
    print(
        f"  ping lateness        window p50 {late[50]:.1f} ms, p99 {late[99]:.1f} ms, max {late[100]:.1f} ms "
        f"(max over the whole run: {r['late_max_all_ms']:.0f} ms)"
    )
    at_goal = cpu_pct
    if r["hb_window"]:
        per_hb_ms = r["cpu_s"] / r["hb_window"] * 1000
        at_goal = per_hb_ms / 1000 * GOAL_USERS / (GOAL_PING_INTERVAL_MS / 1000) * 100
        print(
            f"  CPU per ping         {per_hb_ms:.3f} ms -> {GOAL_USERS:,} users at "
            f"{GOAL_PING_INTERVAL_MS / 1000:g} s: ~{at_goal:.1f} % of a core"
        )
    print(
        f"  failures             {r['failures']} requests, {r['errors']} error events, "
        f"{r['disconnects_in_window']} disconnects in the window"
    )
    print(f"  quit (stop all)      {r['quit_s']:.1f} s")
    return per_user_kib, cpu_pct, at_goal


# -- 2. flapping ---------------------------------------------------------------------------------------
def locust_flapping_ms(
    host: str, protocol: str, users: int, seconds: float, connected_ms: float = 0.0, warmup: float = 1.0
) -> tuple:
    """(client CPU ms per completed cycle, cycles, failures by request name, cycles/s wall, reconnects by
    welcome detail in the measured seconds) of FlappingUsers at ``connected_ms`` / 0 ms away under a LocalRunner."""
    opts = options(protocol=protocol, flap_connected_ms=connected_ms, flap_disconnected_ms=0.0)
    env = Environment(user_classes=[FlappingUser], host=host, parsed_options=opts)
    cycles, counts = Cycles(env), Counts(env)
    runner = env.create_local_runner()
    runner.start(users, spawn_rate=max(10, users * 10))
    gevent.sleep(warmup)  # every user connected and flapping
    n0, t0, w0, rec0 = cycles.done, time.process_time(), time.monotonic(), dict(counts.reconnects)
    gevent.sleep(seconds)
    n, cpu, wall = cycles.done - n0, time.process_time() - t0, time.monotonic() - w0
    rec = {str(k): v - rec0.get(k, 0) for k, v in counts.reconnects.items() if v - rec0.get(k, 0)}
    runner.quit()
    return cpu / max(1, n) * 1000, n, dict(cycles.failures), n / wall, rec


def flapping(
    app: SocketIOProcess, stub: StubProcess, rounds: int, seconds: float, levels: list[int], held: list[float], warmup
) -> dict:
    """Per (protocol, users at once, ms connected): the rounds' (ms per cycle, cycles, failures, cycles/s,
    reconnects by welcome detail). Each round, level and connected time runs agentws and socketio (which goes
    first alternates). Each socketio run has a freshly started app: socket.io's memory adapter keeps every
    emitted event for maxDisconnectionDuration (120 s) and a recovery finds its offset by a linear scan of them,
    so the app's CPU per recovered cycle grows with what earlier runs emitted."""
    targets = {"agentws": stub.url, "socketio": app.url}
    results: dict[tuple[str, int, float], list[tuple]] = {}
    for i in range(rounds):
        for connected_ms in held:
            for users in levels:
                for name in targets if i % 2 == 0 else reversed(targets):
                    if name == "socketio":
                        app.restart()  # an empty packet store (the same port: app.url holds)
                    r = locust_flapping_ms(targets[name], name, users, seconds, connected_ms, warmup)
                    results.setdefault((name, users, connected_ms), []).append(r)
                    ms, n, failures, rate, rec = r
                    print(
                        f"  round {i + 1}  {connected_ms:g} ms  {name:8s} x {users:<2d} {ms:7.3f} ms CPU per cycle  "
                        f"({n:5d} cycles, {rate:5.0f}/s wall, recovered {recovered_share(rec):6.1%}, failures "
                        f"{sum(failures.values())}{' ' + str(failures) if failures else ''})"
                    )
    return results


def recovered_share(reconnects: dict[str, int]) -> float:
    """The share of successful reconnects whose welcome said ``resumed`` (the rest: ``new...``, ``resumed:...``)."""
    return reconnects.get(Detail.RESUMED, 0) / max(1, sum(reconnects.values()))


def report_flapping(results: dict, levels: list[int], held: list[float]) -> None:
    for connected_ms in held:
        for users in levels:
            runs = {name: results[name, users, connected_ms] for name in ("agentws", "socketio")}
            ms = {name: median([r[0] for r in rs]) for name, rs in runs.items()}
            rate = {name: median([r[3] for r in rs]) for name, rs in runs.items()}
            rec: dict[str, int] = {}
            for r in runs["socketio"]:
                for k, v in r[4].items():
                    rec[k] = rec.get(k, 0) + v
            print(
                f"  {connected_ms:g} ms connected, {users} user{'s' if users > 1 else ' '} at once, medians: agentws "
                f"{ms['agentws']:.3f} ms ({rate['agentws']:.0f}/s), socketio {ms['socketio']:.3f} ms "
                f"({rate['socketio']:.0f}/s) per cycle; ratio socketio / agentws x{ms['socketio'] / ms['agentws']:.2f}"
            )
            print(
                f"      socketio resumes recovered: {recovered_share(rec):.1%} of {sum(rec.values())} "
                f"({', '.join(f'{k} {v}' for k, v in sorted(rec.items())) or 'none'})"
            )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3,000 users, pings every 3 s, 6 s window, 2 short rounds")
    ap.add_argument("--users", type=int, default=None, help="HeartbeatUsers (15,000; quick 3,000)")
    ap.add_argument("--ping-interval-ms", type=int, default=None, help="the app's ping interval (25000; quick 3000)")
    ap.add_argument("--ping-timeout-ms", type=int, default=None, help="the app's ping timeout (20000; quick 3000)")
    ap.add_argument("--window", type=float, default=None, help="seconds of steady state to measure CPU over")
    ap.add_argument("--spawn-rate", type=float, default=500, help="HeartbeatUsers started per second")
    ap.add_argument("--rounds", type=int, default=None, help="flapping rounds, alternating protocols (3; quick 2)")
    ap.add_argument("--flap-seconds", type=float, default=None, help="measured seconds per flapping run (6; quick 2)")
    ap.add_argument(
        "--flap-users", default="1,8", help="FlappingUsers at once, comma-separated levels, each for both protocols"
    )
    ap.add_argument(
        "--flap-connected-ms", default="0,1", help="FlappingUsers' connected times, comma-separated levels (ms)"
    )
    ap.add_argument("--skip-heartbeat", action="store_true")
    ap.add_argument("--skip-flapping", action="store_true")
    args = ap.parse_args()
    users = args.users or (3_000 if args.quick else GOAL_USERS)
    interval_ms = args.ping_interval_ms or (3000 if args.quick else GOAL_PING_INTERVAL_MS)
    timeout_ms = args.ping_timeout_ms or (3000 if args.quick else GOAL_PING_TIMEOUT_MS)
    window = args.window or (6.0 if args.quick else 60.0)
    rounds = args.rounds or (2 if args.quick else 3)
    flap_s = args.flap_seconds or (2.0 if args.quick else 6.0)
    warmup = 0.5 if args.quick else 1.0
    levels = [int(n) for n in args.flap_users.split(",") if n.strip()]
    held = [float(n) for n in args.flap_connected_ms.split(",") if n.strip()]

    missing = TARGETS["socketio"].missing()
    if missing:
        print(f"the socketio target needs {', '.join(missing)} (bin/setup installs it)")
        return 1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # Node inherits it
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if not args.skip_heartbeat and users + FD_MARGIN > soft:
        print(f"open-file limit {soft} of this process is too low for {users} users (needs {users + FD_MARGIN})")
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="bench-socketio-"))
    t_start = time.monotonic()
    print(f"load average {os.getloadavg()[0]:.2f} at the start ({os.cpu_count()} cpus)")
    try:
        if not args.skip_flapping:
            app = start_app(tmp, "socketio-flap")
            try:
                with StubProcess("--store", "memory", "--rate-limit", "0", log_path=tmp / "stub.log") as stub:
                    print(
                        f"FlappingUser, {args.flap_connected_ms} ms connected / 0 ms away, client CPU (process_time) "
                        f"per completed cycle, {rounds} rounds of {flap_s:g} s; socketio -> the app (started afresh "
                        f"each run), agentws -> server_stub pid {stub.pid}"
                    )
                    flaps = flapping(app, stub, rounds, flap_s, levels, held, warmup)
                report_flapping(flaps, levels, held)
            finally:
                app.close()
        if not args.skip_heartbeat:
            app = start_app(
                tmp, "socketio", "--ping-interval-ms", str(interval_ms), "--ping-timeout-ms", str(timeout_ms)
            )
            try:
                node_limit = psutil.Process(app.pid).rlimit(resource.RLIMIT_NOFILE)[0]
                print(
                    f"socketio app pid {app.pid} on {app.url}, open-file limit {node_limit} (this process: {soft}), "
                    f"NODE_OPTIONS {os.environ.get('NODE_OPTIONS', '(none)')}; idle CPU of this process "
                    f"{idle_cpu_ms_per_s():.2f} ms/s; load average {os.getloadavg()[0]:.2f}"
                )
                if users + FD_MARGIN > node_limit:
                    print(f"Node's open-file limit {node_limit} is too low for {users} users")
                    return 1
                r = heartbeat(app, users, interval_ms / 1000, window, args.spawn_rate)
            finally:
                app.close()
            per_user_kib, cpu_pct, cpu_at_goal = report_heartbeat(r)
            at_goal_size = users >= GOAL_USERS and interval_ms == GOAL_PING_INTERVAL_MS
            # Smaller runs (--quick) are judged by the CPU per ping projected to the goal's load.
            judged_cpu = cpu_pct if at_goal_size else cpu_at_goal
            kib_ok, cpu_ok = per_user_kib <= GOAL_KIB_PER_USER, judged_cpu <= GOAL_CPU_PERCENT
            all_in = r["connected"] >= users and r["hb_window"] > 0 and not r["hb_failed"]
            print(
                f"  goals: {users:,} users connected, pings answered {'met' if all_in else 'NOT met'}; "
                f"<= {GOAL_KIB_PER_USER} KiB/user {'met' if kib_ok else 'NOT met'}; "
                f"<= {GOAL_CPU_PERCENT} % CPU {'met' if cpu_ok else 'NOT met'}"
                + ("" if at_goal_size else
                   f" (at {users:,} users and {interval_ms / 1000:g} s, not {GOAL_USERS:,} at 25 s: "
                   f"CPU judged by its projection, {cpu_at_goal:.1f} %)")
            )  # fmt: skip
            verdict = "PASS" if all_in and kib_ok and cpu_ok else "FAIL"
            print(
                f"{verdict}: Socket.IO HeartbeatUser x {r['connected']:,} in one process: {per_user_kib:.1f} KiB/user, "
                f"{cpu_pct:.2f} % of a core at a {interval_ms / 1000:g} s ping interval"
                + ("" if at_goal_size else f" (~{cpu_at_goal:.1f} % projected to {GOAL_USERS:,} at 25 s)")
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"total {time.monotonic() - t_start:.0f} s; load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
