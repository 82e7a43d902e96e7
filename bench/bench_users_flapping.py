"""Client CPU per flapping cycle (connect + hello + welcome + close), beside raw websocket-client.

One backend (``python -m server_stub --store memory --rate-limit 0``) runs as a
child; everything else runs in this process under Locust's gevent patching,
one cycle at a time, and the figure is this process's CPU time
(``time.process_time``) per cycle, so the backend's work is not counted:

* websocket-client ``create_connection`` + ``close`` (the library alone, no agentws);
* ``users.transport.WebSocket`` open + close (our block-reading upgrade, no agentws);
* ``AgentClient`` connect + hello + welcome + clean close, resuming the same session;
* ``FlappingUser`` under a Locust ``LocalRunner`` with 0 ms connected / 0 ms away:
  the same cycle plus Locust's own per-request bookkeeping;
* a whole ``locust`` process of 30 FlappingUsers, 50 ms connected / 50 ms away, a new
  session every cycle (issue 16's method, ``bench/_flapping.py``): CPU of a 25 s run minus
  a 5 s run over the extra cycles, backend and Locust pinned to different cores; the
  median of ``--rounds`` (``--compare-with DIR`` runs another checkout's users the same way,
  alternating with this one's, and prints both: a change measured before/after in one run).

Goal: at most 0.5 ms of client CPU per FlappingUser cycle.

    .venv/bin/python bench/bench_users_flapping.py [--quick] [--rounds 3] [--compare-with /tmp/before]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gevent
import locust  # noqa: F401  (gevent monkey-patching, as in a worker)
import websocket
from locust.env import Environment

from bench import _flapping
from server_stub.process import StubProcess
from users.client import AgentClient
from users.flapping import FlappingUser
from users.options import Settings
from users.recording import EventLog
from users.transport import WebSocket

GOAL_MS = 0.5


def per_cycle_ms(n: int, cycle) -> float:
    for _ in range(max(20, n // 10)):  # warm-up: imports, caches, the backend's first sessions
        cycle()
    t0 = time.process_time()
    for _ in range(n):
        cycle()
    return (time.process_time() - t0) / n * 1000


def locust_flapping_ms(host: str, seconds: float) -> tuple[float, int, int]:
    options = argparse.Namespace(**{**Settings().__dict__, "flap_connected_ms": 0.0, "flap_disconnected_ms": 0.0})
    env = Environment(user_classes=[FlappingUser], host=host, parsed_options=options)
    log = EventLog(env)
    runner = env.create_local_runner()
    runner.start(1, spawn_rate=10)
    gevent.sleep(1.0)  # warm-up
    cycles0, t0 = len(log.of("disconnect")), time.process_time()
    gevent.sleep(seconds)
    cycles, cpu = len(log.of("disconnect")) - cycles0, time.process_time() - t0
    runner.quit()
    failures = env.stats.total.num_failures
    return cpu / max(1, cycles) * 1000, cycles, failures


def locust_process_ms(rounds: int, short_s: int, long_s: int, compare_with: Path | None) -> dict[str, float]:
    """Issue 16's figure: CPU per cycle of a whole Locust process (bench/_flapping.py), the median of
    ``rounds`` (user and system CPU beside it); with ``compare_with`` that checkout's users too, each round
    running both in turn."""
    trees = {"this tree": _flapping.ROOT, **({f"{compare_with}": compare_with} if compare_with else {})}
    figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in trees}
    print(
        f"\nwhole Locust process: {_flapping.USERS} FlappingUsers, {_flapping.CONNECTED_MS:.0f} ms connected / "
        f"{_flapping.AWAY_MS:.0f} ms away, new session each cycle; CPU ({long_s} s - {short_s} s run) / extra cycles"
    )
    with _flapping.reference_backend() as stub:
        for i in range(rounds):
            for name, root in trees.items():
                per = _flapping.cpu_per_cycle(stub.url, short_s, long_s, root=root)
                figures[name].append((per.ms, per.user_ms, per.sys_ms))
                failed = per.short.failed + per.long.failed
                print(
                    f"  round {i + 1} {name:30s} {per.ms:7.3f} ms (user {per.user_ms:.3f}, system {per.sys_ms:.3f})"
                    f"   ({per.extra_cycles} extra cycles, {per.long.cpu_s - per.short.cpu_s:.2f} s CPU, "
                    f"{failed} failures)"
                )
    medians = {}
    for name, values in figures.items():
        total, user, system = (statistics.median(column) for column in zip(*values, strict=True))
        medians[name] = total
        print(
            f"  median of {rounds}: {name:30s} {total:7.3f} ms per cycle (user {user:.3f}, system {system:.3f}; "
            "each column's own median)"
        )
    return medians


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer cycles (< 20 s), a shorter whole-process figure")
    ap.add_argument("--rounds", type=int, default=3, help="whole-process measurements, median quoted (default 3)")
    ap.add_argument("--compare-with", type=Path, help="another checkout: its users measured beside this tree's")
    ap.add_argument("--process-only", action="store_true", help="only the whole-process figure")
    args = ap.parse_args()
    n, seconds = (400, 3.0) if args.quick else (3000, 15.0)
    short_s, long_s = (3, 8) if args.quick else (_flapping.SHORT_S, _flapping.LONG_S)
    if not args.process_only:
        in_process(n, seconds)
    medians = locust_process_ms(1 if args.quick else args.rounds, short_s, long_s, args.compare_with)
    ours = medians["this tree"]
    print(f"  goal <= {GOAL_MS} ms per cycle of a whole Locust process: {'met' if ours <= GOAL_MS else 'NOT met'}")
    return 0


def in_process(n: int, seconds: float) -> None:
    """The cycle's parts, one at a time in this process (the first figures)."""
    with StubProcess("--store", "memory", "--rate-limit", "0") as stub:
        ws_url = stub.ws_url

        def raw_websocket_client():
            websocket.create_connection(ws_url).close()

        def our_transport():
            WebSocket.open(ws_url).close()

        client = AgentClient(Environment(), "bench-user", stub.url)
        assert client.connect(resume=False)
        client.close()

        def agent_client_cycle():
            client.connect(resume=True)
            client.close()

        print(f"client CPU per cycle (process_time), {n} cycles each, backend pid {stub.pid} not counted")
        raw = per_cycle_ms(n, raw_websocket_client)
        print(f"  websocket-client create_connection + close     {raw:7.3f} ms")
        ours = per_cycle_ms(n, our_transport)
        print(
            f"  users.transport open + close                   {ours:7.3f} ms   (x{ours / raw:.2f} of websocket-client)"
        )
        full = per_cycle_ms(n, agent_client_cycle)
        print(f"  AgentClient resume + hello + welcome + close   {full:7.3f} ms")
        flap, cycles, failures = locust_flapping_ms(stub.url, seconds)
        print(
            f"  FlappingUser under LocalRunner (0/0 ms)        {flap:7.3f} ms   ({cycles} cycles, {failures} failures)"
        )
        print(f"  goal <= {GOAL_MS} ms per FlappingUser cycle (0/0 ms): {'met' if flap <= GOAL_MS else 'NOT met'}")


if __name__ == "__main__":
    sys.exit(main())
