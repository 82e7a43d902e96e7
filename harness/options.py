"""The harness's command-line options: Locust custom arguments, shown in the web UI.

Values that can be checked without side effects are checked by argparse (the
error names the option and Locust exits 2 before anything starts); checks that
touch the machine (run directory writable, ``--server-pid`` alive) are done by
:func:`validate` on the master when the run starts.
"""

from __future__ import annotations

import os
import shlex
from argparse import ArgumentTypeError
from pathlib import Path

import psutil

from analysis import thresholds
from contract.verdicts import parse_gate
from scenarios.catalog import SCENARIOS
from server_stub.config import parse_rate_limit, parse_store, positive
from server_stub.faults import Fault
from users import protocols

from . import targets
from .recorder import BUFFER_MAX
from .tally import INTERVAL_S

#: ``--stub-X`` option -> the backend's ``--X`` option, with its value parser.
STUB_PASSTHROUGH = {
    "stub_resume_window": ("--resume-window", float),
    "stub_hb_interval_ms": ("--hb-interval-ms", int),
    "stub_idle_timeout_ms": ("--idle-timeout-ms", int),
    "stub_token_ttl": ("--token-ttl", float),
    "stub_refresh_grace_ms": ("--refresh-grace-ms", int),
    "stub_chunk_delay_ms": ("--chunk-delay-ms", int),
    "stub_chunks_per_reply": ("--chunks-per-reply", int),
    "stub_max_frame_bytes": ("--max-frame-bytes", int),
    "stub_outbox_limit": ("--outbox-limit", int),
    "stub_flush_interval_ms": ("--flush-interval-ms", int),
}


#: The faults ``--stub-fault`` can plant.
FAULTS = [f.value for f in Fault]

#: The least run time left after a scheduled restart: the clients need it to come back (and be judged).
RECOVERY_S = 5.0


class OptionError(SystemExit):
    """A refused option value: the message names the option; the process exits 2."""

    def __init__(self, option: str, problem: str) -> None:
        self.option = option
        self.problem = problem
        super().__init__(2)

    def __str__(self) -> str:
        return f"{self.option}: {self.problem}"


def _checked_by(check):
    """Validate with the backend's own parser, keep the text (it is passed on as typed)."""

    def parse(text: str) -> str:
        check(text)
        return text

    parse.__name__ = "value"
    return parse


#: The parser, kept so secrets added by other plugins (after ours) are known when meta.json is written.
_PARSER = None


