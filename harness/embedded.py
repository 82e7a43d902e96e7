"""The embedded backend: the ``--target`` (``server_stub`` by default) started by the master when no ``--host``
is given (:mod:`harness.targets`).

It listens on a free loopback port, keeps its log in the run directory (the
reference backend its store too: a SQLite file there unless ``--stub-store`` says
otherwise), and every user is aimed at it through ``environment.host`` (which
Locust's spawn message carries to the workers). :func:`restart` restarts it on
the same port and store; each restart is kept in :attr:`EmbeddedBackend.restarts`
and lands in ``meta.json``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from server_stub.process import StubProcess

from .processes import TargetProcess
from .targets import DEFAULT, TARGETS, Target

logger = logging.getLogger(__name__)

#: The running embedded backend of this process, if any (see :func:`restart`).
current: EmbeddedBackend | None = None


class EmbeddedBackend:
    def __init__(
        self, run_dir: Path, store: str, args: list[str], faults: list[str], target: Target = TARGETS[DEFAULT]
    ) -> None:
        self.target = target
        self.store = (store or f"sqlite:{run_dir / 'backend.db'}") if target.store else ""
        self.faults = list(faults)
        self.listen = ["--host", "127.0.0.1", "--port", "0", *(["--store", self.store] if self.store else [])]
        log = run_dir / "backend.log"
        if target.process is not None:
            self.stub = target.process(target, *self.listen, *args, log_path=log)
        elif target.program:
            self.stub = TargetProcess(target, *self.listen, *args, log_path=log)
        else:
            self.stub = StubProcess(*self.listen, *args, log_path=log)
        self.restarts: list[dict] = []
        #: called with a restart's record as it begins (no ``ready_ts`` yet) and once it is over
        self.restart_observers: list[Callable[[dict], None]] = []
        self.reconfigured: list[dict] = []  #: settings changed between tests (web UI); not restarts under load
        self.pids: list[int] = []

    def start(self) -> EmbeddedBackend:
        global current
        self.stub.start()
        self.pids.append(self.stub.pid)
        current = self
        logger.info(
            "embedded backend %s: pid %d at %s%s",
            self.target.name, self.stub.pid, self.stub.url, f" (store {self.store})" if self.store else "",
        )  # fmt: skip
        return self

    @property
    def url(self) -> str:
        return self.stub.url

    @property
    def pid(self) -> int | None:
        """The latest pid (also after it died: telemetry then records it as gone), None before it started."""
        return self.stub.pid if self.stub.info else None

    @property
    def admin_token(self) -> str:
        return self.stub.admin_token

    def restart(self, hard: bool = False) -> dict:
        """Stop it (SIGTERM, or kill -9 with ``hard``) and start it again on the same port and store."""
        entry = {"ts": time.time(), "hard": hard, "old_pid": self.stub.pid, "new_pid": None, "ok": False}
        self.restarts.append(entry)
        self._tell(entry)
        logger.info("restarting the embedded backend (%s)", "kill -9" if hard else "SIGTERM")
        try:
            self.stub.restart(hard=hard)
            entry.update(new_pid=self.stub.pid, ok=True, ready_ts=time.time())
            self.pids.append(self.stub.pid)
        except Exception as e:
            entry["error"] = first_and_last_line(str(e))
            logger.error("embedded backend did not come back: %s", e)
        self._tell(entry)
        return entry

    def _tell(self, entry: dict) -> None:
        for observe in self.restart_observers:
            try:
                observe(dict(entry))
            except Exception:  # an observer must not stop the restart
                logger.exception("a restart observer failed")

    def reconfigure(self, args: list[str], faults: list[str]) -> bool:
        """Start it again (same port and store) with other settings; False when ``args`` are those it runs with.

        For settings changed in the web UI between tests, when no user is connected:
        the restart verdict does not judge it (it is not in :attr:`restarts`).
        """
        wanted = [*self.listen, *args]
        if wanted == self.stub.args:
            return False
        logger.info("restarting the embedded backend with %s", " ".join(args) or "its defaults")
        previous = self.stub.args, self.faults
        self.stub.args, self.faults = wanted, list(faults)
        try:
            self.stub.restart()
            changed = True
        except Exception as e:
            logger.error("the embedded backend did not start with %s (%s): back to its previous settings", args, e)
            self.stub.args, self.faults = previous
            self.stub.start()
            changed = False
        self.pids.append(self.stub.pid)
        if changed:
            self.reconfigured.append({"ts": time.time(), "args": list(args), "pid": self.stub.pid})
        return changed

    def stop(self) -> int | None:
        global current
        code = self.stub.stop()
        if self.stub.proc is not None and self.stub.proc.stdout is not None:
            self.stub.proc.stdout.close()
        if current is self:
            current = None
        return code

    def describe(self) -> dict:
        return {
            "embedded": True,
            "target": self.target.name,
            "url": self.stub.url if self.stub.info else None,
            "pid": self.pids[0] if self.pids else None,
            "pids": self.pids,
            "store": self.store,
            "faults": self.faults,
            "args": [a for a in self.stub.args],
            "log": "backend.log",
            "restarts": self.restarts,
            "reconfigured": self.reconfigured,
            # what it keeps for returning clients, and how long: memory the leak verdict does not call held before
            "retention": getattr(self.stub, "retention", None),
        }


def first_and_last_line(text: str) -> str:
    """A failure in one line: its first (what failed, where its log is) and its last (a traceback's error)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()] or ["no message"]
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"


def restart(hard: bool = False) -> dict:
    """Restart this process's embedded backend (the restart scenario's hook); returns the restart record."""
    if current is None:
        raise RuntimeError("no embedded backend is running in this process (is --host set?)")
    return current.restart(hard=hard)
