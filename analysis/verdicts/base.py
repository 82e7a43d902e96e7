"""What a verdict is: a status, the figure it was judged on, and the evidence."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

import pandas as pd

#: Evidence rows kept per verdict (the worst or first ones); the count is in ``details``.
MAX_EVIDENCE = 20


class Status(StrEnum):
    """A verdict's outcome. Only ``pass`` and ``skipped`` let a CI gate through."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"  #: exercised, but the run holds too little evidence to judge
    SKIPPED = "skipped"  #: not exercised by this run at all (no such users, no restart)


class ExitCode:
    """``python -m analysis`` exit codes."""

    PASS = 0  #: every verdict passed (or was skipped)
    FAIL = 1  #: at least one verdict failed
    CANNOT_ANALYSE = 2  #: bad usage: no such directory, a bad thresholds file
    INCONCLUSIVE = 3  #: nothing failed, but at least one verdict is inconclusive


@dataclass
class Verdict:
    """One verdict of DESIGN.md, judged on one run."""

    name: str
    status: Status
    summary: str  #: one line: why this status
    figure: float | None = None  #: the number judged
    unit: str = ""
    threshold: float | None = None
    n: int = 0  #: observations behind the figure
    bound: float | None = None  #: a confidence bound on the figure, where one applies
    bound_label: str = ""  #: what the bound is ("95 % upper bound of p99")
    evidence: list[dict] = field(default_factory=list)  #: which sessions, when (first or worst rows)
    details: dict = field(default_factory=dict)  #: sub-figures

    def to_json(self) -> dict:
        out = asdict(self)
        out["status"] = str(self.status)
        return _jsonable(out)


def skipped(name: str, why: str) -> Verdict:
    return Verdict(name, Status.SKIPPED, why)


def inconclusive(name: str, why: str, **figures) -> Verdict:
    return Verdict(name, Status.INCONCLUSIVE, why, **figures)


def evidence_rows(events: pd.DataFrame, columns=("ts", "user", "session", "kind", "code", "detail")) -> list[dict]:
    """The first :data:`MAX_EVIDENCE` events as evidence rows, times in UTC ISO."""
    rows = events.head(MAX_EVIDENCE)
    cols = [c for c in columns if c in rows]
    return [_row(r) for r in rows[cols].to_dict("records")]


def _row(record: dict) -> dict:
    out = {}
    for k, v in record.items():
        if isinstance(v, float) and math.isnan(v):
            continue
        if k == "ts":
            out["time"] = utc(v)
        elif v != "":
            out[k] = v
    return out


def format_figure(value, unit: str = "", missing: str = "-") -> str:
    """A figure as the verdict table shows it: 3 significant digits, thousands separated, unit after."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    if isinstance(value, float) and math.isinf(value):
        text = "never back"
    elif isinstance(value, float):
        text = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def utc(ts: float) -> str:
    return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _jsonable(value):
    """NaN and infinities become null; numpy scalars plain numbers (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