def add_arguments(parser) -> None:
    """Listener of ``init_command_line_parser``: every harness option."""
    global _PARSER
    _PARSER = parser  # Locust builds a parser more than once (the web UI re-parses): keep the latest
    # On the parser itself, not a group: only its add_argument knows include_in_web_ui / is_secret / is_multiple.
    g = parser
    g.add_argument("--run-dir", default="runs", help="root of the run directories (runs/<run-id>/, runs/latest)")
    g.add_argument("--run-id", default="", help="name of this run's directory (default: UTC timestamp + random)")
    g.add_argument(
        "--scenario",
        default="",
        choices=["", *SCENARIOS],
        help="a scenario of scenarios/catalog.py: its users and knobs (with scenarios/shape.py), recorded in meta.json",
    )
    g.add_argument(
        "--sample-interval",
        type=positive(float),
        default=1.0,
        metavar="S",
        help="seconds between telemetry samples (samples.csv, server_stats.csv)",
    )
    g.add_argument(
        "--server-pid",
        type=positive(int),
        default=0,
        help="pid of a backend on this machine, sampled through psutil (default: its /metrics)",
    )
    g.add_argument(
        "--no-record", action="store_true", default=False, help="do not record protocol events (benchmark baseline)"
    )
    g.add_argument(
        "--record-buffer-max",
        type=positive(int),
        default=BUFFER_MAX,
        metavar="N",
        # Not in the web UI: it bounds a worker's memory, a start-up decision; the tests lower it to force overflow.
        include_in_web_ui=False,
        help="raw event rows a worker buffers for the master; beyond this they are counted undelivered",
    )
    g.add_argument(
        "--record-interval",
        type=positive(float),
        default=INTERVAL_S,
        metavar="S",
        include_in_web_ui=False,
        help="routine outcomes (connects, resumes, heartbeats ...) are counted per this many seconds, with their "
        "latency histograms; failures and evidence are kept row by row",
    )
    g.add_argument(
        "--drain",
        type=positive(float, zero=True),
        default=10.0,
        metavar="S",
        help="seconds of telemetry after the users stop (the leak verdict's return to baseline)",
    )
    g.add_argument(
        "--verdicts", action="store_true", default=False, help="run the analysis at the end; exit with its code"
    )
    g.add_argument(
        "--thresholds",
        default="",
        metavar="FILE",
        help="verdict thresholds (TOML) for --verdicts; default the analysis's",
    )
    g.add_argument(
        "--gate", default="", metavar="NAMES", help="verdicts the --verdicts exit code is decided on (default: all)"
    )
    g.add_argument("--analyser", default="analysis", help="module run as `python -m MODULE RUN_DIR` by --verdicts")
    # The embedded backend: used when no --host is given.
    g.add_argument(
        "--target",
        default="",
        metavar="NAME",
        include_in_web_ui=False,  # a start-up decision: the backend runs before the form is shown
        help=f"backend to start when no --host is given: {', '.join(targets.TARGETS)} (default {targets.DEFAULT})",
    )
    g.add_argument(
        "--target-args",
        default="",
        metavar="ARGS",
        include_in_web_ui=False,
        help="more options for a --target's own command line, e.g. '--leak' (the stub's: the --stub-* options)",
    )
    g.add_argument(
        "--stub-store",
        type=_checked_by(parse_store),
        default=None,
        help="embedded backend's store (default: sqlite file in the run dir)",
    )
    g.add_argument(
        "--stub-fault",
        action="append",
        default=[],
        choices=FAULTS,
        is_multiple=True,
        help="plant a fault in the embedded backend (repeatable)",
    )
    g.add_argument(
        "--stub-rate-limit",
        type=_checked_by(parse_rate_limit),
        default=None,
        metavar="RATE[/BURST]",
        help="embedded backend's --rate-limit",
    )
    for dest, (flag, kind) in STUB_PASSTHROUGH.items():
        g.add_argument(
            "--" + dest.replace("_", "-"), type=positive(kind), default=None, help=f"embedded backend's {flag}"
        )
    g.add_argument(
        "--stub-restart-at",
        type=positive(float),
        default=None,
        metavar="S",
        help="restart the embedded backend S seconds after the test starts",
    )
    g.add_argument(
        "--stub-restart-kill", action="store_true", default=False, help="restart with kill -9 instead of SIGTERM"
    )


