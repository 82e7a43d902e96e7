"""Verdict thresholds: the defaults in ``thresholds.toml``, overridden by a user's file.

One place for every number a verdict compares against. The analysis writes the
thresholds in force into ``verdicts.json``, so a verdict can be re-read later
against the numbers it was judged by.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

DEFAULTS_FILE = Path(__file__).with_name("thresholds.toml")

Thresholds = dict[str, dict[str, float]]


class ThresholdError(ValueError):
    """A thresholds file that cannot be used; the message names the file and the key."""


def defaults() -> Thresholds:
    with DEFAULTS_FILE.open("rb") as f:
        return tomllib.load(f)


def load(file: str | Path | None = None) -> Thresholds:
    """The defaults, with the values of ``file`` (a TOML file of the same layout) put over them."""
    merged = defaults()
    if file is None:
        return merged
    path = Path(file)
    try:
        with path.open("rb") as f:
            overrides = tomllib.load(f)
    except FileNotFoundError:
        raise ThresholdError(f"{path}: no such thresholds file") from None
    except OSError as e:
        raise ThresholdError(f"{path}: cannot read ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise ThresholdError(f"{path}: not valid TOML ({e})") from None
    for section, values in overrides.items():
        if section not in merged:
            raise ThresholdError(f"{path}: unknown section [{section}] (known: {', '.join(merged)})")
        if not isinstance(values, dict):
            raise ThresholdError(f"{path}: [{section}] must be a table of numbers")
        for key, value in values.items():
            if key not in merged[section]:
                known = ", ".join(merged[section])
                raise ThresholdError(f"{path}: unknown key {section}.{key} (known in [{section}]: {known})")
            merged[section][key] = _number(path, f"{section}.{key}", value)
    return merged


def _number(path: Path, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ThresholdError(f"{path}: {key} must be a number, not {value!r}")
    if value < 0:
        raise ThresholdError(f"{path}: {key} must be 0 or more, not {value}")
    return value
