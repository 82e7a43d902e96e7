"""The web UI's Resilience tab: the backend's side of the run, live, and the verdicts when a test stops.

Locust's React UI has one extension point for a tab: ``template_args["extended_tabs"]`` and
``["extended_tables"]`` name the tab and its columns, and its rows travel in the ``extended_stats``
of each ``/stats/requests`` answer, which the UI polls every 2 s while a test runs. So:

* :class:`harness.live.Live` keeps a few figures of what the master sees: the last telemetry round
  (backend RSS, ``/stats``), events/s and a reservoir of reconnect latencies. The verdict rows come
  from :class:`harness.live.SoFar`: the analysis itself, run every few seconds while a test runs on
  the run directory as recorded so far (``python -m analysis RUN_DIR --so-far FILE``, a child
  process), each verdict marked *so far*. The tab has no copy of the verdicts' rules.
* When a test stops in the web UI (not at quit), :class:`Analysis` waits for the workers' last
  events and ``--drain`` seconds of telemetry, flushes the CSV files and runs ``python -m analysis``
  on the run directory. The directory is still open (``meta.json`` says ``complete: false``), so
  harness-health comes out inconclusive. The verdict rows then show the final verdicts.
* Locust stops polling ``/stats/requests`` once a test has stopped, so the page also gets a small
  script (``resilience.js``) that polls ``/resilience/data`` on the Resilience tab and shows the
  analysis: its state, the final verdict table and a link to ``report.html``.

Routes, under ``--web-base-path``: ``/resilience/data`` (JSON: the rows and the analysis),
``/resilience/report`` (the run's ``report.html``), ``/resilience/tab.js``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import gevent
from flask import Blueprint, jsonify, request, send_file, send_from_directory
from locust.runners import STATE_RUNNING, STATE_SPAWNING

from analysis import thresholds as analysis_thresholds

from . import verdicts
from .live import MIB, WAITING, Live, SoFar, as_number, show
from .recorder import MasterRecorder

logger = logging.getLogger(__name__)

TAB = "resilience"
COLUMNS = (
    ("figure", "Figure"),  # not "name": Locust sorts an extended table by its "name" column
    ("value", "Value"),
    ("verdict", "Verdict"),
    ("threshold", "Threshold"),
    ("n", "n"),
    ("note", "From / why"),
)
SCRIPT = Path(__file__).with_name("resilience.js")
REPORT = "report.html"
VERDICTS = "verdicts.json"
ROWS_MAX_AGE_S = 1.0  #: the rows are rebuilt at most this often, however many browsers poll
FINAL_BATCH_WAIT_S = 10.0  #: how long a stop waits for the workers' last events before the drain


class Analysis:
    """The analysis of a test stopped in the web UI, in a greenlet: last events, drain, ``python -m analysis``."""

    def __init__(self, run) -> None:
        self.run = run
        self._greenlet: gevent.Greenlet | None = None
        self.reset()

    def reset(self) -> None:
        """Back to waiting for a test to stop (a new test started: what ran before is of another moment)."""
        self.cancel("a new test started")
        self._set("idle", "The analysis runs when the test stops: final verdicts and report.html will appear here.")
        self.result = {}

    def start(self) -> None:
        self.reset()
        self._greenlet = gevent.spawn(self._run)

    def cancel(self, why: str) -> None:
        if self._greenlet is not None and not self._greenlet.dead:
            self._greenlet.kill(block=True, timeout=5)  # subprocess.run kills the analyser on the way out
            self._set("cancelled", f"cancelled: {why}")
        self._greenlet = None

    def _set(self, state: str, message: str) -> None:
        self.state, self.message = state, message

    def _run(self) -> None:
        try:
            self._analyse()
        except Exception as e:  # shown in the tab: the run itself goes on
            logger.exception("the web UI's analysis failed")
            self._set("failed", f"the analysis could not run: {type(e).__name__}: {e}")

    def _analyse(self) -> None:
        run = self.run
        started = time.time()
        self._set("waiting", "waiting for the workers' last events")
        self._wait_for_workers()
        drain = float(run.options.drain or 0)
        if drain > 0:
            self._set("draining", f"--drain: {drain:g} s of telemetry with no load, then the analysis")
            gevent.sleep(drain)
        for sink in (run.events, run.samples, run.server_stats):
            sink.flush()
        self._set("running", f"python -m {run.options.analyser} {run.dir.path}")
        code, output = verdicts.analyse(run.dir.path, run.options.analyser, verdicts.analyser_args(run.options))
        document = _read_verdicts(run.dir.file(VERDICTS), newer_than=started)
        self.result = {
            "exit_code": code,
            "outcome": document.get("status"),
            "verdicts": [_verdict_summary(v) for v in document.get("verdicts", [])],
            "input_problems": document.get("input_problems", []),
            "report": run.dir.file(REPORT).exists() and run.dir.file(REPORT).stat().st_mtime >= started,
            "output": "\n".join(output.splitlines()[-60:]),
            "seconds": round(time.time() - started, 1),
        }
        if document:
            self._set("done", f"{str(document.get('status', '')).upper()} (exit code {code}), run {run.dir.run_id}")
        else:
            self._set("failed", f"the analysis did not write {VERDICTS} (exit code {code})")

    def _wait_for_workers(self) -> None:
        recorder, runner = self.run.recorder, self.run.environment.runner
        if not isinstance(recorder, MasterRecorder):
            return
        expected = [n.id for n in runner.clients.all if n.state != "missing"]
        deadline = time.monotonic() + FINAL_BATCH_WAIT_S
        while recorder.pending(expected) and time.monotonic() < deadline:
            gevent.sleep(0.2)

    def describe(self) -> dict:
        return {"state": self.state, "message": self.message, **self.result}


class ResilienceTab:
    """The tab, its routes and its listeners, for one run of the master (or local process) with a web UI."""

    def __init__(self, run, web_ui) -> None:
        self.run = run
        self.th = analysis_thresholds.load(getattr(run.options, "thresholds", None) or None)
        self.live = Live(self.th, lambda: run.backend.restarts if run.backend is not None else [])
        self.analysis = Analysis(run)
        self.so_far = SoFar(run)
        self._rows: list[dict] = []
        self._rows_at = -math.inf
        run.telemetry.observers.append(self.live.observe_sample)
        if run.recorder is not None:
            run.recorder.observers.append(self.live.observe_events)
        events = run.environment.events
        events.test_start.add_listener(self._on_test_start)
        events.test_stop.add_listener(self._on_test_stop)
        self._extend(web_ui)

    # -- listeners ------------------------------------------------------------------
    def _on_test_start(self, **_) -> None:
        self.analysis.reset()
        self.so_far.reset()
        self._rows_at = -math.inf

    def _on_test_stop(self, **_) -> None:
        self.so_far.cancel()
        if self.run.closed:
            return  # quitting: the run closes its directory (and analyses it with --verdicts)
        self.analysis.start()
        self._rows_at = -math.inf

    def close(self) -> None:
        """The run is closing: nothing from here may still write into its directory."""
        self.analysis.cancel("Locust quit")
        self.so_far.close()

    # -- the web UI -----------------------------------------------------------------
    def _extend(self, web_ui) -> None:
        args = web_ui.template_args
        args["extended_tabs"] = [{"title": "Resilience", "key": TAB}]
        args["extended_tables"] = [{"key": TAB, "structure": [{"key": k, "title": t} for k, t in COLUMNS]}]
        args["extended_csv_files"] = [
            {"href": "./resilience/report", "title": "Resilience report (report.html, once a test has stopped)"}
        ]
        base = (getattr(self.run.options, "web_base_path", None) or "").rstrip("/")
        pages = {base + "/", base or "/"}
        auth = web_ui.auth_required_if_enabled
        routes = Blueprint("resilience", __name__, url_prefix=f"{base}/resilience")
        routes.add_url_rule("/data", "data", auth(lambda: jsonify(self.data())))
        routes.add_url_rule("/report", "report", auth(self._report))
        routes.add_url_rule("/tab.js", "script", auth(lambda: send_file(SCRIPT, mimetype="text/javascript", max_age=0)))
        web_ui.app.register_blueprint(routes)

        @web_ui.app.after_request
        def add_tab(response):
            if response.status_code != 200:
                return response
            if request.path == f"{base}/stats/requests" and response.is_json:
                try:
                    rows = self.rows()
                except Exception:  # Locust's own page must keep working whatever the tab hits
                    logger.exception("the Resilience tab's rows failed")
                    return response
                answer = response.get_json()
                answer["extended_stats"] = [{"key": TAB, "data": rows}]
                response.set_data(json.dumps(answer))
            elif request.path in pages and response.mimetype == "text/html":
                page = response.get_data(as_text=True)
                response.set_data(page.replace("</body>", '<script src="./resilience/tab.js"></script></body>', 1))
            return response

    def _report(self):
        if not self.run.dir.file(REPORT).exists():
            return "No report yet: the analysis writes report.html after a test stops.", 404
        return send_from_directory(self.run.dir.path, REPORT, max_age=0)

    def data(self) -> dict:
        return {
            "run_id": self.run.dir.run_id,
            "state": self.run.environment.runner.state,
            "rows": self.rows(),
            "analysis": self.analysis.describe(),
        }

    # -- the rows -------------------------------------------------------------------
    def rows(self) -> list[dict]:
        now = time.monotonic()
        if now - self._rows_at >= ROWS_MAX_AGE_S:
            self._rows = self._figure_rows() + self._verdict_rows() + [self._analysis_row()]
            self._rows_at = now
        return self._rows

    def _figure_rows(self) -> list[dict]:
        live = self.live
        stats = live.latest.get("stats") or {}
        backend = live.latest.get("backend") or {}
        error = live.latest.get("stats_error")
        polled = f"/stats (last poll failed: {error}) " if error else "/stats "
        p50, p99 = live.reconnect_quantile(0.5), live.reconnect_quantile(0.99)
        within = f", within {p50.error:.1%} (latency histogram)"
        return [
            _row("backend RSS", show(_mib(backend.get("rss_bytes")), "MiB"), note=_backend_source(backend)),
            *(_broker_rows(stats, error) if self.run.sys_topics is not None else self._stats_rows(stats, polled)),
            _row("reconnect p50", show(p50.value, "ms"), n=p50.n, note=f"every reconnect so far{within}"),
            _row("reconnect p99", show(p99.value, "ms"), n=p99.n, note="disconnect detected -> welcome of the resume"),
            _row(
                "events/s", f"{live.events_per_s():.1f}", n=live.events, note="protocol events at the master, last 5 s"
            ),
        ]

    def _stats_rows(self, stats: dict, polled: str) -> list[dict]:
        """The backend's ``GET /stats`` (agentws/1's counters)."""
        live = self.live
        outbox = as_number(stats.get("outbox_frames"))
        outbox_bytes = as_number(stats.get("outbox_bytes"))
        return [
            _row("connections", stats.get("connections"), note=polled + "connections"),
            _row("live agents", stats.get("agents_live"), note=polled + "agents_live"),
            _row(
                "duplicate agents",
                show(sum(live.duplicates_by_pid.values()) if live.duplicates_by_pid else None),
                note=f"{polled}duplicate_agents_total; most agents in one session: {live.max_agents_per_session:g}",
            ),
            _row("zombies reaped", stats.get("zombies_reaped_total"), note=polled + "zombies_reaped_total"),
            _row(
                "outbox",
                f"{outbox:g} frames, {outbox_bytes / 1024:.1f} KiB" if None not in (outbox, outbox_bytes) else "",
                note=polled + "outbox_frames, outbox_bytes: frames held for replay",
            ),
        ]

    def _verdict_rows(self) -> list[dict]:
        final = self.analysis.state == "done" and self.analysis.result.get("verdicts")
        if final:
            return [
                _row(
                    v["name"],
                    show(v["figure"], v["unit"]),
                    f"{v['status']} (final)",
                    show(v["threshold"]),
                    v["n"],
                    v["summary"],
                )
                for v in self.analysis.result["verdicts"]
            ]
        if self.run.environment.runner.state in (STATE_RUNNING, STATE_SPAWNING):
            self.so_far.poke()
        return [
            _row(name, figure, status if status == WAITING else f"{status} (so far)", threshold, n, why)
            for name, status, figure, threshold, n, why in self.so_far.rows()
        ]

    def _analysis_row(self) -> dict:
        a = self.analysis
        report = "report.html: Download Data tab, or below" if a.result.get("report") else ""
        return _row(
            "analysis", a.state, a.result.get("outcome") or "", note="; ".join(filter(None, [a.message, report]))
        )


def _row(name: str, value="", verdict="", threshold="", n="", note="") -> dict:
    value = "" if value is None else value
    return {"figure": name, "value": value, "verdict": str(verdict), "threshold": threshold, "n": n, "note": note}


def _mib(value) -> float | None:
    number = as_number(value)
    return None if number is None else number / MIB


def _broker_rows(stats: dict, error: str | None) -> list[dict]:
    """An MQTT broker's own figures, from its $SYS topics (harness/mqtt_sys.py)."""
    source = f"$SYS (not connected: {error}) " if error else "$SYS/broker/"
    heap = as_number(stats.get("heap_current_bytes"))
    return [
        _row("connections", stats.get("clients_connected"), note=source + "clients/connected"),
        _row("sessions away", stats.get("clients_disconnected"), note=source + "clients/disconnected: kept, no client"),
        _row("messages stored", stats.get("messages_stored"), note=source + "store/messages/count"),
        _row("publishes dropped", stats.get("publish_dropped"), note=source + "publish/messages/dropped: queues full"),
        _row("broker heap", show(_mib(heap), "MiB") if heap is not None else "", note=source + "heap/current"),
    ]


def _backend_source(backend: dict) -> str:
    if backend.get("pid"):
        return f"samples.csv: psutil, pid {backend['pid']}"
    return "samples.csv: the backend's /metrics" if backend else "no sample yet"


def _read_verdicts(path: Path, newer_than: float) -> dict:
    """verdicts.json, if this analysis wrote it (an older one would show another moment's verdicts)."""
    try:
        if path.stat().st_mtime < newer_than:
            return {}
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _verdict_summary(v: dict) -> dict:
    keys = ("name", "status", "figure", "unit", "threshold", "n", "summary")
    return {k: v.get(k) for k in keys}
