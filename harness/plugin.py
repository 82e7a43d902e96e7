"""The harness as a Locust plugin: importing this module wires every listener.

Master (or the single local process): on ``init`` it checks the options, opens
the run directory, starts the embedded backend when there is no ``--host``,
starts recording, telemetry and Locust's CSV export; on ``quitting`` it closes
the run in this order, so that nothing is lost and ``meta.json`` is written last:

1. ``runner.quit()``: workers stop their users and send their final event batch;
2. wait (bounded) for every worker's final batch;
3. drain: ``--drain`` seconds more telemetry with no load (skipped when interrupted);
   then stop telemetry, close ``events.csv``, ``samples.csv``, ``server_stats.csv``;
4. stop the embedded backend; write Locust's final CSVs and HTML report;
5. close ``meta.json`` (end time, counts, exit reason, ``complete: true``);
6. with ``--verdicts``, run the analysis and take its exit code.

With a web UI, :mod:`harness.webui` adds the Resilience tab: the backend's figures
live, and the analysis each time a test stops there.

Worker: ship protocol events to the master and add its pid/fds/threads to the
stats reports Locust already sends.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import gevent
import locust
from locust import events
from locust.runners import STATE_RUNNING, STATE_SPAWNING, MasterRunner, WorkerRunner

from contract.events import FORMAT
from scenarios.catalog import SCENARIOS
from users import protocols
from users.client import AgentClient
from users.options import Settings
from users.protocols.mqtt import Mqtt

from . import __version__, exports, form, lag, options, targets, verdicts
from .embedded import EmbeddedBackend
from .mqtt_sys import FIELDS as SYS_FIELDS
from .mqtt_sys import SysTopics
from .recorder import RESTART_RAW_AFTER_S, RESTART_RAW_MAX_S, LocalRecorder, MasterRecorder, Tables, WorkerRecorder
from .rundir import CsvSink, RunDir
from .tally import RING_S
from .telemetry import REPORT_KEY, SAMPLE_COLUMNS, Telemetry, own_process_facts

logger = logging.getLogger(__name__)

#: The open run of this process (master or local), for scenarios and tests.
current: Run | None = None


def classes_to_run(environment) -> list:
    """The user classes this run will spawn: a scenario's mix when its load shape runs one (the
    locustfile holds every class), else the locustfile's or the command line's."""
    scenario = SCENARIOS.get(getattr(environment.parsed_options, "scenario", None) or "")
    available = environment.available_user_classes or {}
    if scenario is not None and environment.shape_class is not None and set(scenario.mix) <= set(available):
        return [available[name] for name in scenario.mix]
    return list(environment.user_classes or [])


class Run:
    """One run of the master or local process: its directory and everything writing into it."""

    def __init__(self, environment) -> None:
        self.environment = environment
        self.options = environment.parsed_options
        self.backend: EmbeddedBackend | None = None
        self.recorder: LocalRecorder | MasterRecorder | None = None
        self.csv_export: exports.CsvExport | None = None
        self.closed = False
        self.max_users: dict[str, int] = {}
        self.secrets: dict[str, str] = {}
        self.sys_topics: SysTopics | None = None  #: an MQTT broker's $SYS figures (server_stats.csv)
        self.tab = None  #: the web UI's Resilience tab (harness.webui.ResilienceTab), when there is a web UI

    # -- opening ------------------------------------------------------------------
    def open(self) -> Run:
        opts, env = self.options, self.environment
        options.validate(opts)
        if not opts.host and not opts.protocol:
            opts.protocol = targets.get(opts.target).protocol  # the target's own; the spawn message carries it
        # The web UI's user classes are known at test start (a scenario or classes picked in its form): checked then.
        adapter = options.validate_protocol(opts, env.locustfile, classes_to_run(env) if opts.headless else [])
        self.dir = RunDir(opts.run_dir, opts.run_id)
        self.dir.meta["protocol"] = protocols.describe(adapter, opts.protocol)
        self.dir.meta["target"] = None if opts.host else targets.get(opts.target).name
        self.dir.meta.update(self._static_meta())
        if not opts.host:
            self._start_backend()
            self.dir.meta["backend"] = self.backend.describe()
        self.dir.meta["host"] = env.host
        self.events = Tables.open(self.dir.path)
        self.samples = CsvSink(self.dir.file("samples.csv"), SAMPLE_COLUMNS)
        self.server_stats = CsvSink(self.dir.file("server_stats.csv"))
        if not opts.no_record:
            kind = MasterRecorder if isinstance(env.runner, MasterRunner) else LocalRecorder
            self.recorder = kind(env, self.events)
            if self.backend is not None:
                self.backend.restart_observers.append(self._raw_window_around)
        if opts.csv_prefix is None:
            self.csv_export = exports.CsvExport(env, str(self.dir.file(exports.PREFIX)))
        self.telemetry = Telemetry(env, self.samples, self.server_stats, opts.sample_interval, self._backend_pid)
        self._broker_figures(adapter)
        if isinstance(self.recorder, MasterRecorder):
            self.telemetry.observers.append(lambda _: self.recorder.watch(env.runner))
        self.telemetry.start()
        env.events.test_start.add_listener(self._on_test_start)
        env.events.spawning_complete.add_listener(self._on_users)
        env.events.test_stopping.add_listener(self._on_users)
        env.events.test_stop.add_listener(self._on_test_stop)
        env.events.quitting.add_listener(self._on_quitting)
        self.dir.save()
        self.secrets = form.secret_values(opts)  #: put back at test start: the web UI's form posts them blank
        logger.info("run directory %s", self.dir.path)
        return self

    def _start_backend(self) -> None:
        opts = self.options
        target = targets.get(opts.target)
        self.backend = EmbeddedBackend(
            self.dir.path, opts.stub_store, options.target_args(opts), opts.stub_fault, target
        )
        try:
            self.backend.start()
        except Exception as e:
            self.dir.meta["backend"] = self.backend.describe()
            self.dir.close(exit_reason=f"embedded backend failed to start: {e}"[:500])
            logger.error("embedded backend failed to start: %s", e)
            raise SystemExit(1) from None
        self.environment.host = self.backend.url
        # The users' admin token option (if they define one) gets the embedded backend's token;
        # Locust copies custom options to the workers in its spawn message.
        if hasattr(opts, "admin_token") and not opts.admin_token:
            opts.admin_token = self.backend.admin_token

    def _broker_figures(self, adapter) -> None:
        """An MQTT broker has no /stats: its $SYS topics fill server_stats.csv (harness/mqtt_sys.py)."""
        self.sys_topics = None
        if not issubclass(adapter, Mqtt) or not self.environment.host:
            return
        # Settings read here are not the users' (theirs are read at their spawn, after a web UI form changed them).
        settings = Settings._from_options(self.options)
        client = AgentClient(self.environment, "harness-sys", self.environment.host, settings, adapter=adapter)
        self.sys_topics = SysTopics(client.ws_url, client.subprotocols, client.settings.connect_timeout_s, client.ssl)
        self.telemetry.stats_source = self.sys_topics.start().poll
        self.telemetry.stats_fields = tuple(SYS_FIELDS)

    def _backend_pid(self) -> int | None:
        return self.backend.pid if self.backend else (self.options.server_pid or None)

    def _static_meta(self) -> dict:
        opts, env = self.options, self.environment
        return {
            "format": FORMAT,
            "scenario": opts.scenario or None,
            "locustfile": env.locustfile,
            "runner": "master" if isinstance(env.runner, MasterRunner) else "local",
            "expect_workers": getattr(opts, "expect_workers", None) if isinstance(env.runner, MasterRunner) else 0,
            "user_classes_available": sorted(env.available_user_classes or {}),
            "user_classes": {},
            "num_users": opts.num_users,
            "spawn_rate": opts.spawn_rate,
            "run_time": opts.run_time,
            "versions": {"locust": locust.__version__, "harness": __version__, "python": sys.version.split()[0]},
            "machine": {"cpus": os.cpu_count()},  # where the master runs: the run queue's yardstick
            "thresholds": {},  # filled by the verdict options when the analysis lands
            "backend": {"embedded": False, "pid": opts.server_pid or None},
            "recording": {"enabled": not opts.no_record},
            "sample_interval_s": opts.sample_interval,
            "locust_exports": {
                "csv_prefix": opts.csv_prefix or exports.PREFIX,
                "html": opts.html_file or exports.HTML,
            },
            "options": {k: v for k, v in sorted(vars(opts).items()) if not options.is_secret(k)},
        }

    # -- during the run ---------------------------------------------------------------
    def _on_test_start(self, environment, **_) -> None:
        # Fires before the master sends the spawn message (which carries the options to the workers).
        for dest, value in self.secrets.items():
            if getattr(self.options, dest, None) in ("", None):
                setattr(self.options, dest, value)
        if not self.options.headless:
            if not self._apply_scenario_from_form():
                gevent.spawn(environment.runner.stop)
                return
            self._apply_backend_settings_from_form()
            if not self._protocol_from_form(environment):
                return
        self.dir.meta.setdefault("test_starts_utc", []).append(time.time())
        self.dir.meta["host"] = environment.host
        self.dir.save()
        # The web UI's form sets untouched options to "" (or to a string): read the value leniently.
        at = self.options.stub_restart_at
        if at not in (None, "") and self.backend is not None:
            gevent.spawn_later(float(at), self._scheduled_restart)

    def _apply_scenario_from_form(self) -> bool:
        """A scenario picked in the web UI's form brings its knobs (the shape brings its users); False (logged,
        the test is stopped) when it is made for another target than the one this harness started."""
        opts = self.options
        if not opts.scenario or opts.scenario == self.dir.meta.get("scenario"):
            return True
        scenario = SCENARIOS[opts.scenario]
        wanted = scenario.options.get("target", targets.DEFAULT)
        if self.backend is not None and wanted != self.backend.target.name:
            logger.error(
                "scenario %s runs against --target %s, this web UI's backend is %s: start it with "
                "`locust -f locustfile.py,scenarios/shape.py --target %s`; the test is stopped before any user starts",
                scenario.name, wanted, self.backend.target.name, wanted,
            )  # fmt: skip
            opts.scenario = self.dir.meta.get("scenario") or ""
            return False
        for key, value in scenario.options.items():
            dest = key.replace("-", "_")
            if dest.startswith("stub_") and self.backend is None:
                logger.warning("scenario %s: %s applies to the embedded backend only (no --host)", scenario.name, key)
            elif hasattr(opts, dest):
                setattr(opts, dest, options.parse_value(dest, value))
        opts.drain = scenario.drain
        self.dir.meta["scenario"] = scenario.name
        self.dir.meta["options"] = {k: v for k, v in sorted(vars(opts).items()) if not options.is_secret(k)}
        logger.info("scenario %s picked in the web UI: its options apply from this test on", scenario.name)
        return True

    def _apply_backend_settings_from_form(self) -> None:
        """The embedded backend's settings as the form (or a scenario picked there) left them: restart it with them."""
        if self.backend is None:
            return
        for problem in options.settle_form_values(self.options, self.dir.meta["options"]):
            logger.error("%s; the start-up value is kept", problem)
        if self.backend.reconfigure(options.target_args(self.options), self.options.stub_fault or []):
            self.environment.host = self.backend.url
            self.dir.meta["backend"] = self.backend.describe()
            # The new process's own pre-load baseline for the leak verdict's fds and threads: the last sample
            # before this one may be of the old process while it shut down (its store and listener closed).
            self.telemetry.sample()

    def _protocol_from_form(self, environment) -> bool:
        """A --protocol typed in the web UI's form, checked before any user speaks it: refused, the test stops."""
        opts = self.options
        if not opts.protocol:
            opts.protocol = self.dir.meta["protocol"]["spec"]
        try:
            adapter = options.validate_protocol(opts, environment.locustfile, classes_to_run(environment))
        except options.OptionError as e:
            logger.error("%s: the test is stopped before any user starts", e)
            gevent.spawn(environment.runner.stop)
            return False
        self.dir.meta["protocol"] = protocols.describe(adapter, opts.protocol)
        return True

    def _on_test_stop(self, environment, **_) -> None:
        # The analysis takes the load phase to end here and the drain to follow.
        self.dir.meta.setdefault("test_stops_utc", []).append(time.time())
        self.dir.meta["user_classes"], self.dir.meta["roles"] = dict(self.max_users), self._roles()
        self.dir.save()

    def _raw_window_around(self, restart: dict) -> None:
        """Every event raw around a restart of the embedded backend: from the look-back before it until its
        storm is over (bounded by :data:`~harness.recorder.RESTART_RAW_MAX_S` while it is not)."""
        at, ready = restart["ts"], restart.get("ready_ts")
        until = ready + RESTART_RAW_AFTER_S if ready else at + RESTART_RAW_MAX_S
        self.recorder.open_window(at - RING_S, until)

    def _scheduled_restart(self) -> None:
        self.backend.restart(hard=self.options.stub_restart_kill)
        self.dir.meta["backend"] = self.backend.describe()
        self.dir.save()

    def _on_users(self, environment=None, **_) -> None:
        runner = self.environment.runner
        counts = runner.reported_user_classes_count if isinstance(runner, MasterRunner) else runner.user_classes_count
        for name, n in counts.items():
            self.max_users[name] = max(n, self.max_users.get(name, 0))

    # -- closing ----------------------------------------------------------------------
    def _on_quitting(self, environment, **_) -> None:
        if self.closed:
            return
        self.closed = True
        if self.tab is not None:
            self.tab.close()  # an analysis started by a stop in the web UI must not write into a closing run
        runner = environment.runner
        interrupted = runner.state in (STATE_RUNNING, STATE_SPAWNING)
        self._on_users()
        master = isinstance(runner, MasterRunner)
        expected = [n.id for n in runner.clients.all if n.state != "missing"] if master else []
        runner.quit()  # idempotent in Locust; makes the workers stop and flush before we close
        if isinstance(self.recorder, MasterRecorder):
            self.recorder.drain(runner, expected)
        elif isinstance(self.recorder, LocalRecorder):
            self.recorder.stop()
        self._drain(interrupted)
        self.telemetry.stop()
        if self.sys_topics is not None:
            self.sys_topics.stop()
        for sink in (self.events, self.samples, self.server_stats):
            sink.close()
        meta = self.dir.meta
        if self.backend is not None:
            code = self.backend.stop()
            meta["backend"] = {**self.backend.describe(), "exit_code": code}
        meta["backend_notes"] = self.telemetry.notes
        self._write_locust_exports()
        meta["user_classes"] = self.max_users
        meta["roles"] = self._roles()
        meta["workers"] = sorted(self.recorder.tallies) if isinstance(self.recorder, MasterRecorder) else []
        if isinstance(runner, MasterRunner):
            meta["workers"] = sorted(set(meta["workers"]) | set(expected))
        meta["recording"] = {"enabled": self.recorder is not None, **(self.recorder.summary() if self.recorder else {})}
        t = self.events
        meta["rows"] = {
            "events": t.events.rows, "tallies": t.tallies.rows, "activity": t.activity.rows,
            "samples": self.samples.rows, "server_stats": self.server_stats.rows,
        }  # fmt: skip
        self.dir.close(exit_reason=self._exit_reason(interrupted))
        logger.info("run directory closed: %s", self.dir.path)
        if self.options.verdicts:
            code = verdicts.run_analysis(self.dir.path, self.options.analyser, verdicts.analyser_args(self.options))
            environment.process_exit_code = code
            meta["verdicts_exit_code"] = code
            self.dir.save()

    def _roles(self) -> dict[str, int]:
        """The most users of each role at once (a role: the user class's ``role``; the analysis reads roles)."""
        roles: dict[str, int] = {}
        classes = {c.__name__: c for c in self.environment.user_classes or []}
        for name, n in self.max_users.items():
            role = str(getattr(classes.get(name), "role", "") or "")
            if role:
                roles[role] = roles.get(role, 0) + n
        return roles

    def _drain(self, interrupted: bool) -> None:
        """Keep sampling the backend with no load: does it give back what the run took?"""
        seconds = 0.0 if interrupted else float(self.options.drain or 0)
        self.dir.meta["drain"] = {"from_utc": time.time(), "seconds": seconds}
        if seconds > 0:
            logger.info("drain: sampling the backend for %.0f s with no load", seconds)
            gevent.sleep(seconds)

    def _write_locust_exports(self) -> None:
        try:
            if self.csv_export is not None:
                self.csv_export.finish()
            if not self.options.html_file:
                exports.write_html(self.environment, self.dir.file(exports.HTML))
        except Exception:  # the run's own files matter more than Locust's copy of the stats
            logger.exception("could not write Locust's exports into the run directory")

    def _exit_reason(self, interrupted: bool) -> str:
        opts = self.options
        if interrupted:
            return "interrupted (signal, or quit while users were running)"
        if self.environment.shape_class is not None:
            return "shape finished"
        if opts.headless and opts.run_time:
            return "run-time limit reached"
        return "stopped, then quit"


