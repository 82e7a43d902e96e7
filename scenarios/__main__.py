"""``python -m scenarios [list | write | show NAME]``: the scenario catalog and its config files."""

from __future__ import annotations

import sys
from pathlib import Path

from .catalog import SCENARIOS, UnknownScenario, get

HERE = Path(__file__).parent


def config_text(name: str) -> str:
    s = get(name)
    lines = [
        f"# {s.name}: {s.question}",
        f"# seed: {s.seed}",
        f"# passes when: {s.criteria}",
        "# Generated from scenarios/catalog.py by `python -m scenarios write`: edit the catalog, not this file.",
        f"# Run: .venv/bin/locust --config scenarios/{s.name}.conf   (command-line options override these)",
    ]
    lines += [f"{key} = {value}" for key, value in s.config().items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "list"
    if command == "list":
        for s in SCENARIOS.values():
            print(f"{s.name:20} {s.seconds:>5} s  {s.question}")
        return 0
    if command == "write":
        for name in SCENARIOS:
            (HERE / f"{name}.conf").write_text(config_text(name))
        print(f"wrote {len(SCENARIOS)} config files into {HERE}")
        return 0
    if command == "show" and len(argv) == 2:
        try:
            print(config_text(argv[1]), end="")
        except UnknownScenario as e:
            print(f"scenarios: {e}", file=sys.stderr)
            return 2
        return 0
    print("usage: python -m scenarios [list | write | show NAME]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
