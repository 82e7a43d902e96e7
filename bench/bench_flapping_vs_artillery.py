"""Load generator CPU per flapping cycle: our FlappingUser (a whole Locust process) beside Artillery 2's ws engine.

Both do the same cycle against the same backend (the reference server_stub on 127.0.0.1, ``--store memory
--rate-limit 0``, pinned to CPU 0; the load generator runs on CPU 1): open a WebSocket, agentws/1 ``hello``
for a new session, wait for the ``welcome``, hold the connection 50 ms, close it.

* **ours**: ``bench/_flapping.py``: a ``locust`` process of 30 FlappingUsers, 50 ms connected / 50 ms away,
  a new session each cycle; a cycle is a successful ``connect`` request.
* **Artillery**: ``node_modules/.bin/artillery run bench/artillery/flapping.yml``: one virtual user per
  cycle (Artillery's ws engine connects once per scenario), arriving at the rate our users just cycled at
  (so both make the same cycles per second); the tokens are fetched before the run from the backend's
  ``POST /auth/token`` (30 users, as ours, which fetch theirs once per run: the same in both runs, so it
  cancels out). A cycle is a completed virtual user (its ``welcome`` matched), from Artillery's JSON report.

The figure for each is the same: (CPU of a long run - CPU of a short run) / (cycles of the long run - cycles
of the short run), the CPU being the process's own user + system time (``os.wait4``: every thread, and any
child it waited for) once it exited, so start-up (Node loading Artillery, Python importing Locust) cancels
out. The backend's count of new sessions (``agents_created_total`` in ``/stats``) is printed beside each
run's cycles: every cycle counted made a session. Rounds alternate ours and Artillery's; medians and the
ratio Artillery / ours are printed. Target: ours at least 5x less CPU per cycle.

Artillery 2.0.34 comes from ``bench/artillery/package-lock.json``: ``npm ci`` there when ``node_modules`` is
missing or the lockfile changed (stamp in ``node_modules/.lock.sha256``), install scripts off and nothing
downloaded beyond npm's registry (no browser); at run time telemetry and update checks are off.

    .venv/bin/python bench/bench_flapping_vs_artillery.py [--quick] [--rounds 3]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _flapping

ARTILLERY_DIR = _flapping.ROOT / "bench" / "artillery"
SCENARIO = ARTILLERY_DIR / "flapping.yml"
STAMP = ARTILLERY_DIR / "node_modules" / ".lock.sha256"
TARGET_RATIO = 5.0
TOKEN_TTL_S = 3600
#: Nothing fetched or reported beyond npm's registry: no browser for Artillery's Playwright engine, no
#: telemetry, no update check.
QUIET_ENV = {
    "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1",
    "PUPPETEER_SKIP_DOWNLOAD": "1",
    "ARTILLERY_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "NO_UPDATE_NOTIFIER": "1",
    "npm_config_update_notifier": "false",
}


@dataclass
class Side:
    """One load generator's figures in a round."""

    per: _flapping.PerCycle
    sessions: tuple[int, int]  #: the backend's new sessions during the short and the long run


