"""The web UI's Resilience tab: the backend's side of the run, live, and the verdicts when a test stops.

Locust's React UI has one extension point for a tab: ``template_args["extended_tabs"]`` and
``["extended_tables"]`` name the tab and its columns, and its rows travel in the ``extended_stats``
of each ``/stats/requests`` answer, which the UI polls every 2 s while a test runs. So:

* :class:`Live` keeps what the master sees, small: the last telemetry round (backend RSS,
  ``/stats``), counters of the protocol events as the recorder writes them, a reservoir of
  reconnect latencies and the backend's RSS history. :meth:`ResilienceTab.rows` turns them into
  the tab's rows, each verdict *provisional*, judged with the analysis's own functions and
  thresholds on what has arrived so far.
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
import random
import re
import time
from collections import Counter, deque
from pathlib import Path

import gevent
import pandas as pd
from flask import Blueprint, jsonify, request, send_file, send_from_directory

from agentws.events import Kind
from analysis import thresholds as analysis_thresholds
from analysis.stats import downsample, judge_growth, quantile
from analysis.verdicts import agents, health, latency, leak, liveness, messages, restart
from analysis.verdicts.base import Status, format_figure
from analysis.verdicts.causes import BRIEF_GAPS

from . import verdicts
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
RESERVOIR = 20_000  #: reconnect latencies kept for the percentiles (a uniform sample of them beyond this)
HISTORY = 7_200  #: backend samples kept for the leak trend (2 h at the default --sample-interval)
TREND_POINTS = 300  #: the leak trend is fitted on at most this many points (Theil-Sen is quadratic)
RATE_WINDOW_S = 5.0  #: events/s over this window
ROWS_MAX_AGE_S = 1.0  #: the rows are rebuilt at most this often, however many browsers poll
FINAL_BATCH_WAIT_S = 10.0  #: how long a stop waits for the workers' last events before the drain
WAITING = "waiting"  #: a verdict with nothing to judge yet
MIB = 1024 * 1024
_IDLE_TIMEOUT = re.compile(r"idle_timeout_ms=(\d+)")


class Reservoir:
    """A uniform sample of at most ``size`` values of a stream (Vitter's algorithm R); ``seen`` counts the stream."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.values: list[float] = []
        self.seen = 0
        self._random = random.Random(0)

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.values) < self.size:
            self.values.append(value)
        elif (j := self._random.randrange(self.seen)) < self.size:
            self.values[j] = value


