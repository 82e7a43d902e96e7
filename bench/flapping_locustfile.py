"""The locustfile of the whole-process flapping measurement (bench/_flapping.py): FlappingUser alone.

No ``harness`` import: the process holds the users and Locust only, so its CPU is the client's cycle
(``users.recording.emit`` included, with nobody listening unless ``BENCH_FLAP_EVENTS`` asks for a counter).
It is imported from ``PYTHONPATH`` (the tree measured: ``bench._flapping.locust_run``'s ``root``).
At the end it writes the completed cycles and the failures, as JSON, to the file ``BENCH_FLAP_OUT`` names.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from locust import events

from bench._users import Cycles
from users.flapping import FlappingUser
from users.recording import protocol_events

__all__ = ["FlappingUser"]

_cycles: Cycles | None = None
_events = {"n": 0}


@events.init.add_listener
def _count(environment, **_) -> None:
    global _cycles
    _cycles = Cycles(environment)
    if os.environ.get("BENCH_FLAP_EVENTS"):  # one listener on the protocol events: what a recorder's call costs
        protocol_events(environment).add_listener(_on_event)


def _on_event(event, **_) -> None:
    _events["n"] += 1


@events.quitting.add_listener
def _write(environment, **_) -> None:
    out = os.environ.get("BENCH_FLAP_OUT")
    if out and _cycles is not None:
        stats = environment.stats.total
        figures = {"cycles": _cycles.done, "failures": _cycles.failures, "requests": stats.num_requests}
        figures["events"] = _events["n"]
        Path(out).write_text(json.dumps(figures))
