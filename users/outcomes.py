"""Small values the client hands back: a failed request, how a connection ended, a turn in flight."""

from __future__ import annotations

from typing import NamedTuple

from contract.events import CloseReason


class RequestFailed(Exception):
    """A failed request event. The text is a template: Locust groups failures by it."""


class PendingTurn(NamedTuple):
    cid: str
    started: float  #: perf_counter at the msg


class Lost:
    """How the last connection ended: when (monotonic), the close code (1006: none), by whom, and why
    (the adapter's classification of the server's close; LOST when no close came)."""

    __slots__ = ("at", "code", "by_client", "reason")

    def __init__(self, at: float, code: int, by_client: bool, reason: CloseReason = CloseReason.LOST) -> None:
        self.at, self.code, self.by_client, self.reason = at, code, by_client, reason


def ws_url_for(host: str, path: str) -> str:
    base = host.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base.removeprefix("https://") + path
    return "ws://" + base.removeprefix("http://") + path
