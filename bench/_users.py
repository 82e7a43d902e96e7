"""What the users' benchmarks share (bench_users_mqtt.py, bench_users_socketio.py), under Locust's gevent
patching: the options namespace of a run, completed flapping cycles, the process's idle CPU. Kept out of
``_common.py``, which benchmarks that never import Locust load too."""

from __future__ import annotations

import argparse
import sys
import time
import types
from pathlib import Path

import gevent
import locust  # noqa: F401  (gevent monkey-patching, as in a worker)

from contract.events import RequestName
from users.options import Settings


def bare_harness() -> None:
    """Let ``harness.<module>`` (targets, mosquitto, socketio) import without ``harness/__init__.py``, which loads
    the harness's Locust plugin: an empty package in its place keeps a benchmark's process users only."""
    package = types.ModuleType("harness")
    package.__path__ = [str(Path(__file__).resolve().parent.parent / "harness")]
    sys.modules.setdefault("harness", package)


class Cycles:
    """Completed flapping cycles: successful ``connect`` and ``reconnect`` request events; failures by name."""

    def __init__(self, environment) -> None:
        self.done = 0
        self.failures: dict[str, int] = {}
        environment.events.request.add_listener(self._on_request)

    def _on_request(self, name, exception=None, **_) -> None:
        if exception is not None:
            self.failures[name] = self.failures.get(name, 0) + 1
        elif name in (RequestName.CONNECT, RequestName.RECONNECT):
            self.done += 1


def options(**overrides) -> argparse.Namespace:
    """The parsed options of a run: every Settings default, ``overrides`` on top."""
    return argparse.Namespace(**{**Settings().__dict__, **overrides})


def idle_cpu_ms_per_s(seconds: float = 2.0) -> float:
    """This process's CPU per second while it only waits (the hub, Locust's import-time greenlets)."""
    t0, w0 = time.process_time(), time.monotonic()
    gevent.sleep(seconds)
    return (time.process_time() - t0) / (time.monotonic() - w0) * 1000