def validate(options) -> None:
    """Checks that need the machine; raises :class:`OptionError`. Run on the master/local process only."""
    if options.server_pid and not psutil.pid_exists(options.server_pid):
        raise OptionError("--server-pid", f"no process with pid {options.server_pid}")
    if options.server_pid and not options.host:
        raise OptionError("--server-pid", "needs --host (the embedded backend's pid is known already)")
    root = Path(options.run_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OptionError("--run-dir", f"cannot create {root}: {e.strerror}") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise OptionError("--run-dir", f"{root} is not writable")
    if options.run_id and ("/" in options.run_id or options.run_id in (".", "..", "latest")):
        raise OptionError("--run-id", f"{options.run_id!r} is not a plain directory name")
    if options.run_id and (root / options.run_id).exists():
        raise OptionError("--run-id", f"{root / options.run_id} already exists")
    if options.stub_restart_at is not None and options.host:
        raise OptionError("--stub-restart-at", "only the embedded backend (no --host) can be restarted")
    run_time = options.run_time or 0
    if options.scenario and run_time and run_time < SCENARIOS[options.scenario].min_seconds:
        need = SCENARIOS[options.scenario].min_seconds
        raise OptionError(
            "--run-time", f"{run_time} s cannot fit scenario {options.scenario}: it needs {need} s or more"
        )
    if options.stub_restart_at is not None and run_time and float(options.stub_restart_at) + RECOVERY_S > run_time:
        raise OptionError(
            "--stub-restart-at",
            f"{options.stub_restart_at} s leaves the clients of a {run_time} s run "
            f"less than {RECOVERY_S:.0f} s to come back",
        )
    if options.gate:
        try:
            parse_gate(options.gate)
        except ValueError as e:
            raise OptionError("--gate", str(e).removeprefix("--gate: ")) from None
    if options.thresholds:
        try:
            thresholds.load(options.thresholds)
        except thresholds.ThresholdError as e:
            raise OptionError("--thresholds", str(e)) from None
    if (options.target or options.target_args) and options.host:
        raise OptionError("--target", "starts a backend of its own: give --target or --host, not both")
    if not options.host:
        try:
            target = targets.get(options.target)
        except targets.TargetError as e:
            raise OptionError("--target", str(e)) from None
        if target.name != targets.DEFAULT and options.stub_fault:
            raise OptionError("--stub-fault", f"plants faults in the reference backend, not in --target {target.name}")
        try:
            shlex.split(options.target_args)
        except ValueError as e:
            raise OptionError("--target-args", str(e)) from None


def validate_protocol(options, locustfile: str | None, user_classes) -> type:
    """The ``--protocol`` adapter, loaded and able to serve ``user_classes``; raises :class:`OptionError`."""
    try:
        adapter = protocols.load(
            getattr(options, "protocol", "") or protocols.DEFAULT, protocols.search_path(locustfile)
        )
        protocols.check(adapter, user_classes)
    except protocols.ProtocolError as e:
        raise OptionError("--protocol", str(e)) from None
    return adapter


def target_args(options) -> list[str]:
    """The embedded backend's command line: the ``--stub-*`` options for the reference backend (store
    excluded), ``--target-args`` for another target."""
    if targets.get(options.target).program:
        return shlex.split(options.target_args or "")
    return stub_args(options)


def stub_args(options) -> list[str]:
    """The reference backend's command line from the ``--stub-*`` options (store excluded)."""
    args: list[str] = []
    for dest, (flag, _) in STUB_PASSTHROUGH.items():
        value = getattr(options, dest, None)
        if value is not None:
            args += [flag, str(value)]
    if options.stub_rate_limit:
        args += ["--rate-limit", options.stub_rate_limit]
    for fault in options.stub_fault or []:
        args += ["--fault", fault]
    return args


#: Options of the embedded backend's command line that the web UI's form can change between tests.
FORM_BACKEND_OPTIONS = (*STUB_PASSTHROUGH, "stub_rate_limit", "stub_restart_at")


def settle_form_values(options, fallback: dict) -> list[str]:
    """Parse the backend options the web UI's form posted as text ("" when left blank) as the command line would.

    A value that does not parse is put back to ``fallback[dest]`` (the value at start-up);
    the problems are returned, each naming its option.
    """
    problems = []
    for dest in FORM_BACKEND_OPTIONS:
        value = getattr(options, dest, None)
        if not isinstance(value, str):
            continue
        try:
            settled = parse_value(dest, value) if value.strip() else None
        except (ArgumentTypeError, ValueError) as e:
            problems.append(f"--{dest.replace('_', '-')}: {e}")
            settled = fallback.get(dest)
        setattr(options, dest, settled)
    faults = getattr(options, "stub_fault", None) or []
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        problems.append(f"--stub-fault: {', '.join(map(repr, unknown))} not among {', '.join(FAULTS)}")
        options.stub_fault = list(fallback.get("stub_fault") or [])
    return problems


def multiple_choice_options() -> list[str]:
    """The options the web UI's form shows as a multiple select."""
    return [a.dest for a in (_PARSER._actions if _PARSER is not None else []) if getattr(a, "is_multiple", False)]


def parse_value(dest: str, value):
    """``value`` (a scenario's setting, as written in its config file) as the option ``dest`` parses it."""
    action = next((a for a in (_PARSER._actions if _PARSER is not None else []) if a.dest == dest), None)
    if action is None:
        raise KeyError(dest)
    if action.type is None and isinstance(action.default, bool):  # a flag (store_true)
        return str(value).strip().lower() in ("1", "true", "yes", "on")
    return action.type(str(value)) if action.type is not None else str(value)


def is_secret(name: str) -> bool:
    """True for options never written to disk: Locust's ``is_secret`` ones and anything named like a credential."""
    actions = _PARSER._actions if _PARSER is not None else []
    if any(a.dest == name and getattr(a, "is_secret", False) for a in actions):
        return True
    return any(w in name for w in ("token", "secret", "password", "web_login", "tls_key"))
