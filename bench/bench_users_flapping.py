"""Client CPU per flapping cycle (connect + hello + welcome + close), beside raw websocket-client.

One backend (``python -m server_stub --store memory --rate-limit 0``) runs as a
child; everything else runs in this process under Locust's gevent patching,
one cycle at a time, and the figure is this process's CPU time
(``time.process_time``) per cycle, so the backend's work is not counted:

* websocket-client ``create_connection`` + ``close`` (the library alone, no agentws);
* ``users.transport.WebSocket`` open + close (our block-reading upgrade, no agentws);
* ``AgentClient`` connect + hello + welcome + clean close, resuming the same session;
* ``FlappingUser`` under a Locust ``LocalRunner`` with 0 ms connected / 0 ms away:
  the same cycle plus Locust's own per-request bookkeeping.

Goal: at most 0.5 ms of client CPU per FlappingUser cycle.

    .venv/bin/python bench/bench_users_flapping.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gevent
import locust  # noqa: F401  (gevent monkey-patching, as in a worker)
import websocket
from locust.env import Environment

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer cycles (< 20 s)")
    args = ap.parse_args()
    n, seconds = (400, 3.0) if args.quick else (3000, 15.0)
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
        print(f"  goal <= {GOAL_MS} ms per FlappingUser cycle: {'met' if flap <= GOAL_MS else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
