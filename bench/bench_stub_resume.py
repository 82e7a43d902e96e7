"""Resume latency: 1,000 detached sessions, each with 20 frames in its outbox to replay.

Setup: 1,000 new sessions (one user and token each); each sends one ``msg``
turn and disconnects right after its ``accepted``. The backend runs with
``--chunks-per-reply 18``, so every turn puts 20 sequenced frames in the
session's outbox (accepted + 18 chunks + done), generated while the session is
detached; nothing is acked. We wait until /stats shows all 20,000 frames.

Then every session is resumed: connect, then ``hello{session, last_seq: 0}``,
timed from sending the ``hello`` to receiving ``replayed`` (so: token verify,
the per-session lock, welcome, 20 replayed frames), then close, which detaches
it again. The resumes run with 1 and with 50 in flight (the same sessions, each
replaying the same 20 frames again). Printed per concurrency: n, p50, p95, p99
and max in milliseconds, and the backend's CPU per resume (connect and close
included). Backend on CPU 0, client on CPU 1.

    .venv/bin/python bench/bench_stub_resume.py [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time

from _common import WorkerProc, add_backend_arguments, banner, cpu_s, pct, pin_process, port_of, start_stub

FRAMES_PER_SESSION = 20  # accepted + chunks + done


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smaller run (< 20 s): 300 sessions")
    ap.add_argument("--n", type=int, default=None, help="detached sessions (default 1000; quick 300)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 50], help="resumes in flight, one run each")
    add_backend_arguments(ap)
    args = ap.parse_args()
    n = args.n or (300 if args.quick else 1000)

    banner(
        f"bench_stub_resume: {n} detached sessions x {FRAMES_PER_SESSION} outbox frames, resumes with"
        f" {' and '.join(map(str, args.concurrency))} in flight"
    )
    stub, tmp = start_stub(
        "--chunks-per-reply",
        str(FRAMES_PER_SESSION - 2),
        "--chunk-delay-ms",
        "1",
        "--hb-interval-ms",
        "3600000",
        "--token-ttl",
        "3600",
        "--resume-window",
        "600",
        *args.stub_arg,
        store=args.store,
    )
    worker = WorkerProc(cpu=1)
    results = []
    try:
        pin_process(stub.pid, 0)
        port = port_of(stub.url)
        worker.call("tokens", url=stub.url, prefix="res-", count=n)
        made = worker.call("sessions", host="127.0.0.1", port=port, n=n, concurrency=50, msg=True)
        if made["failed"]:
            print(f"   {made['failed']} sessions failed: {made['errors']}")
        deadline = time.monotonic() + 60
        want = made["sessions"] * FRAMES_PER_SESSION
        while True:
            st = stub.stats()
            if (st["outbox_frames"] >= want and st["sessions_attached"] == 0) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        print(
            f"   setup: {made['sessions']} sessions in {made['secs']:.1f} s; detached={st['sessions_detached']}"
            f" outbox_frames={st['outbox_frames']} outbox_bytes={st['outbox_bytes']}"
        )
        time.sleep(1.2)  # let the SQLite write-behind flush the finished turns first
        for conc in args.concurrency:
            c0 = cpu_s(stub.pid)
            ans = worker.call("resume", host="127.0.0.1", port=port, concurrency=conc)
            c1 = cpu_s(stub.pid)
            lat = sorted(ans["latencies"])
            ms = [1000 * x for x in lat]
            k = len(lat)
            short = sum(1 for f in ans["replayed"] if f != FRAMES_PER_SESSION)
            results.append((conc, ms))
            print(
                f"   {conc:3d} in flight: n={k}  p50 {pct(ms, 50):6.2f} ms  p95 {pct(ms, 95):6.2f} ms"
                f"  p99 {pct(ms, 99):6.2f} ms  max {ms[-1] if ms else float('nan'):6.2f} ms"
                f"  | {k / ans['secs']:5.0f} resumes/s, backend CPU {1e6 * (c1 - c0) / max(k, 1):4.0f} µs/resume"
                + (f"  | not resumed {ans['not_resumed']}" if ans["not_resumed"] else "")
                + (f"  | {short} replays not {FRAMES_PER_SESSION} frames" if short else "")
                + (f"  | failed {ans['failed']}: {ans['errors'][:2]}" if ans["failed"] else "")
            )
            time.sleep(1.2)
    finally:
        worker.close()
        stub.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    for conc, ms in results:
        print(
            f"   p99 resume time ({n} sessions x {FRAMES_PER_SESSION} frames, {conc} in flight): {pct(ms, 99):.2f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
