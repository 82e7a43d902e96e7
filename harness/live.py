"""What the master has seen so far, judged live: the Resilience tab's figures and provisional verdicts.

:class:`Live` keeps a few counters, fed by the recorder (rows as written to ``events.csv``) and
the telemetry (each round); :class:`Provisional` judges each verdict on them with the analysis's
own thresholds and functions. The analysis of the run directory has the last word.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable

import pandas as pd

from analysis.stats import quantile
from analysis.verdicts import agents, health, latency, leak, liveness, messages, restart
from analysis.verdicts.base import Status, format_figure
from analysis.verdicts.causes import STORM_TAIL_S
from contract.events import BRIEF_GAPS, EVENT_COLUMNS, RESUMED_DETAILS, CloseReason, Detail, Kind, Role

from .recorder import MasterRecorder

logger = logging.getLogger(__name__)

RESERVOIR = 20_000  #: reconnect latencies kept for the percentiles (a uniform sample of them beyond this)
HISTORY = 7_200  #: backend samples kept for the leak trend (2 h at the default --sample-interval)
TREND_POINTS = 300  #: the leak trend is fitted on at most this many points (Theil-Sen is quadratic)
RATE_WINDOW_S = 5.0  #: events/s over this window
WAITING = "waiting"  #: a verdict with nothing to judge yet
MIB = 1024 * 1024
#: Where each field the tab counts sits in a row of events.csv.
_AT = tuple(
    EVENT_COLUMNS.index(c)
    for c in ("ts", "user", "role", "kind", "ok", "latency_ms", "reason", "detail", "idle_timeout_ms")
)


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

    def __init__(self, thresholds: dict, restarts: Callable[[], list[dict]] = list) -> None:
        self.th = thresholds
        self.restarts = restarts  #: the embedded backend's restarts so far (its records: ts, ready_ts)
        self.events = 0
        self.tally: Counter = Counter()
        self.reconnects = Reservoir(RESERVOIR)
        self.brief_reconnects = Reservoir(RESERVOIR)
        self.last_gap: dict[str, str] = {}  #: user -> detail of its last disconnect (the cause of its reconnect)
        self.slowest_reap: float | None = None
        self.reap_bound: float | None = None
        self.latest: dict = {}  #: the telemetry's last round
        self.backend: deque = deque(maxlen=HISTORY)  #: (ts, pid, rss_bytes, connections, heap_bytes)
        self.duplicates_by_pid: dict = {}  #: the backend's duplicate_agents_total restarts at 0 with each process
        self.max_agents_per_session = 0.0
        self.cpu: dict[str, deque] = {}  #: Locust process -> its last sustained_samples CPU %
        self.cpu_sustained: float | None = None
        self.worst_lag_ms: float | None = None  #: the worst event-loop lag of any Locust process so far
        self.late_s = 0.0  #: seconds the generator was late beyond max_loop_lag_ms so far
        self.marks: deque = deque()  #: (monotonic time, events) at each telemetry round: events/s
        self._broken = False

    # -- feeding --------------------------------------------------------------------
    def observe_events(self, rows: list) -> None:
        """Recorder observer: rows in ``events.csv`` column order."""
        self.events += len(rows)
        try:
            at = _AT
            for r in rows:
                self._event(*(r[i] for i in at))
        except Exception:  # never let the tab break the recording (a local run fires this in a user's greenlet)
            if not self._broken:
                logger.exception("the Resilience tab could not count an event; its verdicts stop here")
            self._broken = True

    def _event(
        self, ts: float, user: str, role: str, kind: str, ok, latency_ms, reason: str, detail: str, idle
    ) -> None:
        t = self.tally
        if kind == Kind.DISCONNECT:
            self.last_gap[user] = detail
        elif kind == Kind.RECONNECT:
            if detail != Detail.STOPPED_BY_CLOSE and not self._through_restart(ts):
                value = float(latency_ms) if ok and latency_ms not in (None, "") else math.inf
                self.reconnects.add(value)
                if self.last_gap.get(user) in BRIEF_GAPS:
                    self.brief_reconnects.add(value)
        elif kind == Kind.WELCOME:
            t["resumes"] += detail in RESUMED_DETAILS
            t["agent_changed"] += detail == Detail.RESUMED_AGENT_CHANGED
            t["context_failures"] += detail in messages.CONTEXT_CHANGED
        elif kind in (Kind.CHUNK_GAP, Kind.DUP_FRAME):
            t["delivery_failures"] += 1
            t["refresh_failures"] += kind == Kind.CHUNK_GAP and role == Role.REFRESH
        elif kind in (Kind.STREAM_DONE, Kind.NOTIFY):
            t["delivery_checked"] += 1
            t["delivery_failures"] += not ok
        elif kind == Kind.HISTORY_CHECK:
            t["history_checks"] += 1
            t["context_failures"] += not ok
        elif kind == Kind.REFRESH:
            t["refreshes"] += 1
            t["refresh_failures"] += not ok
        elif kind == Kind.REFRESH_REQUIRED and role == Role.REFRESH:
            t["refresh_failures"] += not ok
        elif kind == Kind.CLOSE:
            self._close(role, ok, latency_ms, reason, idle)

    def _close(self, role: str, ok, latency_ms, reason: str, idle) -> None:
        t = self.tally
        reaped = reason == CloseReason.IDLE_REAPED
        if role != Role.ZOMBIE:
            t["live_clients_reaped"] += reaped
            return
        t["zombie_rounds"] += 1
        if not ok:
            t["zombies_never_reaped"] += 1
        elif not reaped:
            t["zombies_closed_otherwise"] += 1
        else:
            t["zombies_reaped"] += 1
            waited = float(latency_ms or 0.0)
            self.slowest_reap = max(self.slowest_reap or 0.0, waited)
            th = self.th["zombie"]
            if th["reap_max_ms"] or idle not in (None, ""):
                self.reap_bound = th["reap_max_ms"] or float(idle) + th["grace_ms"]
            t["zombies_reaped_late"] += self.reap_bound is not None and waited > self.reap_bound

    def _through_restart(self, ts: float) -> bool:
        """A reconnect that finished during a restart's storm: the restart verdict's, not reconnect-latency's."""
        return any(r["ts"] <= ts <= (r.get("ready_ts") or r["ts"]) + STORM_TAIL_S for r in self.restarts() if "ts" in r)

    def observe_sample(self, latest: dict) -> None:
        """Telemetry observer: one round (backend sample, Locust processes, ``/stats``)."""
        self.latest = latest
        backend, stats = latest["backend"], latest["stats"]
        pid = backend.get("pid") or stats.get("pid")
        if as_number(backend.get("rss_bytes")) is not None:
            rss, heap = float(backend["rss_bytes"]), as_number(backend.get("heap_bytes"))
            self.backend.append((latest["ts"], pid, rss, as_number(stats.get("connections")), heap))
        if stats:
            dup = as_number(stats.get("duplicate_agents_total")) or 0.0
            self.duplicates_by_pid[stats.get("pid")] = max(dup, self.duplicates_by_pid.get(stats.get("pid"), 0.0))
            most = as_number(stats.get("max_agents_per_session")) or 0.0
            self.max_agents_per_session = max(self.max_agents_per_session, most)
        held_for = int(self.th["harness_health"]["sustained_samples"])
        for row in latest["locust"]:
            lag = as_number(row.get("loop_lag_ms"))
            if lag is not None:
                self.worst_lag_ms = max(self.worst_lag_ms or 0.0, lag)
                began, ended = as_number(row.get("loop_late_from")), as_number(row.get("loop_late_until"))
                if lag > self.th["harness_health"]["max_loop_lag_ms"] and began is not None and ended is not None:
                    self.late_s += max(0.0, ended - began)
            cpu = as_number(row.get("cpu_percent"))
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
        fmt = (show(figure, "duplicates"), show(limit), self.t["resumes"])
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
        threshold = show(th["min_growth_mib"], "MiB")
        if not starts or not self.live.backend:
            return (WAITING, "", threshold, 0, "no load or no backend RSS sample yet")
        series = pd.DataFrame(list(self.live.backend), columns=["ts", "pid", "rss_bytes", "connections", "heap_bytes"])
        series = series[series["pid"] == series["pid"].iloc[-1]]  # the current backend process
        start = max(min(starts), float(series["ts"].iloc[0]))
        end = max(stops) if stops and max(stops) >= max(starts) else float(series["ts"].iloc[-1])
        series = series[series["ts"] <= end].reset_index(drop=True)
        per_connection = leak.bytes_per_connection(series)
        after = series["ts"] >= leak.warmup_end(start, end, th)
        load = series[after]
        if len(load) < leak.MIN_POINTS:
            why = f"{len(load)} backend samples after warm-up: the trend needs {leak.MIN_POINTS}"
            return (WAITING, "", threshold, len(load), why)
        # Theil-Sen is quadratic: judge an evenly thinned window, as the analysis does on its downsampled series.
        step = max(1, len(load) // TREND_POINTS)
        span = float(load["ts"].iloc[-1] - load["ts"].iloc[0])
        floor = leak.heap_floor(series["ts"], series["heap_bytes"], leak.floor_window_s(span, th))[after]
        thin = load.iloc[::step]
        w = leak.judge_window(thin, leak.unexplained(thin, per_connection), floor.iloc[::step], span, None, th)
        slope = f"slope {w['slope_mib_per_hour']:.1f} MiB/h" if w["slope_mib_per_hour"] is not None else ""
        why = f"{w['finding'] or w['reason']}; {slope}; RSS less what the live connections explain, after warm-up"
        return (w["status"], show(w["growth_mib"], "MiB grown"), threshold, len(load), why)

    def reconnect_latency(self) -> tuple:
        live, th = self.live, self.th["reconnect_latency"]
        if not live.reconnects.seen:
            return (WAITING, "", show(th["p99_max_ms"], "ms"), 0, "no reconnect yet")
        judgements = {"all": latency.judge_p99(live.reconnects.values, th["p99_max_ms"], th["confidence"])}
        if live.brief_reconnects.seen:
            judgements["brief"] = latency.judge_p99(
                live.brief_reconnects.values, th["brief_p99_max_ms"], th["confidence"]
            )
        statuses = [s for s, _, _ in judgements.values()]
        status = next((s for s in (Status.FAIL, Status.INCONCLUSIVE) if s in statuses), Status.PASS)
        _, q, _ = judgements["all"]
        why = "; ".join(f"{name}: {w}" for name, (_, _, w) in judgements.items())
        return (status, show(q.value, "ms (p99)"), show(th["p99_max_ms"], "ms"), live.reconnects.seen, why)

    def _failures(self, section: str, failures: str, checked: str, what: str, nothing: str) -> tuple:
        limit, bad, n = self.th[section]["max_failures"], self.t[failures], self.t[checked]
        if bad > limit:
            return (Status.FAIL, show(bad, "failures"), show(limit), n, f"{bad} failure(s) so far")
        if not n:
            return (WAITING, show(bad, "failures"), show(limit), 0, nothing)
        return (Status.PASS, show(bad, "failures"), show(limit), n, f"{n} {what}, none failed")

    def zombie(self) -> tuple:
        t, live = self.t, self.live
        rounds = t["zombie_rounds"]
        figure, bound = show(live.slowest_reap, "ms"), show(live.reap_bound, "ms")
        parts = [
            f"{t['zombies_never_reaped']} never reaped" if t["zombies_never_reaped"] else "",
            f"{t['zombies_reaped_late']} reaped late" if t["zombies_reaped_late"] else "",
            f"{t['live_clients_reaped']} live (heartbeating) client(s) reaped" if t["live_clients_reaped"] else "",
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
        fmt = (show(cpu, "% CPU"), show(limit, "% CPU"), len(self.live.cpu))
        if cpu is None:
            return (WAITING, *fmt, "no sustained CPU figure of the Locust processes yet")
        if cpu > limit:
            return (Status.INCONCLUSIVE, *fmt, f"a Locust process held {cpu:.0f} % CPU: latencies include its queueing")
        starts = self.run.dir.meta.get("test_starts_utc") or []
        loaded_s = time.time() - min(starts) if starts else 0.0
        late_s = self.live.late_s
        if loaded_s > 0 and late_s > th["max_late_share"] * loaded_s and late_s > th["min_late_s"]:
            lag = self.live.worst_lag_ms or 0.0
            return (
                Status.INCONCLUSIVE,
                *fmt,
                f"the generator was late {late_s / loaded_s:.1%} of the load so far (event loop up to {lag:,.0f} ms"
                " late): figures measured then are set aside",
            )
        if lost > th["max_events_lost"]:
            return (Status.INCONCLUSIVE, *fmt, f"{lost} events never reached the master")
        return (Status.PASS, *fmt, "the Locust processes keep up (the analysis also checks the run directory)")


def as_number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def show(value, unit: str = "") -> str:
    return format_figure(value, unit, missing="")
