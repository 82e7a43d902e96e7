"""Telemetry on the master: ``samples.csv`` and ``server_stats.csv``, one greenlet.

Every ``--sample-interval`` it writes one ``samples.csv`` row per process:

* ``backend``: through psutil when its pid is known (embedded, or ``--server-pid``),
  with ESTABLISHED and CLOSE_WAIT sockets on its port; otherwise from its
  ``/metrics`` (``process_resident_memory_bytes``, ``process_open_fds``,
  ``process_cpu_seconds_total`` -> cpu_percent), socket columns blank.
* ``local`` or ``master``: this process, through psutil.
* ``worker:<node id>``: each worker, from Locust's heartbeat (cpu, rss, every
  second) and the harness's part of its stats report (pid, fds, threads).

and one ``server_stats.csv`` row from ``GET /stats``: ``ts``, every field of the
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

from agentws.events import SAMPLE_COLUMNS
from users.options import Settings
from users.transport import shared_ssl_context

from .rundir import CsvSink

logger = logging.getLogger(__name__)

#: ``/stats`` fields in PROTOCOL.md order: the columns when the first poll fails.
STATS_FIELDS = (
    "pid epoch uptime_s connections sessions_attached sessions_detached agents_live agents_created_total "
    "agents_destroyed_total max_agents_per_session duplicate_agents_total outbox_frames outbox_bytes "
    "zombies_reaped_total takeovers_total rate_limited_total token_expired_closes_total refreshes_total "
    "rss_bytes open_fds threads tasks"
).split()
REPORT_KEY = "harness_proc"  #: key of the worker's process facts in its stats report


def http_base(host: str) -> str:
    """``ws://h:p/x`` or ``http://h:p/x`` -> ``http://h:p`` (the backend's HTTP endpoints)."""
    parts = urlsplit(host)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme or "http")
    return f"{scheme}://{parts.netloc}"


def own_process_facts() -> dict:
    """This process's pid, fds and threads (sent by workers in their stats reports)."""
    p = psutil.Process()
    return {"pid": p.pid, "num_fds": p.num_fds(), "num_threads": p.num_threads()}


def parse_metrics(text: str) -> dict[str, float]:
    """The unlabelled samples of a Prometheus text exposition."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            try:
                values[name] = float(value.split()[0])
            except (ValueError, IndexError):
                continue
    return values


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
        self._greenlet: gevent.Greenlet | None = None
        environment.events.worker_report.add_listener(self._on_worker_report)

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._loop)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=5)

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
        self.samples.write(backend)
        locust_rows = list(self._locust_rows(ts))
        for row in locust_rows:
            self.samples.write(row)
        stats, error = self._poll_stats(ts, host) if host else ({}, "")
        self.latest = {
            "ts": ts,
            "backend": dict(zip(SAMPLE_COLUMNS, backend, strict=True)),
            "locust": [dict(zip(SAMPLE_COLUMNS, row, strict=True)) for row in locust_rows],
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

    def _psutil_row(self, ts: float, source: str, pid: int, port: int | None = None) -> tuple:
        proc = self._proc(pid)
        with proc.oneshot():
            rss = proc.memory_info().rss
            cpu = proc.cpu_percent()
            fds = proc.num_fds()
            threads = proc.num_threads()
        est = cw = ""
        if port is not None:
            conns = [c for c in proc.net_connections(kind="tcp") if c.laddr and c.laddr.port == port]
            est = sum(c.status == psutil.CONN_ESTABLISHED for c in conns)
            cw = sum(c.status == psutil.CONN_CLOSE_WAIT for c in conns)
        return (ts, source, pid, rss, round(cpu, 1), fds, threads, est, cw)

    def _backend_row(self, ts: float, host: str) -> tuple:
        pid = self.backend_pid()
        try:
            if pid:
                row = self._psutil_row(ts, "backend", pid, urlsplit(http_base(host)).port if host else None)
            elif host:
                row = self._metrics_row(ts, host)
            else:
                return (ts, "backend", "", "", "", "", "", "", "")
        except (psutil.Error, OSError, ValueError, http.client.HTTPException) as e:  # a non-HTTP answer too
            self._procs.pop(pid, None) if pid else None
            self._backend_state(False, ts, pid, e)
            return (ts, "backend", pid or "", "", "", "", "", "", "")
        self._backend_state(True, ts, pid, None)
        return row

    def _metrics_row(self, ts: float, host: str) -> tuple:
        with self._get(f"{http_base(host)}/metrics") as r:
            m = parse_metrics(r.read().decode())
        cpu = ""
        if "process_cpu_seconds_total" in m:
            now, used = time.monotonic(), m["process_cpu_seconds_total"]
            if self._cpu_prev is not None and now > self._cpu_prev[0]:
                cpu = round(100.0 * (used - self._cpu_prev[1]) / (now - self._cpu_prev[0]), 1)
            self._cpu_prev = (now, used)

        def get(name):
            return int(m[name]) if name in m else ""

        return (ts, "backend", "", get("process_resident_memory_bytes"), cpu, get("process_open_fds"), "", "", "")

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
        yield self._psutil_row(ts, own, os.getpid())
        if clients is None:
            return
        for node in list(clients.all):
            facts = self._worker_facts.get(node.id, {})
            yield (
                ts,
                f"worker:{node.id}",
                facts.get("pid", ""),
                node.memory_usage or "",
                round(node.cpu_usage, 1),
                facts.get("num_fds", ""),
                facts.get("num_threads", ""),
                "",
                "",
            )

    def _poll_stats(self, ts: float, host: str) -> tuple[dict, str]:
        """One ``server_stats.csv`` row; returns the answer (``{}`` on failure) and the error text."""
        try:
            with self._get(f"{http_base(host)}/stats") as r:
                stats = json.load(r)
            error = ""
        except Exception as e:  # any failure is a row, never a crash
            stats, error = {}, f"{type(e).__name__}: {e}"[:200]
        if self.server_stats.columns is None:
            fields = list(stats) if stats else STATS_FIELDS
            self.server_stats.header(["ts", *fields, "error"])
        cols = self.server_stats.columns
        self.server_stats.write([ts, *(_cell(stats.get(c, "")) for c in cols[1:-1]), error])
        ok = not error
        if ok != self._stats_ok:
            if self._stats_ok is not None or not ok:
                self.notes.append({"ts": ts, "event": "stats ok" if ok else "stats failing", "error": error})
            self._stats_ok = ok
        return stats, error


def _cell(value):
    return json.dumps(value) if isinstance(value, dict | list) else value
