"""The verdicts of DESIGN.md, judged on one run directory.

Each verdict is a function ``judge(run, thresholds) -> Verdict`` whose
docstring is its exact definition. :func:`judge_all` runs them in the order of
DESIGN.md, then lets harness health speak: an overloaded Locust process turns
passing latency verdicts inconclusive, lost events or a lost worker turn passing
event verdicts inconclusive. (Latency figures measured while the generator was
late are set aside by each latency verdict itself: see verdicts/lateness.py.)
A verdict that raises is reported inconclusive with the error: a bug in the
analysis never passes a run.
"""

from __future__ import annotations

import logging
import traceback

from contract import verdicts as contract_verdicts

from ..rundir import Run
from . import agents, health, latency, leak, liveness, messages, restart
from .base import ExitCode, Status, Verdict, inconclusive

logger = logging.getLogger(__name__)

#: (name, judge) in the order of DESIGN.md.
JUDGES = (
    (agents.NAME, agents.judge),
    (leak.NAME, leak.judge),
    (latency.NAME, latency.judge),
    (messages.DELIVERY, messages.judge_delivery),
    (messages.CONTEXT, messages.judge_context),
    (liveness.ZOMBIE, liveness.judge_zombie),
    (liveness.REFRESH, liveness.judge_refresh),
    (restart.NAME, restart.judge),
    (health.NAME, health.judge),
)
NAMES = tuple(name for name, _ in JUDGES)
assert NAMES == contract_verdicts.NAMES, "contract/verdicts.py must name every judge, in order"
#: Verdicts whose figures are times measured by the clients.
LATENCY_VERDICTS = (latency.NAME, restart.NAME)
#: Verdicts judged on the client events alone.
EVENT_VERDICTS = (
    agents.NAME,
    latency.NAME,
    messages.DELIVERY,
    messages.CONTEXT,
    liveness.ZOMBIE,
    liveness.REFRESH,
    restart.NAME,
)


def judge_all(run: Run, thresholds: dict) -> list[Verdict]:
    verdicts = {name: _judged(name, judge, run, thresholds) for name, judge in JUDGES}
    hh = verdicts[health.NAME]
    suspects = set()
    if health.overloaded(hh, thresholds):
        suspects |= set(LATENCY_VERDICTS)
    if health.events_lost(run.meta) > thresholds["harness_health"]["max_events_lost"] or health.workers_lost(run.meta):
        suspects |= set(EVENT_VERDICTS)
    for name in suspects:
        v = verdicts[name]
        if v.status is Status.PASS:
            v.status = Status.INCONCLUSIVE
            v.summary = f"would pass, but the harness was unfit to measure ({hh.summary})"
    return list(verdicts.values())


def _judged(name, judge, run: Run, thresholds: dict) -> Verdict:
    try:
        return judge(run, thresholds)
    except Exception as e:  # a bug in one verdict must not hide the others, nor pass
        logger.error("verdict %s raised:\n%s", name, traceback.format_exc())
        return inconclusive(name, f"the analysis failed on this verdict: {type(e).__name__}: {e}")


def exit_code(verdicts: list[Verdict], gate: tuple[str, ...] = NAMES) -> int:
    """The outcome over the verdicts in ``gate`` (a scenario gates on the verdicts it is built to answer)."""
    statuses = {v.status for v in verdicts if v.name in gate}
    if Status.FAIL in statuses:
        return ExitCode.FAIL
    if Status.INCONCLUSIVE in statuses:
        return ExitCode.INCONCLUSIVE
    return ExitCode.PASS


__all__ = ["JUDGES", "NAMES", "ExitCode", "Status", "Verdict", "exit_code", "judge_all"]