class Live:
    """What the master has seen so far, in a few counters: fed by the recorder and the telemetry."""

    def __init__(self, thresholds: dict) -> None:
        self.th = thresholds
        self.events = 0
        self.tally: Counter = Counter()
        self.reconnects = Reservoir(RESERVOIR)
        self.brief_reconnects = Reservoir(RESERVOIR)
        self.last_gap: dict[str, str] = {}  #: user -> detail of its last disconnect (the cause of its reconnect)
        self.slowest_reap: float | None = None
        self.reap_bound: float | None = None
        self.latest: dict = {}  #: the telemetry's last round
        self.backend: deque = deque(maxlen=HISTORY)  #: (ts, pid, rss_bytes, connections)
        self.duplicates_by_pid: dict = {}  #: the backend's duplicate_agents_total restarts at 0 with each process
        self.max_agents_per_session = 0.0
        self.cpu: dict[str, deque] = {}  #: Locust process -> its last sustained_samples CPU %
        self.cpu_sustained: float | None = None
        self.marks: deque = deque()  #: (monotonic time, events) at each telemetry round: events/s
        self._broken = False

    # -- feeding --------------------------------------------------------------------
    def observe_events(self, rows: list) -> None:
        """Recorder observer: rows in ``events.csv`` column order."""
        self.events += len(rows)
        try:
            for r in rows:
                self._event(r[2], r[4], r[5], r[6], r[9], r[10])
        except Exception:  # never let the tab break the recording (a local run fires this in a user's greenlet)
            if not self._broken:
                logger.exception("the Resilience tab could not count an event; its verdicts stop here")
            self._broken = True

    def _event(self, user: str, kind: str, ok, latency_ms, code: str, detail: str) -> None:
        t = self.tally
        if kind == Kind.DISCONNECT:
            self.last_gap[user] = detail
        elif kind == Kind.RECONNECT:
            if detail != latency.NOT_RETRIED:
                value = float(latency_ms) if ok and latency_ms not in (None, "") else math.inf
                self.reconnects.add(value)
                if self.last_gap.get(user) in BRIEF_GAPS:
                    self.brief_reconnects.add(value)
        elif kind == Kind.WELCOME:
            t["resumes"] += detail.startswith("resumed")
            t["agent_changed"] += detail == agents.AGENT_CHANGED
            t["context_failures"] += detail in messages.CONTEXT_CHANGED
        elif kind in (Kind.CHUNK_GAP, Kind.DUP_FRAME):
            t["delivery_failures"] += 1
            t["refresh_failures"] += kind == Kind.CHUNK_GAP and _cls(user) == liveness.REFRESH_USER
        elif kind in (Kind.STREAM_DONE, Kind.NOTIFY):
            t["delivery_checked"] += 1
            t["delivery_failures"] += not ok
        elif kind == Kind.HISTORY_CHECK:
            t["history_checks"] += 1
            t["context_failures"] += not ok
        elif kind in (Kind.REFRESH, Kind.REFRESH_REQUIRED) and _cls(user) == liveness.REFRESH_USER:
            t["refreshes"] += kind == Kind.REFRESH
            t["refresh_failures"] += not ok
        elif kind == Kind.CLOSE:
            self._close(_cls(user), ok, latency_ms, code, detail)

    def _close(self, cls: str, ok, latency_ms, code: str, detail: str) -> None:
        t = self.tally
        if cls == liveness.HEARTBEAT_USER and code == liveness.REAPED:
            t["live_clients_reaped"] += 1
        if cls != liveness.ZOMBIE_USER:
            return
        t["zombie_rounds"] += 1
        if not ok:
            t["zombies_never_reaped"] += 1
        elif code != liveness.REAPED:
            t["zombies_closed_otherwise"] += 1
        else:
            t["zombies_reaped"] += 1
            waited = float(latency_ms or 0.0)
            self.slowest_reap = max(self.slowest_reap or 0.0, waited)
            th = self.th["zombie"]
            idle = _IDLE_TIMEOUT.search(detail)
            if th["reap_max_ms"] or idle:
                self.reap_bound = th["reap_max_ms"] or float(idle.group(1)) + th["grace_ms"]
            t["zombies_reaped_late"] += self.reap_bound is not None and waited > self.reap_bound

    def observe_sample(self, latest: dict) -> None:
        """Telemetry observer: one round (backend sample, Locust processes, ``/stats``)."""
        self.latest = latest
        backend, stats = latest["backend"], latest["stats"]
        pid = backend.get("pid") or stats.get("pid")
        if _number(backend.get("rss_bytes")) is not None:
            self.backend.append((latest["ts"], pid, float(backend["rss_bytes"]), _number(stats.get("connections"))))
        if stats:
            dup = _number(stats.get("duplicate_agents_total")) or 0.0
            self.duplicates_by_pid[stats.get("pid")] = max(dup, self.duplicates_by_pid.get(stats.get("pid"), 0.0))
            most = _number(stats.get("max_agents_per_session")) or 0.0
            self.max_agents_per_session = max(self.max_agents_per_session, most)
        held_for = int(self.th["harness_health"]["sustained_samples"])
        for row in latest["locust"]:
            cpu = _number(row.get("cpu_percent"))
            if cpu is None:
                continue
            held = self.cpu.setdefault(row["source"], deque(maxlen=held_for))
            held.append(cpu)
            if len(held) == held_for:
                self.cpu_sustained = max(self.cpu_sustained or 0.0, min(held))
        now = time.monotonic()
        self.marks.append((now, self.events))
        while now - self.marks[0][0] > RATE_WINDOW_S:
            self.marks.popleft()

    # -- figures --------------------------------------------------------------------
    def events_per_s(self) -> float:
        if not self.marks:
            return 0.0
        since, count = self.marks[0]
        elapsed = time.monotonic() - since
        return (self.events - count) / elapsed if elapsed > 0.5 else 0.0

    def reconnect_quantile(self, p: float):
        return quantile(self.reconnects.values, p, self.th["reconnect_latency"]["confidence"])


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
        self.live = Live(self.th)
        self.analysis = Analysis(run)
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
        self._rows_at = -math.inf

    def _on_test_stop(self, **_) -> None:
        if self.run.closed:
            return  # quitting: the run closes its directory (and analyses it with --verdicts)
        self.analysis.start()
        self._rows_at = -math.inf

    def close(self) -> None:
        """The run is closing: nothing from here may still write into its directory."""
        self.analysis.cancel("Locust quit")

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
        sampled = f", a uniform sample of {RESERVOIR}" if live.reconnects.seen > RESERVOIR else ""
        outbox = _number(stats.get("outbox_frames"))
        outbox_bytes = _number(stats.get("outbox_bytes"))
        return [
            _row("backend RSS", _fmt(_mib(backend.get("rss_bytes")), "MiB"), note=_backend_source(backend)),
            _row("connections", stats.get("connections"), note=polled + "connections"),
            _row("live agents", stats.get("agents_live"), note=polled + "agents_live"),
            _row(
                "duplicate agents",
                _fmt(sum(live.duplicates_by_pid.values()) if live.duplicates_by_pid else None),
                note=f"{polled}duplicate_agents_total; most agents in one session: {live.max_agents_per_session:g}",
            ),
            _row("zombies reaped", stats.get("zombies_reaped_total"), note=polled + "zombies_reaped_total"),
            _row(
                "outbox",
                f"{outbox:g} frames, {outbox_bytes / 1024:.1f} KiB" if None not in (outbox, outbox_bytes) else "",
                note=polled + "outbox_frames, outbox_bytes: frames held for replay",
            ),
            _row("reconnect p50", _fmt(p50.value, "ms"), n=p50.n, note=f"every reconnect so far{sampled}"),
            _row("reconnect p99", _fmt(p99.value, "ms"), n=p99.n, note="disconnect detected -> welcome of the resume"),
            _row(
                "events/s", f"{live.events_per_s():.1f}", n=live.events, note="protocol events at the master, last 5 s"
            ),
        ]

    def _verdict_rows(self) -> list[dict]:
        final = self.analysis.state == "done" and self.analysis.result.get("verdicts")
        if final:
            return [
                _row(
                    v["name"],
                    _fmt(v["figure"], v["unit"]),
                    f"{v['status']} (final)",
                    _fmt(v["threshold"]),
                    v["n"],
                    v["summary"],
                )
                for v in self.analysis.result["verdicts"]
            ]
        judged = Provisional(self.live, self.th, self.run).judge_all()
        return [
            _row(name, figure, status if status == WAITING else f"{status} (provisional)", threshold, n, why)
            for name, (status, figure, threshold, n, why) in judged.items()
        ]

    def _analysis_row(self) -> dict:
        a = self.analysis
        report = "report.html: Download Data tab, or below" if a.result.get("report") else ""
        return _row(
            "analysis", a.state, a.result.get("outcome") or "", note="; ".join(filter(None, [a.message, report]))
        )


