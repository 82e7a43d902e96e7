"""``python -m analysis RUN_DIR [--thresholds FILE] [--baseline OTHER_RUN_DIR]``.

Writes ``verdicts.json`` and ``report.html`` into RUN_DIR (each atomically:
a reader never sees half a file), prints the verdict table, and exits with
:class:`analysis.verdicts.ExitCode`: 0 every verdict passed or was skipped,
1 a verdict failed, 3 none failed but one is inconclusive, 2 nothing could be
analysed (no such directory, a bad thresholds file).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from contract.verdicts import parse_gate

from . import report, thresholds
from .rundir import NotARunDirectory, Run, load
from .verdicts import NAMES, ExitCode, Status, Verdict, exit_code, judge_all
from .verdicts.base import format_figure

logger = logging.getLogger("analysis")

VERDICTS_FILE = "verdicts.json"
REPORT_FILE = "report.html"
SCHEMA = "agentws-verdicts/1"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Judge a run directory: verdicts.json, report.html and a verdict table. "
        "Exit 0 all pass, 1 a verdict failed, 3 inconclusive (never a pass), 2 cannot analyse.",
    )
    ap.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (runs/<run-id>, or runs/latest)")
    ap.add_argument("--thresholds", metavar="FILE", help="TOML file overriding analysis/thresholds.toml")
    ap.add_argument("--baseline", metavar="OTHER_RUN_DIR", help="a previous run to compare against in the report")
    ap.add_argument("--no-report", action="store_true", help="verdicts only (no report.html)")
    ap.add_argument(
        "--gate",
        metavar="NAMES",
        help="comma-separated verdicts the exit code is decided on (default: all); the others are still reported",
    )
    ap.add_argument("--json", action="store_true", help="print verdicts.json instead of the table")
    ap.add_argument(
        "--so-far",
        metavar="FILE",
        help="the run is still going (the web UI's live verdicts): judge what is recorded so far, write the "
        "verdicts document to FILE, not verdicts.json; no report",
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    try:
        th = thresholds.load(args.thresholds)
        gate = parse_gate(args.gate)
        run = load(args.run_dir, in_progress=bool(args.so_far))
        baseline = load(args.baseline) if args.baseline else None
    except (thresholds.ThresholdError, NotARunDirectory, ValueError) as e:
        print(f"analysis: {e}", file=sys.stderr)
        return ExitCode.CANNOT_ANALYSE
    verdicts = judge_all(run, th)
    base_verdicts = judge_all(baseline, th) if baseline is not None else None
    code = exit_code(verdicts, gate)
    document = verdicts_document(run, verdicts, th, code, baseline) | {"gate": list(gate)}
    if args.so_far:
        try:
            write_atomically(Path(args.so_far), json.dumps(document | {"so_far": True}, allow_nan=False) + "\n")
        except OSError as e:
            print(f"analysis: cannot write {args.so_far}: {e}", file=sys.stderr)
            return ExitCode.CANNOT_ANALYSE
        return code
    try:
        write_atomically(run.path / VERDICTS_FILE, json.dumps(document, indent=1, allow_nan=False) + "\n")
        if not args.no_report:
            html = report.render(run, verdicts, th, baseline=(baseline, base_verdicts) if baseline else None)
            write_atomically(run.path / REPORT_FILE, html)
    except OSError as e:
        print(f"analysis: cannot write into {run.path}: {e}", file=sys.stderr)
        return ExitCode.CANNOT_ANALYSE
    if args.json:
        print(json.dumps(document, indent=1))
    else:
        print(table(run, verdicts, base_verdicts, gate))
        print(f"\n{_outcome(code)} in {time.perf_counter() - started:.1f} s")
        print(f"verdicts: {run.path / VERDICTS_FILE}")
        if not args.no_report:
            print(f"report:   {run.path / REPORT_FILE}")
    return code


def verdicts_document(run: Run, verdicts: list[Verdict], th: dict, code: int, baseline: Run | None) -> dict:
    return {
        "schema": SCHEMA,
        "run_id": run.run_id,
        "scenario": run.meta.get("scenario"),
        "status": _overall(code),
        "exit_code": code,
        "input_problems": [str(p) for p in run.problems],
        "thresholds": th,
        "baseline": baseline.run_id if baseline else None,
        "verdicts": [v.to_json() for v in verdicts],
    }


def table(run: Run, verdicts: list[Verdict], baseline: list[Verdict] | None = None, gate=NAMES) -> str:
    """The verdict table as plain text: status, figure vs threshold, n, and why."""
    rows = [("verdict", "status", "figure", "threshold", "n", "why")]
    base = {v.name: v for v in baseline or []}
    for v in verdicts:
        figure = format_figure(v.figure, v.unit)
        if v.name in base and base[v.name].figure is not None and v.figure is not None:
            figure += f" (base {format_figure(base[v.name].figure, '')})"
        status = v.status.upper() if v.name in gate else f"({v.status}, not gated)"
        rows.append((v.name, status, figure, format_figure(v.threshold, ""), str(v.n), v.summary))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [f"run {run.run_id}" + (f"  ({len(run.problems)} input problem(s))" if run.problems else "")]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5] for r in rows]
    lines.insert(2, "-" * min(160, sum(widths) + 12))
    for p in run.problems:
        lines.append(f"input problem: {p}")
    return "\n".join(lines)


def _overall(code: int) -> str:
    return {ExitCode.PASS: Status.PASS, ExitCode.FAIL: Status.FAIL}.get(code, Status.INCONCLUSIVE).value


def _outcome(code: int) -> str:
    return {
        ExitCode.PASS: "PASS: every gated verdict passed",
        ExitCode.FAIL: "FAIL: at least one verdict failed",
        ExitCode.INCONCLUSIVE: "INCONCLUSIVE: nothing failed, but not every verdict could be judged (exit 3)",
    }[code]


def write_atomically(path: Path, text: str) -> None:
    """Write next to ``path`` and rename over it: the file is either the old one or the whole new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a report is for everyone who can read the run
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
