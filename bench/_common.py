"""Shared plumbing of the benchmarks: worker processes, the echo baseline, pinning, figures, and timing one
child process (wall, CPU, peak RSS) as the analysis benchmarks do."""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from server_stub.process import StubProcess  # noqa: E402

PY = sys.executable
GiB = 1 << 30
ANALYSIS_CODES = {0: "pass", 1: "fail", 3: "inconclusive"}  #: the analysis's exit codes; anything else crashed
OUTPUTS = ("verdicts.json", "report.html")
POLL_S = 0.05


class WorkerProc:
    """A ``bench/wsload.py worker`` child: one JSON command per line in, one JSON answer per line out."""

    def __init__(self, cpu: int | None = None) -> None:
        args = [PY, str(BENCH / "wsload.py"), "worker"]
        if cpu is not None:
            args += ["--cpu", str(cpu)]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, text=True)

    def send(self, cmd: str, **kw) -> None:
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}) + "\n")
        self.proc.stdin.flush()

    def recv(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"wsload worker {self.proc.pid} exited ({self.proc.poll()})")
        answer = json.loads(line)
        if not answer.get("ok"):
            raise RuntimeError(f"wsload worker: {answer.get('error')}")
        return answer

    def call(self, cmd: str, **kw) -> dict:
        self.send(cmd, **kw)
        return self.recv()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(10)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


class EchoServer:
    """``bench/echo_server.py`` as a child: the bare-aiohttp baseline."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [PY, str(BENCH / "echo_server.py")], stdout=subprocess.PIPE, cwd=ROOT, text=True, start_new_session=True
        )
        self.info = json.loads(self.proc.stdout.readline())
        self.pid = int(self.info["pid"])
        self.port = int(self.info["url"].rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def add_backend_arguments(ap) -> None:
    """The options every server_stub benchmark takes for the backend it starts."""
    ap.add_argument("--store", default=None, help="the backend's --store (default: a fresh SQLite file)")
    ap.add_argument(
        "--stub-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more command-line argument for the backend (repeatable), e.g. --stub-arg=--rate-limit=0",
    )


def start_stub(*args: str, store: str | None = None) -> tuple[StubProcess, Path]:
    """A backend on ``store``; by default a fresh SQLite file (the default store kind) in a temp dir."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-stub-"))
    stub = StubProcess("--store", store or f"sqlite:{tmp}/sessions.db", *args, log_path=tmp / "stub.log")
    stub.start()
    return stub, tmp


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def pin_process(pid: int, cpu: int) -> None:
    """Pin every thread of a process to one CPU (``taskset -a -c``)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), {cpu})
        except ProcessLookupError:
            pass


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def cpu_s(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def pct(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def banner(title: str) -> None:
    cpus = os.cpu_count()
    print(f"== {title}")
    print(
        f"   {time.strftime('%Y-%m-%d %H:%M')}  python {platform.python_version()}  {cpus} cpus  "
        f"{platform.machine()}  load avg {os.getloadavg()[0]:.2f}"
    )


# -- one child process, measured (the analysis benchmarks) ------------------------------------------
@dataclass
class Measured:
    code: int
    wall_s: float
    tree_peak: int  #: bytes: the sum over the process tree, sampled
    maxrss: int  #: bytes: the kernel's peak of the largest single process
    stderr: str
    cpu_s: float = 0.0  #: user + system CPU seconds of the child and the children it waited for (wait4's rusage)

    @property
    def peak(self) -> int:
        return max(self.tree_peak, self.maxrss)


def tree_rss(proc: psutil.Process) -> int:
    """RSS of a process and all its descendants (those that vanish meanwhile count 0)."""
    total = 0
    try:
        members = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in members:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def measure(args: list[str], timeout: float) -> Measured:
    """Run one child to its end: wall time, sampled tree RSS peak, kernel ru_maxrss."""
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        result: dict = {}

        def reap() -> None:  # wait4 rather than Popen.wait: it returns this child's rusage
            _, status, usage = os.wait4(proc.pid, 0)
            result.update(end=time.perf_counter(), status=status, usage=usage)

        waiter = threading.Thread(target=reap, daemon=True)
        waiter.start()
        watched, peak = psutil.Process(proc.pid), 0
        while waiter.is_alive():
            peak = max(peak, tree_rss(watched))
            if time.perf_counter() - started > timeout:
                proc.kill()
            waiter.join(POLL_S)
        proc.returncode = os.waitstatus_to_exitcode(result["status"])  # reaped by wait4: tell Popen
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    usage = result["usage"]
    cpu = usage.ru_utime + usage.ru_stime
    return Measured(proc.returncode, result["end"] - started, peak, usage.ru_maxrss * 1024, stderr, cpu)


def has_main(analyser: str) -> bool:
    """Whether ``python -m ANALYSER`` can run, as the child sees it (cwd = repo root, same environment)."""
    probe = f"import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({analyser + '.__main__'!r}) else 1)"
    return subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True).returncode == 0


def gib(n: int) -> str:
    return f"{n / GiB:.2f} GiB"


def run_analysis(run_dir: Path, analyser: str, timeout: float) -> Measured:
    for name in OUTPUTS:
        (run_dir / name).unlink(missing_ok=True)
    return measure([sys.executable, "-m", analyser, str(run_dir)], timeout)


def check_outputs(run_dir: Path, m: Measured) -> str:
    """'' when the run produced what it must, else why not."""
    if m.code not in ANALYSIS_CODES:
        return f"exit code {m.code}"
    missing = [name for name in OUTPUTS if not (run_dir / name).is_file()]
    if missing:
        return f"exit code {m.code} but no {' / '.join(missing)}"
    try:
        json.loads((run_dir / "verdicts.json").read_text())
    except ValueError as e:
        return f"verdicts.json is not JSON: {e}"
    return ""


def verdict_summary(run_dir: Path) -> str:
    """``name: status`` of each verdict, whatever the exact shape (a list, or a dict holding one)."""
    data = json.loads((run_dir / "verdicts.json").read_text())
    items = data.get("verdicts", data) if isinstance(data, dict) else data
    if isinstance(items, dict):
        items = [{"name": k, **v} if isinstance(v, dict) else {"name": k, "status": v} for k, v in items.items()]
    return ", ".join(f"{v.get('name', '?')}: {v.get('status', '?')}" for v in items if isinstance(v, dict))
