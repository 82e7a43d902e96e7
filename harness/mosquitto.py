"""The ``mosquitto`` target: an Eclipse Mosquitto broker (Debian's package) the harness configures and runs itself.

With ``--target mosquitto`` and no ``--host`` the master writes ``broker/mosquitto.conf``
into the run directory (a websockets listener on a free port, the plain listener
mosquitto will not start without, both on loopback as far as mosquitto 2.0.11
lets: it binds its websockets listener on every interface whatever the config says;
persistence in ``broker/``), starts the broker as the user running the harness,
and stops or restarts it (SIGTERM, or kill -9) on the same ports and store.

Its own options (``--target-args``) are the settings that decide the verdicts:

| option | mosquitto setting | default |
|---|---|---|
| ``--max-queued-messages N`` | ``max_queued_messages`` | 1000 (mosquitto's) |
| ``--persistence true/false`` | ``persistence`` | true |
| ``--autosave-interval S`` | ``autosave_interval`` | 1800 (mosquitto's) |
| ``--sys-interval S`` | ``sys_interval`` ($SYS updates) | 1 |
| ``--password-file PATH`` | ``password_file`` + ``allow_anonymous false`` | anonymous allowed |
| ``--max-keepalive S`` | ``max_keepalive`` | mosquitto's |
"""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from server_stub.process import StubError, StubProcess

from .processes import die_with_parent, free_port

PROGRAM = "mosquitto"
WS_PATH = "/mqtt"


def program() -> str | None:
    """The broker's executable (Debian installs it in /usr/sbin, not always on a user's PATH)."""
    return shutil.which(PROGRAM) or next((p for p in ("/usr/sbin/mosquitto",) if os.path.exists(p)), None)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="--target mosquitto", add_help=False, exit_on_error=False)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--max-queued-messages", type=int, default=None)
    p.add_argument("--persistence", choices=("true", "false"), default="true")
    p.add_argument("--autosave-interval", type=int, default=None)
    p.add_argument("--sys-interval", type=int, default=1)
    p.add_argument("--password-file", default="")
    p.add_argument("--max-keepalive", type=int, default=None)
    return p


def config_text(options: argparse.Namespace, ws_port: int, plain_port: int, store: Path) -> str:
    """The broker's configuration: one line per setting, each one the harness chose or was told."""
    lines = [
        f"user {getpass.getuser()}",  # as the harness's user: it may write the run directory, and dies with it
        f"listener {plain_port} 127.0.0.1",
        f"listener {ws_port} 127.0.0.1",
        "protocol websockets",
        f"persistence {options.persistence}",
        f"persistence_location {store}/",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "connection_messages false",
        f"sys_interval {options.sys_interval}",
    ]
    if options.password_file:
        lines += [f"password_file {Path(options.password_file).resolve()}", "allow_anonymous false"]
    else:
        lines.append("allow_anonymous true")
    if options.max_queued_messages is not None:
        lines.append(f"max_queued_messages {options.max_queued_messages}")
    if options.autosave_interval is not None:
        lines.append(f"autosave_interval {options.autosave_interval}")
    if options.max_keepalive is not None:
        lines.append(f"max_keepalive {options.max_keepalive}")
    return "\n".join(lines) + "\n"


class MosquittoProcess(StubProcess):
    """A mosquitto broker run like the other targets: own process group, ready when its port answers."""

    def __init__(self, target, *args: str, log_path: Path) -> None:
        super().__init__(*args, log_path=log_path)
        self.target = target
        self.directory = Path(log_path).parent / "broker"
        self.plain_port: int | None = None

    def options(self) -> argparse.Namespace:
        try:
            options, unknown = _parser().parse_known_args(self.args)
        except argparse.ArgumentError as e:
            raise StubError(f"--target mosquitto: {e}") from None
        if unknown:
            raise StubError(f"--target mosquitto does not take {' '.join(unknown)}")
        return options

    def start(self, timeout: float = 15.0) -> MosquittoProcess:
        exe = program()
        if exe is None:
            raise StubError("mosquitto is not installed (bin/setup installs Debian's package)")
        options = self.options()
        self.port = self.port or options.port or free_port()
        self.plain_port = self.plain_port or free_port()
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "mosquitto.conf"
        conf.write_text(config_text(options, self.port, self.plain_port, self.directory))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [exe, "-c", str(conf)],
                stdout=subprocess.DEVNULL,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        self._wait_listening(timeout)
        self.info = {
            "url": f"http://127.0.0.1:{self.port}",
            "ws_url": f"ws://127.0.0.1:{self.port}{WS_PATH}",
            "pid": self.proc.pid,
            "plain_port": self.plain_port,
        }
        return self

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        code = self.proc.poll()
        self.kill()
        tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
        why = f"exited with {code}" if code is not None else f"not listening within {timeout:.0f} s"
        raise StubError(f"mosquitto {why}; log {self.log_path}:\n{tail}")

    def restart(self, *, hard: bool = False, timeout: float = 15.0) -> MosquittoProcess:
        self.kill() if hard else self.stop()
        self.restarts += 1
        return self.start(timeout)

    def close(self) -> None:
        self.stop()

    @property
    def ws_url(self) -> str:
        return str(self.info.get("ws_url") or "")

    def stats(self, timeout: float = 5.0) -> dict:
        raise StubError("mosquitto has no /stats: its figures come from $SYS (harness/mqtt_sys.py)")