@events.init_command_line_parser.add_listener
def _on_parser(parser, **_) -> None:
    options.add_arguments(parser)


@events.init.add_listener
def _on_init(environment, runner, web_ui=None, **_) -> None:
    global current
    opts = environment.parsed_options
    if opts is None or not hasattr(opts, "run_dir"):
        return  # an Environment built by hand (tests, notebooks): the harness stays out of the way
    if isinstance(runner, WorkerRunner):
        _setup_worker(environment, opts)
        return
    if web_ui is not None:
        form.mask_secrets(web_ui)
        form.keep_multiple_choices(web_ui, opts)
    try:
        current = Run(environment).open()
    except options.OptionError as e:
        logger.error("invalid option %s", e)
        sys.stderr.write(f"locust: error: {e}\n")
        raise
    if web_ui is not None:
        from . import webui  # pandas and the analysis's functions: loaded only where there is a web UI

        current.tab = webui.ResilienceTab(current, web_ui)


def _setup_worker(environment, opts) -> None:
    WorkerRecorder(environment)
    lag.monitor.start()
    environment.events.quitting.add_listener(lambda **_: lag.monitor.stop())

    def add_process_facts(data, **_) -> None:
        data[REPORT_KEY] = own_process_facts()

    environment.events.report_to_master.add_listener(add_process_facts)
