"""HeartbeatUser at scale: RSS per user and CPU of one Locust process at a 30 s heartbeat.

One backend child (``--store memory --rate-limit 0 --hb-interval-ms 30000``; 3000 with --quick)
and, in this process, a Locust ``LocalRunner`` with N HeartbeatUsers (each one
greenlet that waits on its socket; no reader greenlet). Reported: this
process's RSS growth per connected user, and its CPU (% of one core) over a
steady window in which every user heartbeats every 30 s (``--quick``: every 3 s, so
that an 8 s window sees heartbeats; the CPU per heartbeat is then projected to 15,000 users at 30 s).

Goal (full run): 15,000 users at <= 25 KiB RSS per user and <= 10 % of a core.
The open-file limit (20,000 per process) bounds N.

    .venv/bin/python bench/bench_users_heartbeat.py [--quick] [--users N] [--window S]
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gevent
import locust  # noqa: F401  (gevent monkey-patching, as in a worker)
import psutil
from locust.env import Environment

from contract.events import Kind
from server_stub.process import StubProcess
from users.heartbeat import HeartbeatUser
from users.recording import protocol_events

HB_INTERVAL_MS = 30_000
GOAL_KIB_PER_USER = 25
GOAL_CPU_PERCENT = 10


class Counts:
    """Counts protocol events by kind without keeping them (an EventLog of 15k users is itself memory)."""

    def __init__(self, environment) -> None:
        self.by_kind: dict[str, int] = {}
        protocol_events(environment).add_listener(self._on_event)

    def _on_event(self, event, **_) -> None:
        self.by_kind[event.kind] = self.by_kind.get(event.kind, 0) + 1

    def __getitem__(self, kind: Kind) -> int:
        return self.by_kind.get(kind, 0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3,000 users, 8 s window (< 20 s)")
    ap.add_argument("--users", type=int, default=None)
    ap.add_argument("--window", type=float, default=None, help="seconds of steady state to measure CPU over")
    ap.add_argument("--spawn-rate", type=float, default=1500)
    ap.add_argument("--hb-interval-ms", type=int, default=None, help="backend heartbeat (quick: 3000, else 30000)")
    args = ap.parse_args()
    users = args.users or (3_000 if args.quick else 15_000)
    window = args.window or (8.0 if args.quick else 60.0)
    hb_ms = args.hb_interval_ms or (3_000 if args.quick else HB_INTERVAL_MS)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if users + 500 > soft:
        print(f"open-file limit {soft} is too low for {users} users")
        return 1
    me = psutil.Process()
    stub_args = ("--store", "memory", "--rate-limit", "0", "--hb-interval-ms", str(hb_ms))
    with StubProcess(*stub_args) as stub:
        env = Environment(user_classes=[HeartbeatUser], host=stub.url)
        counts = Counts(env)
        runner = env.create_local_runner()
        gc.collect()
        rss0 = me.memory_info().rss
        t_spawn = time.monotonic()
        runner.start(users, spawn_rate=args.spawn_rate)
        deadline = time.monotonic() + users / args.spawn_rate + 60
        while counts[Kind.WELCOME] < users and time.monotonic() < deadline:
            gevent.sleep(0.5)
        connected = counts[Kind.WELCOME]
        spawn_s = time.monotonic() - t_spawn
        gevent.sleep(2.0)  # let the spawn's garbage go
        gc.collect()
        rss1 = me.memory_info().rss
        hb0, cpu0, t0 = counts[Kind.HB_RTT], sum(me.cpu_times()[:2]), time.monotonic()
        gevent.sleep(window)
        hb1, cpu1, t1 = counts[Kind.HB_RTT], sum(me.cpu_times()[:2]), time.monotonic()
        stats = stub.stats()
        failures = env.stats.total.num_failures
        t_quit = time.monotonic()
        runner.quit()
        quit_s = time.monotonic() - t_quit
    per_user_kib = (rss1 - rss0) / max(1, connected) / 1024
    cpu_pct = (cpu1 - cpu0) / (t1 - t0) * 100
    hb_rate = (hb1 - hb0) / (t1 - t0)
    print(f"HeartbeatUser x {users}, backend hb_interval {hb_ms} ms, one Locust process (pid {me.pid})")
    print(f"  connected            {connected} in {spawn_s:.1f} s (backend sees {stats['connections']} connections)")
    print(f"  RSS                  {rss0 / 2**20:.1f} MiB -> {rss1 / 2**20:.1f} MiB: {per_user_kib:.1f} KiB per user")
    print(f"  CPU over {t1 - t0:.0f} s       {cpu_pct:.2f} % of one core ({hb_rate:.0f} hb/s answered)")
    print(f"  expected hb/s        {connected / (hb_ms / 1000):.0f} at steady state")
    if hb1 > hb0:
        per_hb_ms = (cpu1 - cpu0) / (hb1 - hb0) * 1000
        at_goal = per_hb_ms / 1000 * 15_000 / (HB_INTERVAL_MS / 1000) * 100
        print(f"  CPU per heartbeat    {per_hb_ms:.3f} ms -> 15,000 users at 30 s: ~{at_goal:.1f} % of a core")
    print(f"  failures             {failures}; zombies reaped by the backend {stats['zombies_reaped_total']}")
    print(f"  quit (stop all)      {quit_s:.1f} s")
    print(
        f"  goals: <= {GOAL_KIB_PER_USER} KiB/user {'met' if per_user_kib <= GOAL_KIB_PER_USER else 'NOT met'}; "
        f"<= {GOAL_CPU_PERCENT} % CPU {'met' if cpu_pct <= GOAL_CPU_PERCENT else 'NOT met'}"
        + ("" if users >= 15_000 else f" (at {users} users, not 15,000)")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
