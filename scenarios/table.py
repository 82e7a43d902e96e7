"""The scenarios README's table, from the catalog (``python -m scenarios.table``; a test checks it is current)."""

from __future__ import annotations

from scenarios.catalog import SCENARIOS


def markdown() -> str:
    rows = ["| scenario | seed test it reproduces | passes when (gated verdicts) | run |", "|---|---|---|---|"]
    for s in SCENARIOS.values():
        gate = ", ".join(s.gate) if s.gate else "all nine"
        rows.append(f"| `{s.name}` | {s.seed} | {s.criteria} (gate: {gate}) | {s.users} users, {s.seconds} s |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown())