class Provisional:
    """Each verdict judged on what the master has seen so far: (status, figure, threshold, n, why).

    Cheap stand-ins for :mod:`analysis.verdicts`, using its thresholds and functions; they see
    counters rather than the whole run (no restart windows, no per-session evidence), so the
    analysis at the end has the last word.
    """

    def __init__(self, live: Live, th: dict, run) -> None:
        self.live, self.th, self.run = live, th, run
        self.t = live.tally

    def judge_all(self) -> dict[str, tuple]:
        return {
            agents.NAME: self.duplicate_agent(),
            leak.NAME: self.leak(),
            latency.NAME: self.reconnect_latency(),
            messages.DELIVERY: self._failures(
                "delivery",
                "delivery_failures",
                "delivery_checked",
                "streams and pushes checked",
                "no stream or push yet",
            ),
            messages.CONTEXT: self._failures(
                "context", "context_failures", "history_checks", "resumed histories compared", "no history compared yet"
            ),
            liveness.ZOMBIE: self.zombie(),
            liveness.REFRESH: self._failures(
                "refresh", "refresh_failures", "refreshes", "refreshes answered on the open socket", "no refresh yet"
            ),
            restart.NAME: self.restart(),
            health.NAME: self.harness_health(),
        }

    def duplicate_agent(self) -> tuple:
        live, limit = self.live, self.th["duplicate_agent"]["max_duplicates"]
        backend = sum(live.duplicates_by_pid.values())
        clients = self.t["agent_changed"]
        figure = backend + clients
        fmt = (_fmt(figure, "duplicates"), _fmt(limit), self.t["resumes"])
        if figure > limit or live.max_agents_per_session > 1:
            return (Status.FAIL, *fmt, f"{figure:g} duplicate agent(s) (backend {backend:g}, clients {clients})")
        if not live.duplicates_by_pid:
            return (WAITING, *fmt, "no /stats answer yet: the backend's side is unknown")
        if not self.t["resumes"]:
            return (WAITING, *fmt, "no session resumed yet")
        return (Status.PASS, *fmt, f"one agent per session across {self.t['resumes']} resumes")

    def leak(self) -> tuple:
        th = self.th["leak"]
        starts = self.run.dir.meta.get("test_starts_utc") or []
        stops = self.run.dir.meta.get("test_stops_utc") or []
        threshold = _fmt(th["min_growth_mib"], "MiB")
        if not starts or not self.live.backend:
            return (WAITING, "", threshold, 0, "no load or no backend RSS sample yet")
        series = pd.DataFrame(list(self.live.backend), columns=["ts", "pid", "rss_bytes", "connections"])
        series = series[series["pid"] == series["pid"].iloc[-1]]  # the current backend process
        start = max(min(starts), float(series["ts"].iloc[0]))
        end = max(stops) if stops and max(stops) >= max(starts) else float(series["ts"].iloc[-1])
        series = series[series["ts"] <= end]
        per_connection = leak.bytes_per_connection(series)
        load = series[series["ts"] >= leak.warmup_end(start, end, th)]
        if len(load) < leak.MIN_POINTS:
            why = f"{len(load)} backend samples after warm-up: the trend needs {leak.MIN_POINTS}"
            return (WAITING, "", threshold, len(load), why)
        t, y = downsample(load["ts"].to_numpy(), leak.unexplained(load, per_connection).to_numpy(), TREND_POINTS)
        g = judge_growth(
            t, y, max_slope_per_hour=th["max_slope_mib_per_hour"] * MIB, min_growth=th["min_growth_mib"] * MIB
        )
        slope = f"slope {g.overall.slope / MIB:.1f} MiB/h (95 % low {g.overall.low / MIB:.1f})" if g.overall else ""
        status = Status.FAIL if g.growing else Status.PASS
        why = f"{g.reason}; {slope}; RSS less what the live connections explain, after warm-up"
        return (status, _fmt(g.growth / MIB, "MiB grown"), threshold, len(load), why)

    def reconnect_latency(self) -> tuple:
        live, th = self.live, self.th["reconnect_latency"]
        if not live.reconnects.seen:
            return (WAITING, "", _fmt(th["p99_max_ms"], "ms"), 0, "no reconnect yet")
        judgements = {"all": latency.judge_p99(live.reconnects.values, th["p99_max_ms"], th["confidence"])}
        if live.brief_reconnects.seen:
            judgements["brief"] = latency.judge_p99(
                live.brief_reconnects.values, th["brief_p99_max_ms"], th["confidence"]
            )
        statuses = [s for s, _, _ in judgements.values()]
        status = next((s for s in (Status.FAIL, Status.INCONCLUSIVE) if s in statuses), Status.PASS)
        _, q, _ = judgements["all"]
        why = "; ".join(f"{name}: {w}" for name, (_, _, w) in judgements.items())
        return (status, _fmt(q.value, "ms (p99)"), _fmt(th["p99_max_ms"], "ms"), live.reconnects.seen, why)

    def _failures(self, section: str, failures: str, checked: str, what: str, nothing: str) -> tuple:
        limit, bad, n = self.th[section]["max_failures"], self.t[failures], self.t[checked]
        if bad > limit:
            return (Status.FAIL, _fmt(bad, "failures"), _fmt(limit), n, f"{bad} failure(s) so far")
        if not n:
            return (WAITING, _fmt(bad, "failures"), _fmt(limit), 0, nothing)
        return (Status.PASS, _fmt(bad, "failures"), _fmt(limit), n, f"{n} {what}, none failed")

    def zombie(self) -> tuple:
        t, live = self.t, self.live
        rounds = t["zombie_rounds"]
        figure, bound = _fmt(live.slowest_reap, "ms"), _fmt(live.reap_bound, "ms")
        parts = [
            f"{t['zombies_never_reaped']} never reaped" if t["zombies_never_reaped"] else "",
            f"{t['zombies_reaped_late']} reaped late" if t["zombies_reaped_late"] else "",
            f"{t['live_clients_reaped']} heartbeating client(s) reaped" if t["live_clients_reaped"] else "",
        ]
        if any(parts):
            return (Status.FAIL, figure, bound, rounds, "; ".join(filter(None, parts)))
        if not rounds:
            return (WAITING, figure, bound, 0, "no zombie round ended yet (the backend's idle timeout is longer?)")
        if not t["zombies_reaped"]:
            return (Status.INCONCLUSIVE, figure, bound, rounds, "no zombie closed with 4001 yet")
        return (Status.PASS, figure, bound, rounds, f"{t['zombies_reaped']} zombies reaped with 4001 in time")

    def restart(self) -> tuple:
        done = len(self.run.backend.restarts) if self.run.backend is not None else 0
        return (WAITING, "", "", done, f"judged by the analysis after the test; restarts so far: {done}")

    def harness_health(self) -> tuple:
        th = self.th["harness_health"]
        cpu, limit = self.live.cpu_sustained, th["cpu_max_percent"]
        recorder = self.run.recorder
        lost = recorder.summary().get("events_undelivered", 0) if isinstance(recorder, MasterRecorder) else 0
        fmt = (_fmt(cpu, "% CPU"), _fmt(limit, "% CPU"), len(self.live.cpu))
        if cpu is None:
            return (WAITING, *fmt, "no sustained CPU figure of the Locust processes yet")
        if cpu > limit:
            return (Status.INCONCLUSIVE, *fmt, f"a Locust process held {cpu:.0f} % CPU: latencies include its queueing")
        if lost > th["max_events_lost"]:
            return (Status.INCONCLUSIVE, *fmt, f"{lost} events never reached the master")
        return (Status.PASS, *fmt, "the Locust processes keep up (the analysis also checks the run directory)")


def _row(name: str, value="", verdict="", threshold="", n="", note="") -> dict:
    value = "" if value is None else value
    return {"figure": name, "value": value, "verdict": str(verdict), "threshold": threshold, "n": n, "note": note}


def _cls(user: str) -> str:
    """User ids are ``<Class>-<pid>-<n>``."""
    return user.partition("-")[0]


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _mib(value) -> float | None:
    number = _number(value)
    return None if number is None else number / MIB


def _fmt(value, unit: str = "") -> str:
    return format_figure(value, unit, missing="")


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