def node_missing() -> str:
    """'' when node and npm are installed, else what to install."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if not missing:
        return ""
    return f"{' and '.join(missing)} not found: install Node.js 20+ and npm (Debian: apt-get install nodejs npm)"


def ensure_artillery() -> None:
    """``npm ci`` in bench/artillery when node_modules is missing or was installed from another lockfile."""
    want = hashlib.sha256((ARTILLERY_DIR / "package-lock.json").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == want:
        return
    print("installing Artillery from bench/artillery/package-lock.json (npm ci) ...", flush=True)
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
        cwd=ARTILLERY_DIR, env={**os.environ, **QUIET_ENV}, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    STAMP.write_text(want + "\n")


def artillery_version() -> str:
    package = json.loads((ARTILLERY_DIR / "node_modules" / "artillery" / "package.json").read_text())
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return f"Artillery {package['version']} on Node {node}"


def artillery_run(ws_url: str, seconds: int, rate: int, tokens: list[str]) -> _flapping.Run:
    """One ``artillery run`` of ``seconds`` at ``rate`` virtual users (cycles) per second, on CPU 1."""
    overrides = {"config": {"phases": [{"duration": seconds, "arrivalRate": rate}], "variables": {"token": tokens}}}
    with tempfile.TemporaryDirectory(prefix="bench-artillery-") as tmp:
        report = Path(tmp) / "report.json"
        args = [
            str(ARTILLERY_DIR / "node_modules" / ".bin" / "artillery"), "run", "--quiet", "--target", ws_url,
            "--overrides", json.dumps(overrides), "--output", str(report), str(SCENARIO),
        ]  # fmt: skip
        proc = subprocess.Popen(
            args, cwd=ARTILLERY_DIR, env={**os.environ, **QUIET_ENV}, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, preexec_fn=_flapping.pin_to_load_cpu if _flapping.pinned() else None,
        )  # fmt: skip
        cpu_s = _flapping.wait_cpu_s(proc)
        if not report.exists():
            raise RuntimeError(f"Artillery wrote no report (exit code {proc.returncode})")
        counters = json.loads(report.read_text())["aggregate"]["counters"]
    failures = {k: v for k, v in counters.items() if k.startswith("errors.") or k == "vusers.failed" and v}
    return _flapping.Run(seconds, cpu_s, counters.get("vusers.completed", 0), failures)


def counted(stub, run) -> tuple[_flapping.Run, int]:
    """A run, and the new sessions the backend made meanwhile."""
    before = stub.stats()["agents_created_total"]
    result = run()
    return result, stub.stats()["agents_created_total"] - before


def measure(stub, short_s: int, long_s: int, run) -> Side:
    short, short_sessions = counted(stub, lambda: run(short_s))
    long, long_sessions = counted(stub, lambda: run(long_s))
    return Side(_flapping.PerCycle(short, long), (short_sessions, long_sessions))


def show(name: str, side: Side) -> None:
    per = side.per
    failed = per.short.failed + per.long.failed
    print(
        f"  {name:10s} {per.ms:7.3f} ms per cycle   cycles {per.short.cycles:,} / {per.long.cycles:,} "
        f"(backend sessions {side.sessions[0]:,} / {side.sessions[1]:,}), CPU {per.short.cpu_s:.2f} / "
        f"{per.long.cpu_s:.2f} s, {failed} failed",
        flush=True,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one round of 3 s and 10 s runs (~1 min)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, each both generators (default 3; --quick 1)")
    args = ap.parse_args()
    missing = node_missing()
    if missing:
        print(f"bench_flapping_vs_artillery: {missing}", file=sys.stderr)
        return 2
    ensure_artillery()
    rounds, (short_s, long_s) = (1, (3, 10)) if args.quick else (args.rounds, (_flapping.SHORT_S, _flapping.LONG_S))
    print(
        f"CPU per flapping cycle of the load generator ({long_s} s run - {short_s} s run) / extra cycles; "
        f"{_flapping.USERS} FlappingUsers, {_flapping.CONNECTED_MS:.0f} ms connected / {_flapping.AWAY_MS:.0f} ms "
        f"away, new session each cycle, and {artillery_version()} at the same cycle rate"
    )
    started = time.monotonic()
    ours: list[float] = []
    theirs: list[float] = []
    with _flapping.reference_backend() as stub:
        tokens = [stub.token(f"artillery-{i}", TOKEN_TTL_S) for i in range(_flapping.USERS)]
        rate = 0
        for i in range(rounds):
            print(f"round {i + 1} of {rounds}")
            side = measure(stub, short_s, long_s, functools.partial(_flapping.locust_run, stub.url))
            show("ours", side)
            ours.append(side.per.ms)
            # Artillery arrives at our users' cycle rate of the first round (fixed after it: rounds compare)
            rate = rate or round(side.per.extra_cycles / (long_s - short_s))
            artillery = functools.partial(artillery_run, stub.ws_url, rate=rate, tokens=tokens)
            side = measure(stub, short_s, long_s, artillery)
            show("Artillery", side)
            theirs.append(side.per.ms)
    ours_ms, theirs_ms = statistics.median(ours), statistics.median(theirs)
    ratio = theirs_ms / ours_ms
    print(f"median of {rounds} round(s), at {rate} cycles/s:")
    print(f"  ours (Locust FlappingUser)   {ours_ms:7.3f} ms CPU per cycle")
    print(f"  Artillery 2 ws engine        {theirs_ms:7.3f} ms CPU per cycle")
    print(f"  ratio Artillery / ours       x{ratio:.2f}   (target >= x{TARGET_RATIO:.0f})")
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    print(f"{verdict}: ours takes x{ratio:.2f} less CPU per cycle; took {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
