"""Targets: the backends the harness starts itself when no ``--host`` is given (``--target NAME``).

A target is a program that listens on loopback, announces itself with one JSON
line on stdout (``{"url", "pid", ...}``; an ``admin_token`` if it makes its own),
and takes ``--host``, ``--port`` and ``--parent-pid`` (it exits when that process
is gone). The harness starts it with its log in the run directory, restarts it
(SIGTERM, or kill -9) on the same port, stops it, and
samples it: psutil on its pid, and whatever it serves of ``/stats`` and ``/metrics``.

| target | what | protocol |
|---|---|---|
| ``stub`` | the reference backend (``server_stub``), every planted fault (``--stub-fault``) | agentws |
| ``node-ws`` | a Node.js backend on the ``ws`` library (``targets/node-ws``; ``--leak``) | agentws |
| ``chatline`` | docs/ADAPTERS.md's example, a JSON dialect of its own (``--lose-while-away``) | its adapter |
| ``socketio`` | the reference Socket.IO app (``targets/socketio``, :mod:`harness.socketio`) | socketio |
| ``mosquitto`` | Eclipse Mosquitto from Debian's package, configured by the harness (:mod:`harness.mosquitto`) | mqtt |

``--target-args`` passes more options to a target's own command line (the stub's
come from the ``--stub-*`` options).
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from . import mosquitto, socketio

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = "stub"


@dataclass(frozen=True)
class Target:
    name: str
    summary: str
    protocol: str  #: the ``--protocol`` it speaks (a built-in name or module:Class)
    program: tuple[str, ...] = ()  #: its command line before the options; () for the reference backend
    needs: tuple[str, ...] = ()  #: files (relative to the repository) it cannot start without
    store: bool = False  #: takes ``--store`` (the reference backend's session store)
    process: type | None = None  #: how it is run, when not as a program announcing itself (TargetProcess)

    def missing(self) -> list[str]:
        """What this machine lacks to start it: the program, or files ``bin/setup`` puts in place."""
        lacking = [p for p in self.needs if not (ROOT / p).exists()]
        if self.program and shutil.which(self.program[0]) is None and not Path(self.program[0]).exists():
            lacking.insert(0, self.program[0])
        return lacking


TARGETS = {
    t.name: t
    for t in (
        Target("stub", "the reference backend (server_stub, agentws/1)", "agentws", store=True),
        Target(
            "node-ws",
            "a Node.js backend on the ws library (targets/node-ws)",
            "agentws",
            program=("node", "targets/node-ws/server.js"),
            needs=("targets/node-ws/node_modules/ws/package.json",),
        ),
        Target(
            "chatline",
            "docs/ADAPTERS.md's example: a JSON chat dialect with a server-driven heartbeat",
            "examples.chatline.adapter:Chatline",
            program=(sys.executable, "examples/chatline/server.py"),
        ),
        Target(
            "socketio",
            "the reference Socket.IO application (targets/socketio, npm socket.io) with connection state recovery",
            "socketio",
            program=socketio.PROGRAM,
            needs=socketio.NEEDS,
            process=socketio.SocketIOProcess,
        ),
        Target(
            "mosquitto",
            "Eclipse Mosquitto (Debian's package): MQTT over WebSocket, configured by the harness",
            "mqtt",
            program=(mosquitto.program() or mosquitto.PROGRAM,),
            process=mosquitto.MosquittoProcess,
        ),
    )
}


class TargetError(ValueError):
    """A ``--target`` that cannot be started here; the message names why."""


def get(name: str) -> Target:
    target = TARGETS.get(name or DEFAULT)
    if target is None:
        raise TargetError(f"{name!r} is not a target ({', '.join(TARGETS)}); or give --host for a running backend")
    missing = target.missing()
    if missing:
        raise TargetError(f"{target.name} needs {', '.join(missing)} (bin/setup installs what the tests use)")
    return target
