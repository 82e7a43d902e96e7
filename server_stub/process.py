"""Run the reference backend as a child process: start, wait for ready, stop, kill, restart.

Used by the tests and by the harness's embedded backend. The child runs in its
own process group, announces itself with one JSON line on stdout, and is
given its admin token and signing secret through the environment (never the
command line, which every user of the machine can read).
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from .config import ADMIN_TOKEN_ENV, JWT_SECRET_ENV

ROOT = Path(__file__).resolve().parent.parent


class StubError(RuntimeError):
    pass


class StubProcess:
    """A ``python -m server_stub`` child. ``args`` are its command-line options.

    With ``--tls-cert``/``--tls-key`` among them it serves https/wss; ``cafile``
    (typically that same self-signed certificate) is what :meth:`stats` and
    :meth:`token` trust then.
    """

    def __init__(
        self,
        *args: str,
        python: str = sys.executable,
        log_path: str | os.PathLike | None = None,
        cafile: str | os.PathLike | None = None,
    ) -> None:
        self.args = list(args)
        self.cafile = str(cafile) if cafile else None
        self._ssl: ssl.SSLContext | None = None
        self.python = python
        self.admin_token = secrets.token_urlsafe(18)
        self.jwt_secret = secrets.token_urlsafe(32)
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="server_stub-", suffix=".log")[1])
        self.proc: subprocess.Popen | None = None
        self.info: dict = {}
        self.port: int | None = None
        self.restarts = 0

    # -- lifecycle ----------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> StubProcess:
        args = list(self.args)
        if self.port is not None:  # a restart comes back on the same port
            args = [a for a in _without_option(args, "--port")] + ["--port", str(self.port)]
        env = {
            **os.environ,
            ADMIN_TOKEN_ENV: self.admin_token,
            JWT_SECRET_ENV: self.jwt_secret,
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command(args),
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
        log.close()
        line = self._read_line(timeout)
        try:
            self.info = json.loads(line)
        except ValueError:
            self.kill()
            raise StubError(
                f"server_stub printed {line!r} instead of its listening line; log: {self.log_path}"
            ) from None
        self.port = urlsplit(self.info["url"]).port  # http:// or https://
        return self

    def command(self, args: list[str]) -> list[str]:
        """The child's command line with ``args``; a subclass runs another program the same way."""
        # Its own process group keeps it out of our signals; --parent-pid keeps it from outliving us.
        return [self.python, "-m", "server_stub", *args, "--parent-pid", str(os.getpid())]

    def _read_line(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sel.select(timeout=0.1):
                line = self.proc.stdout.readline().decode().strip()
                if line:
                    return line
            if self.proc.poll() is not None:
                break
        sel.close()
        code = self.proc.poll()
        self.kill()
        tail = self.log_path.read_text(errors="replace")[-2000:]
        why = f"exited with {code}" if code is not None else f"not ready within {timeout:.0f} s"
        raise StubError(f"server_stub {why}; log {self.log_path}:\n{tail}")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (drain: goaway + 1012, flush) and wait; kill -9 if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return self.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        return self.returncode

    def kill(self) -> None:
        """kill -9 the whole process group: no drain, no flush."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def restart(self, *, hard: bool = False, timeout: float = 15.0) -> StubProcess:
        """Stop (SIGTERM, or kill -9 with ``hard``) and start again on the same port and store."""
        self.kill() if hard else self.stop()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.restarts += 1
        return self.start(timeout)

    def close(self) -> None:
        self.stop()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> StubProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- facts ----------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        return int(self.info["pid"])

    @property
    def url(self) -> str:
        return self.info["url"]

    @property
    def ws_url(self) -> str:
        return self.info["ws_url"]

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """For https: a client context trusting ``cafile`` (else the system's CAs), built once."""
        if not self.url.startswith("https://"):
            return None
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=self.cafile)
        return self._ssl

    def stats(self, timeout: float = 5.0) -> dict:
        with urllib.request.urlopen(f"{self.url}/stats", timeout=timeout, context=self.ssl_context) as r:
            return json.load(r)

    def token(self, user: str, ttl_s: float | None = None, timeout: float = 5.0) -> str:
        body = {"user": user} if ttl_s is None else {"user": user, "ttl_s": ttl_s}
        req = urllib.request.Request(
            f"{self.url}/auth/token", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context) as r:
            return json.load(r)["token"]


def _without_option(args: list[str], name: str):
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if a == name:
            skip = True
            continue
        if a.startswith(name + "="):
            continue
        yield a
