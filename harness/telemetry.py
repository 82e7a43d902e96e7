"""Telemetry on the master: ``samples.csv`` and ``server_stats.csv``, one greenlet.

Every ``--sample-interval`` it writes one ``samples.csv`` row per process:

* ``backend``: through psutil when its pid is known (embedded, or ``--server-pid``),
  with ESTABLISHED and CLOSE_WAIT sockets on its port; otherwise from its
  ``/metrics`` (``process_resident_memory_bytes``, ``process_open_fds``,
  ``process_cpu_seconds_total`` -> cpu_percent), socket columns blank.
* ``local`` or ``master``: this process, through psutil.
* ``worker:<node id>``: each worker, from Locust's heartbeat (cpu, rss, every
  second) and the harness's part of its stats report (pid, fds, threads, and its
  loop lag once per report).
* ``machine``: the machine the master runs on: CPU % of all cores and the run
  queue (runnable tasks; more than the cores means something waits for a CPU).

Every Locust process row carries ``loop_lag_ms``: the worst lateness of that
process's event loop since its previous row (:mod:`harness.lag`). A backend whose
``/metrics`` exposes its runtime's heap gets ``heap_bytes`` too (:data:`HEAP_METRICS`).

and one ``server_stats.csv`` row from ``GET /stats`` (or :attr:`Telemetry.stats_source`: an MQTT
broker's ``$SYS`` topics): ``ts``, every field of the
first answer, and ``error`` (empty, or why that poll failed: the other columns
are then blank). Nothing here may stop sampling: a dead backend is a row of
blanks with its pid, noted once in :attr:`Telemetry.notes`, and sampling goes on.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import time
import urllib.request
from collections.abc import Callable
from urllib.parse import urlsplit

import gevent
import psutil

from contract.events import SAMPLE_COLUMNS
from users.options import Settings
from users.transport import shared_ssl_context

from . import lag
from .rundir import CsvSink

logger = logging.getLogger(__name__)

#: ``/stats`` fields in PROTOCOL.md order: the columns when the first poll fails.
STATS_FIELDS = (
    "pid epoch uptime_s connections sessions_attached sessions_detached agents_live agents_created_total "
    "agents_destroyed_total max_agents_per_session duplicate_agents_total outbox_frames outbox_bytes "
    "zombies_reaped_total takeovers_total rate_limited_total token_expired_closes_total refreshes_total "
    "rss_bytes open_fds threads tasks"
).split()
HEAP_ASKS = 3  #: /metrics answers without a heap series before telemetry stops asking for one
REPORT_KEY = "harness_proc"  #: key of the worker's process facts in its stats report
#: Prometheus series of a runtime's heap in use, by runtime (their clients' conventions), in order of preference.
#: Labelled series are summed over the label values given (the JVM's heap areas, not its non-heap ones).
HEAP_METRICS = (
    ("nodejs_heap_size_used_bytes", {}),
    ("jvm_memory_used_bytes", {"area": "heap"}),
    ("go_memstats_heap_inuse_bytes", {}),
    ("dotnet_total_memory_bytes", {}),
    ("python_gc_heap_bytes", {}),
)


def http_base(host: str) -> str:
    """``ws://h:p/x`` or ``http://h:p/x`` -> ``http://h:p`` (the backend's HTTP endpoints)."""
    parts = urlsplit(host)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme or "http")
    return f"{scheme}://{parts.netloc}"


def own_process_facts() -> dict:
    """This process's pid, fds, threads and loop lag since its last report (sent by workers in their stats reports)."""
    p = psutil.Process()
    return {"pid": p.pid, "num_fds": p.num_fds(), "num_threads": p.num_threads(), **lag.monitor.take()}


def machine_facts() -> dict:
    """CPU % of all cores since the last call, and the run queue (``procs_running`` of /proc/stat, Linux)."""
    queue = ""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                if line.startswith("procs_running"):
                    queue = int(line.split()[1]) - 1  # not counting the process that reads it
                    break
    except OSError:
        pass
    return {"cpu_percent": psutil.cpu_percent(), "run_queue": queue}


def parse_metrics(text: str) -> dict[str, float]:
    """The unlabelled samples of a Prometheus text exposition."""
    return {name: value for name, labels, value in metric_samples(text) if not labels}


def metric_samples(text: str):
    """``(name, labels, value)`` for every sample line of a Prometheus text exposition (bad lines skipped)."""
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, brace, rest = line.partition("{")
        labels = {}
        if brace:
            body, _, rest = rest.partition("}")
            for pair in body.split(","):
                key, eq, value = pair.partition("=")
                if eq:
                    labels[key.strip()] = value.strip().strip('"')
        else:
            name, _, rest = line.partition(" ")
        try:
            yield name.strip(), labels, float(rest.split()[0])
        except (ValueError, IndexError):
            continue


