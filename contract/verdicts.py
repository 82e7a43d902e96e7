"""The verdicts' names, in DESIGN.md's order: what ``--gate`` may name, for the harness and the analysis alike.

Light on purpose: a Locust process checks ``--gate`` at start-up without loading the analysis
(pandas, scipy, matplotlib); ``analysis.verdicts`` checks that its judges carry these names.
"""

from __future__ import annotations

NAMES = (
    "duplicate-agent",
    "leak",
    "reconnect-latency",
    "delivery",
    "context",
    "zombie",
    "refresh",
    "restart",
    "harness-health",
)


def parse_gate(text: str | None) -> tuple[str, ...]:
    """``--gate`` names, checked: a typo must not quietly leave a verdict out of the gate."""
    if not text:
        return NAMES
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in NAMES]
    if unknown or not names:
        raise ValueError(
            f"--gate: unknown verdict(s) {', '.join(unknown) or '(none given)'} (known: {', '.join(NAMES)})"
        )
    return names
