"""A test-only Locust plugin: writes every protocol event and request event as JSON lines.

The Locust runs of ``tests/test_users_*.py`` happen in a child ``locust
--headless`` process, loaded as ``-f locustfile.py,tests/test_users_plugin.py``:
Locust monkey-patches the process it is imported into with gevent, and the
pytest process also runs asyncio/aiohttp tests of the server, which must not
run on patched sockets, selectors and threads. The child writes here; the
tests read the file back (:func:`read_run`).

Pytest collects this module too (its name matches ``test_*``); it installs
nothing unless Locust is already loaded, so collection imports no gevent.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

EVENTS_PATH_ENV = "USERS_TEST_EVENTS"
#: Seconds the run goes on after the users' first protocol event, then it quits: a busy machine's slow
#: start (imports, first connects) does not eat into the time the test's counts were sized for.
ACTIVE_S_ENV = "USERS_TEST_ACTIVE_S"


def _live_greenlets() -> list[str]:
    """What every live greenlet runs (the hub and the main greenlet included)."""
    import gc

    import greenlet

    found = [g for g in gc.get_objects() if isinstance(g, greenlet.greenlet) and bool(g) and not g.dead]
    return sorted(getattr(getattr(g, "_run", None), "__qualname__", type(g).__name__) for g in found)


def _open_sockets_to(port: int) -> int:
    import psutil

    return sum(1 for c in psutil.Process().net_connections("tcp") if c.raddr and c.raddr.port == port)


def _count_ssl_contexts() -> list[int]:
    """Count every SSLContext built from now on (the users must share one per process).

    gevent's SSLContext subclasses the stdlib's, so wrapping the stdlib class's
    ``__new__`` sees contexts built by the users, urllib and anything else.
    """
    import ssl

    base = next(c for c in ssl.SSLContext.__mro__ if c.__module__ == "ssl")
    original, created = base.__new__, [0]

    def counting_new(cls, *args, **kwargs):
        created[0] += 1
        return original(cls, *args, **kwargs)

    base.__new__ = staticmethod(counting_new)
    return created


def _install(path: str) -> None:
    from urllib.parse import urlsplit

    from locust import events

    from users.recording import protocol_events

    out = open(path, "w", buffering=1)
    ssl_contexts = _count_ssl_contexts()

    def write(row_type: str, **row) -> None:
        out.write(json.dumps({"type": row_type, **row}, default=str) + "\n")

    def on_request(request_type, name, response_time, exception=None, **_):
        write("request", name=name, ms=response_time, failure=repr(exception) if exception else "")

    active_s = float(os.environ.get(ACTIVE_S_ENV) or 0)
    quit_scheduled = []

    @events.init.add_listener
    def on_init(environment, **_):
        def on_event(event, **_):
            write("event", **event._asdict())
            if active_s and not quit_scheduled:
                import gevent

                quit_scheduled.append(gevent.spawn_later(active_s, environment.runner.quit))

        protocol_events(environment).add_listener(on_event)
        environment.events.request.add_listener(on_request)

    @events.test_start.add_listener
    def on_test_start(environment, **_):
        write("start", greenlets=_live_greenlets())

    @events.quitting.add_listener
    def on_quitting(environment, **_):
        import gevent

        gevent.sleep(0.2)  # let killed users' sockets finish closing
        port = urlsplit(environment.host or "").port or 0
        write(
            "end",
            greenlets=_live_greenlets(),
            sockets=_open_sockets_to(port),
            user_count=environment.runner.user_count,
            ssl_contexts=ssl_contexts[0],
        )
        out.close()


if "locust" in sys.modules and os.environ.get(EVENTS_PATH_ENV):
    _install(os.environ[EVENTS_PATH_ENV])


class Run:
    """What one child Locust run wrote: protocol events, request events, start/end figures."""

    def __init__(self, path: Path, returncode: int, stderr: str) -> None:
        self.returncode, self.stderr = returncode, stderr
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
        self.events = [r for r in rows if r["type"] == "event"]
        self.requests = [r for r in rows if r["type"] == "request"]
        self.start = next((r for r in rows if r["type"] == "start"), {})
        self.end = next((r for r in rows if r["type"] == "end"), {})

    def of(self, kind: str, ok: int | None = None) -> list[dict]:
        return [e for e in self.events if e["kind"] == kind and (ok is None or e["ok"] == ok)]

    def failures(self) -> list[dict]:
        return [r for r in self.requests if r["failure"]]

    def requests_named(self, name: str, failed: bool | None = None) -> list[dict]:
        return [r for r in self.requests if r["name"] == name and (failed is None or bool(r["failure"]) == failed)]

    def describe(self) -> str:
        from collections import Counter

        kinds = Counter((e["kind"], e["ok"], e["detail"]) for e in self.events)
        fails = Counter((r["name"], r["failure"]) for r in self.failures())
        return f"rc={self.returncode} kinds={dict(kinds)} failures={dict(fails)} end={self.end}\n{self.stderr[-3000:]}"
