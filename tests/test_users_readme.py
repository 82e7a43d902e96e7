"""users/README.md's option table is generated from users/options.py and must stay in step with it.

Regenerate it with ``python -m tests.test_users_readme`` and paste it between the markers.
users/options.py is read with ``ast``, not imported: importing it imports Locust,
which monkey-patches this process with gevent (see tests/test_users_plugin.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OPTIONS = ROOT / "users" / "options.py"
README = ROOT / "users" / "README.md"
BEGIN, END = "<!-- options:begin -->", "<!-- options:end -->"


def _defaults(tree: ast.Module) -> dict[str, object]:
    settings = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    constants = {  # module-level NAME = literal, the defaults Settings names
        n.targets[0].id: ast.literal_eval(n.value)
        for n in tree.body
        if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name) and isinstance(n.value, ast.Constant)
    }
    defaults = {}
    for node in settings.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            value = node.value
            defaults[node.target.id] = constants[value.id] if isinstance(value, ast.Name) else ast.literal_eval(value)
    return defaults


def _arguments(tree: ast.Module) -> list[tuple[str, str]]:
    """(option, help) of every ``arg(...)`` call, in the order the web UI shows them."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "arg":
            name, _, help_ = (ast.literal_eval(a) if isinstance(a, ast.Constant) else None for a in node.args[:3])
            found.append((name, help_))
    return found


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if value == "":
        return '`""`'
    return f"`{value}`"


def options_table() -> str:
    tree = ast.parse(OPTIONS.read_text())
    defaults = _defaults(tree)
    rows = ["| Option | Default | What it does |", "|---|---|---|"]
    for name, help_ in _arguments(tree):
        field = name.removeprefix("--").replace("-", "_")
        rows.append(f"| `{name}` | {_show(defaults[field])} | {help_.replace('|', '/')} |")
    return "\n".join(rows)


def test_readme_lists_every_option_with_its_default():
    text = README.read_text()
    assert BEGIN in text and END in text, "users/README.md lost its option table markers"
    table = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert table == options_table(), "users/README.md is stale: run python -m tests.test_users_readme"


def test_every_setting_is_an_option():
    tree = ast.parse(OPTIONS.read_text())
    options = {name.removeprefix("--").replace("-", "_") for name, _ in _arguments(tree)}
    assert options == set(_defaults(tree))


if __name__ == "__main__":
    print(options_table())
