"""Connect + hello + welcome + close cycles per second, backend on one core.

The backend (``python -m server_stub``, SQLite store, default rate limit) is
pinned to CPU 0 and one wsload worker to CPU 1. Each run is N cycles of
connect (HTTP upgrade) + ``hello`` (new session) + ``welcome`` + close (1000),
with ``--parallel`` cycles in flight; tokens are fetched beforehand, one per
user, for a pool of users big enough that the per-user rate limit never fires.
Reported per run: cycles/s (wall) and the backend's CPU seconds per cycle
(psutil cpu_times of the backend process, all threads, before/after the run).
CPU per cycle is the robust figure on a shared machine; cycles/s is bounded by
1 / (CPU per cycle) when the client keeps the core busy.

The same loop then runs against the bare aiohttp echo server (bench/echo_server.py,
also pinned to CPU 0): connect + one message + its echo + close. The ratio of
the two CPU-per-cycle figures is what server_stub costs on top of aiohttp.

    .venv/bin/python bench/bench_stub_cycles.py [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time

from _common import (
    EchoServer,
    WorkerProc,
    add_backend_arguments,
    banner,
    cpu_s,
    median,
    pin_process,
    port_of,
    start_stub,
)

TARGET_CYCLES_PER_S = 1000


def run_series(worker: WorkerProc, pid: int, port: int, mode: str, n: int, runs: int, parallel: int) -> list[dict]:
    worker.call("cycles", host="127.0.0.1", port=port, n=max(100, n // 10), parallel=parallel, mode=mode)  # warm-up
    out = []
    for r in range(runs):
        c0, w0 = cpu_s(pid), cpu_s(worker.proc.pid)
        ans = worker.call("cycles", host="127.0.0.1", port=port, n=n, parallel=parallel, mode=mode)
        c1, w1 = cpu_s(pid), cpu_s(worker.proc.pid)
        ok = n - ans["failed"]
        fig = {
            "rate": ok / ans["secs"],
            "cpu_per_cycle": (c1 - c0) / max(ok, 1),
            "client_cpu_per_cycle": (w1 - w0) / max(ok, 1),
            "failed": ans["failed"],
        }
        out.append(fig)
        print(
            f"   {mode:5s} run {r + 1}/{runs}: {ok} cycles in {ans['secs']:.2f} s = {fig['rate']:7.0f} /s;"
            f"  backend CPU {1e6 * fig['cpu_per_cycle']:4.0f} µs/cycle"
            f"  (client {1e6 * fig['client_cpu_per_cycle']:3.0f} µs/cycle)"
            + (f"  FAILED {ans['failed']}: {ans['errors'][:2]}" if ans["failed"] else "")
        )
        time.sleep(0.3)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smaller run (< 20 s)")
    ap.add_argument("--n", type=int, default=None, help="cycles per run (default 5000; quick 1500)")
    ap.add_argument("--runs", type=int, default=None, help="runs per server (default 5; quick 3)")
    ap.add_argument("--parallel", type=int, default=16, help="cycles in flight")
    ap.add_argument("--users", type=int, default=None, help="distinct users (tokens) used round-robin")
    add_backend_arguments(ap)
    args = ap.parse_args()
    n = args.n or (1500 if args.quick else 5000)
    runs = args.runs or (3 if args.quick else 5)
    users = args.users or (300 if args.quick else 1000)

    banner(f"bench_stub_cycles: {runs} runs x {n} cycles, {args.parallel} in flight, backend on CPU 0, client on CPU 1")
    stub, tmp = start_stub("--hb-interval-ms", "600000", *args.stub_arg, store=args.store)
    worker = WorkerProc(cpu=1)
    echo = None
    try:
        pin_process(stub.pid, 0)
        worker.call("tokens", url=stub.url, prefix="cyc-", count=users)
        stub_runs = run_series(worker, stub.pid, port_of(stub.url), "hello", n, runs, args.parallel)
        stats = stub.stats()
        stub.stop()
        echo = EchoServer()
        pin_process(echo.pid, 0)
        echo_runs = run_series(worker, echo.pid, echo.port, "echo", n, runs, args.parallel)
    finally:
        worker.close()
        stub.stop()
        if echo is not None:
            echo.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    s_rate, s_cpu = median([r["rate"] for r in stub_runs]), median([r["cpu_per_cycle"] for r in stub_runs])
    e_rate, e_cpu = median([r["rate"] for r in echo_runs]), median([r["cpu_per_cycle"] for r in echo_runs])
    failed = sum(r["failed"] for r in stub_runs + echo_runs)
    print()
    print(
        f"   server_stub  : median {s_rate:7.0f} cycles/s   backend CPU {1e6 * s_cpu:6.0f} µs/cycle"
        f"  (=> at most {1 / s_cpu:6.0f} cycles/s per core)"
    )
    print(
        f"   aiohttp echo : median {e_rate:7.0f} cycles/s   backend CPU {1e6 * e_cpu:6.0f} µs/cycle"
        f"  (=> at most {1 / e_cpu:6.0f} cycles/s per core)"
    )
    print(f"   ratio stub/echo: CPU per cycle x{s_cpu / e_cpu:.2f}, cycles/s x{s_rate / e_rate:.2f}")
    print(
        f"   backend after the runs: sessions_detached={stats['sessions_detached']} connections={stats['connections']}"
        f" rate_limited_total={stats['rate_limited_total']}"
    )
    verdict = "PASS" if s_rate >= TARGET_CYCLES_PER_S else "FAIL"
    cpu_verdict = "PASS" if 1 / s_cpu >= TARGET_CYCLES_PER_S else "FAIL"
    print(
        f"   target >= {TARGET_CYCLES_PER_S} cycles/s on one core: measured {verdict} ({s_rate:.0f}/s);"
        f" CPU-bound capacity {cpu_verdict} ({1 / s_cpu:.0f}/s)" + (f"; {failed} cycles failed" if failed else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
