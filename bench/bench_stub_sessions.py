"""RSS per concurrent attached session: ramp to 15,000 sessions in one backend process and hold.

Each session is a socket that did connect + ``hello`` (new session, its own
user and token) + ``welcome`` and then sends nothing; the backend runs with a
one-hour heartbeat interval and one-hour tokens so nothing is reaped or
expires while we hold. The client is two wsload worker processes (7,500
sockets each, under the 20,000 open-file limit per process).

The backend's RSS (psutil, the StubProcess pid) is sampled at the baseline
(after the tokens were issued, before the first socket) and at the plateau
(every socket attached, after the SQLite write-behind flushed them; median of
several samples). (plateau - baseline) / sessions is the RSS per session; the
target is <= 25 KiB. The same number of bare aiohttp WebSocket connections
(bench/echo_server.py, one message echoed, then held) gives the baseline of
what aiohttp itself costs per socket, and the ratio.

    .venv/bin/python bench/bench_stub_sessions.py [--quick] [--n 15000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time

from _common import EchoServer, WorkerProc, add_backend_arguments, banner, median, port_of, rss, start_stub

TARGET_KIB = 25.0
KiB = 1024


def plateau_rss(pid: int, samples: int, every_s: float) -> int:
    values = []
    for _ in range(samples):
        values.append(rss(pid))
        time.sleep(every_s)
    return int(median(values))


def hold(workers: list[WorkerProc], pid: int, port: int, n: int, mode: str, settle_s: float) -> dict:
    """Open n sockets across the workers; return the RSS figures of the server ``pid``."""
    time.sleep(0.5)
    base = plateau_rss(pid, 3, 0.2)
    per = [n // len(workers) + (1 if i < n % len(workers) else 0) for i in range(len(workers))]
    t0 = time.perf_counter()
    for w, k in zip(workers, per, strict=True):
        w.send("open", host="127.0.0.1", port=port, n=k, concurrency=100, mode=mode)
    answers = [w.recv() for w in workers]
    ramp_s = time.perf_counter() - t0
    opened = sum(a["opened"] for a in answers)
    failed = sum(a["failed"] for a in answers)
    errors = [e for a in answers for e in a["errors"]][:3]
    time.sleep(settle_s)
    top = plateau_rss(pid, 5, 0.4)
    return {"base": base, "plateau": top, "opened": opened, "failed": failed, "errors": errors, "ramp_s": ramp_s}


def report(label: str, fig: dict) -> float:
    per_kib = (fig["plateau"] - fig["base"]) / max(fig["opened"], 1) / KiB
    print(
        f"   {label}: {fig['opened']} sockets held (ramp {fig['ramp_s']:.1f} s, {fig['opened'] / fig['ramp_s']:.0f}/s)"
        f"  RSS {fig['base'] / 2**20:.1f} MiB -> {fig['plateau'] / 2**20:.1f} MiB"
        f"  = {per_kib:.2f} KiB per socket" + (f"  ({fig['failed']} failed: {fig['errors']})" if fig["failed"] else "")
    )
    return per_kib


def close_all(workers: list[WorkerProc]) -> None:
    for w in workers:
        w.send("close_all", concurrency=200)
    for w in workers:
        w.recv()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smaller run (< 20 s): 2,000 sessions")
    ap.add_argument("--n", type=int, default=None, help="concurrent sessions (default 15000; quick 2000)")
    ap.add_argument("--workers", type=int, default=2, help="client processes")
    add_backend_arguments(ap)
    args = ap.parse_args()
    n = args.n or (2000 if args.quick else 15000)
    settle_s = 1.5 if args.quick else 3.0

    banner(f"bench_stub_sessions: {n} concurrent attached sessions, {args.workers} client processes")
    stub, tmp = start_stub("--hb-interval-ms", "3600000", "--token-ttl", "3600", *args.stub_arg, store=args.store)
    workers = [WorkerProc() for _ in range(args.workers)]
    echo = None
    try:
        per = [n // len(workers) + (1 if i < n % len(workers) else 0) for i in range(len(workers))]
        t0 = time.perf_counter()
        for i, (w, k) in enumerate(zip(workers, per, strict=True)):
            w.send("tokens", url=stub.url, prefix=f"sess{i}-", count=k, concurrency=32)
        for w in workers:
            w.recv()
        print(f"   {n} tokens (one user each) in {time.perf_counter() - t0:.1f} s")
        stub_fig = hold(workers, stub.pid, port_of(stub.url), n, "hello", settle_s)
        stats = stub.stats()
        stub_kib = report("server_stub ", stub_fig)
        print(
            f"   /stats at plateau: connections={stats['connections']} sessions_attached={stats['sessions_attached']}"
            f" agents_live={stats['agents_live']} tasks={stats['tasks']} open_fds={stats['open_fds']}"
        )
        close_all(workers)
        stub.stop()

        echo = EchoServer()
        echo_fig = hold(workers, echo.pid, echo.port, n, "echo", settle_s)
        echo_kib = report("aiohttp echo", echo_fig)
        close_all(workers)
    finally:
        for w in workers:
            w.close()
        stub.stop()
        if echo is not None:
            echo.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(
        f"   RSS per session: server_stub {stub_kib:.2f} KiB, bare aiohttp WebSocket {echo_kib:.2f} KiB,"
        f" ratio x{stub_kib / echo_kib:.2f} (ours on top of aiohttp: {stub_kib - echo_kib:.2f} KiB)"
    )
    held_all = stub_fig["opened"] == n
    verdict = "PASS" if stub_kib <= TARGET_KIB and held_all else "FAIL"
    print(
        f"   target {n} sessions at <= {TARGET_KIB:.0f} KiB each: {verdict}"
        f" ({stub_fig['opened']}/{n} held, {stub_kib:.2f} KiB per session)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