def heap_bytes(text: str) -> int | None:
    """The runtime heap in use, from a /metrics exposition: the first of :data:`HEAP_METRICS` present."""
    samples = list(metric_samples(text))
    for wanted, match in HEAP_METRICS:
        values = [v for name, labels, v in samples if name == wanted and match.items() <= labels.items()]
        if values:
            return int(sum(values))
    return None


class Telemetry:
    """The sampling greenlet. ``backend_pid`` returns the backend's current pid (or None: remote)."""

    def __init__(
        self,
        environment,
        samples: CsvSink,
        server_stats: CsvSink,
        interval: float,
        backend_pid: Callable[[], int | None],
    ) -> None:
        self.environment = environment
        self.samples = samples
        self.server_stats = server_stats
        self.interval = interval
        self.backend_pid = backend_pid
        self.notes: list[dict] = []  #: backend gone / back, polls failing / recovered: meta.json's record
        #: The last round, for live views: ``ts``, ``backend`` and ``locust`` (sample rows as dicts), ``stats``
        #: (the last ``/stats`` answer, ``{}`` when it failed) and ``stats_error``.
        self.latest: dict = {}
        #: Called with :attr:`latest` after every round (the web UI's Resilience tab keeps its history this way).
        self.observers: list[Callable[[dict], None]] = []
        self._procs: dict[int, psutil.Process] = {}
        self._cpu_prev: tuple[float, float] | None = None  # (wall, cpu seconds) from /metrics
        self._backend_up: bool | None = None
        self._stats_ok: bool | None = None
        self._worker_facts: dict[str, dict] = {}
        self._heap_wanted = True
        self._heap_asks = 0
        self._greenlet: gevent.Greenlet | None = None
        #: Where the backend's own figures come from when it has no ``GET /stats`` (an MQTT broker's $SYS
        #: topics: harness/mqtt_sys.py): a call answering a dict or raising with the reason.
        self.stats_source: Callable[[], dict] | None = None
        self.stats_fields: tuple[str, ...] = tuple(STATS_FIELDS)  #: the columns when the first poll fails
        environment.events.worker_report.add_listener(self._on_worker_report)

    def start(self) -> None:
        lag.monitor.start()
        machine_facts()  # the first CPU reading only sets psutil's baseline
        self._greenlet = gevent.spawn(self._loop)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=5)
        lag.monitor.stop()

    def _on_worker_report(self, client_id: str, data: dict, **_) -> None:
        if REPORT_KEY in data:
            self._worker_facts[client_id] = data[REPORT_KEY]

    def _loop(self) -> None:
        next_at = time.monotonic()
        while True:
            try:
                self.sample()
            except Exception:  # sampling must go on whatever one round hits
                logger.exception("telemetry sample failed")
            next_at += self.interval
            gevent.sleep(max(0.0, next_at - time.monotonic()))

    # -- one round ------------------------------------------------------------------
    def sample(self) -> None:
        ts = time.time()
        host = self.environment.host or ""
        backend = self._backend_row(ts, host)
        locust_rows = list(self._locust_rows(ts))
        machine = {"ts": ts, "source": "machine", **machine_facts()}
        for row in (backend, *locust_rows, machine):
            self.samples.write([row.get(c, "") for c in SAMPLE_COLUMNS])
        stats, error = self._poll_stats(ts, host) if host else ({}, "")
        self.latest = {
            "ts": ts,
            "backend": _full(backend),
            "locust": [_full(row) for row in locust_rows],
            "machine": _full(machine),
            "stats": stats,
            "stats_error": error,
        }
        for observe in self.observers:
            try:
                observe(self.latest)
            except Exception:  # a live view's bug must not stop the sampling
                logger.exception("telemetry observer %r failed", observe)

    def _proc(self, pid: int) -> psutil.Process:
        proc = self._procs.get(pid)
        if proc is None:
            proc = self._procs[pid] = psutil.Process(pid)
            proc.cpu_percent()  # the first call only sets the baseline
        return proc

    def _psutil_row(self, ts: float, source: str, pid: int, port: int | None = None) -> dict:
        proc = self._proc(pid)
        with proc.oneshot():
            row = {
                "ts": ts,
                "source": source,
                "pid": pid,
                "rss_bytes": proc.memory_info().rss,
                "cpu_percent": round(proc.cpu_percent(), 1),
                "num_fds": proc.num_fds(),
                "num_threads": proc.num_threads(),
            }
        if port is not None:
            conns = [c for c in proc.net_connections(kind="tcp") if c.laddr and c.laddr.port == port]
            row["tcp_established"] = sum(c.status == psutil.CONN_ESTABLISHED for c in conns)
            row["tcp_close_wait"] = sum(c.status == psutil.CONN_CLOSE_WAIT for c in conns)
        return row

    def _backend_row(self, ts: float, host: str) -> dict:
        pid = self.backend_pid()
        try:
            if pid:
                row = self._psutil_row(ts, "backend", pid, urlsplit(http_base(host)).port if host else None)
                if host and self._heap_wanted:
                    row["heap_bytes"] = self._heap(host)
            elif host:
                row = self._metrics_row(ts, host)
            else:
                return {"ts": ts, "source": "backend"}
        except (psutil.Error, OSError, ValueError, http.client.HTTPException) as e:  # a non-HTTP answer too
            self._procs.pop(pid, None) if pid else None
            self._backend_state(False, ts, pid, e)
            return {"ts": ts, "source": "backend", "pid": pid or ""}
        self._backend_state(True, ts, pid, None)
        return row

    def _metrics(self, host: str) -> str:
        with self._get(f"{http_base(host)}/metrics") as r:
            return r.read().decode()

    def _heap(self, host: str):
        """The backend's heap in use from its /metrics (blank when it has none; asked no more after
        :data:`HEAP_ASKS` answers without one, or a failed request for the page)."""
        try:
            heap = heap_bytes(self._metrics(host))
        except (OSError, ValueError, http.client.HTTPException):
            heap = None
        self._heap_asks = 0 if heap is not None else self._heap_asks + 1
        if self._heap_asks >= HEAP_ASKS:
            self._heap_wanted = False
        return "" if heap is None else heap

    def _metrics_row(self, ts: float, host: str) -> dict:
        text = self._metrics(host)
        m = parse_metrics(text)
        row = {"ts": ts, "source": "backend"}
        if "process_cpu_seconds_total" in m:
            now, used = time.monotonic(), m["process_cpu_seconds_total"]
            if self._cpu_prev is not None and now > self._cpu_prev[0]:
                row["cpu_percent"] = round(100.0 * (used - self._cpu_prev[1]) / (now - self._cpu_prev[0]), 1)
            self._cpu_prev = (now, used)
        for column, name in (("rss_bytes", "process_resident_memory_bytes"), ("num_fds", "process_open_fds")):
            if name in m:
                row[column] = int(m[name])
        heap = heap_bytes(text)
        if heap is not None:
            row["heap_bytes"] = heap
        return row

    def _get(self, url: str):
        """GET with the users' TLS settings: an https backend the users trust (``--ca-file``) is
        trusted here too, through the process's one shared context rather than a new one per poll."""
        context = None
        if url.startswith("https://"):
            settings = Settings.from_environment(self.environment)
            context = shared_ssl_context(settings.tls_verify, settings.ca_file)
        return urllib.request.urlopen(url, timeout=min(2.0, self.interval), context=context)

    def _backend_state(self, up: bool, ts: float, pid, error) -> None:
        if up != self._backend_up:
            if self._backend_up is not None or not up:
                self.notes.append({"ts": ts, "event": "backend up" if up else "backend gone", "pid": pid})
                log = logger.info if up else logger.warning
                log("backend %s (pid %s)%s", "is back" if up else "is gone", pid, f": {error}" if error else "")
            self._backend_up = up

    def _locust_rows(self, ts: float):
        runner = self.environment.runner
        clients = getattr(runner, "clients", None)
        own = "master" if clients is not None else "local"
        yield self._psutil_row(ts, own, os.getpid()) | lag.monitor.take()
        if clients is None:
            return
        for node in list(clients.all):
            facts = self._worker_facts.get(node.id, {})
            yield {
                "ts": ts,
                "source": f"worker:{node.id}",
                "pid": facts.get("pid", ""),
                "rss_bytes": node.memory_usage or "",
                "cpu_percent": round(node.cpu_usage, 1),
                "num_fds": facts.get("num_fds", ""),
                "num_threads": facts.get("num_threads", ""),
                # Once per report: the lag it carries covers the time since the worker's previous report.
                "loop_lag_ms": facts.pop("loop_lag_ms", ""),
                "loop_late_from": facts.pop("loop_late_from", ""),
                "loop_late_until": facts.pop("loop_late_until", ""),
            }

    def _poll_stats(self, ts: float, host: str) -> tuple[dict, str]:
        """One ``server_stats.csv`` row; returns the answer (``{}`` on failure) and the error text."""
        try:
            if self.stats_source is not None:
                stats = self.stats_source()
            else:
                with self._get(f"{http_base(host)}/stats") as r:
                    stats = json.load(r)
            error = ""
        except Exception as e:  # any failure is a row, never a crash
            stats, error = {}, f"{type(e).__name__}: {e}"[:200]
        if self.server_stats.columns is None:
            fields = list(stats) if stats else list(self.stats_fields)
            self.server_stats.header(["ts", *fields, "error"])
        cols = self.server_stats.columns
        self.server_stats.write([ts, *(_cell(stats.get(c, "")) for c in cols[1:-1]), error])
        ok = not error
        if ok != self._stats_ok:
            if self._stats_ok is not None or not ok:
                self.notes.append({"ts": ts, "event": "stats ok" if ok else "stats failing", "error": error})
            self._stats_ok = ok
        return stats, error


def _full(row: dict) -> dict:
    """A sample row with every column (blank where not measured), for live views."""
    return {c: row.get(c, "") for c in SAMPLE_COLUMNS}


def _cell(value):
    return json.dumps(value) if isinstance(value, dict | list) else value
