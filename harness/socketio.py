"""The ``socketio`` target: the reference Socket.IO application (``targets/socketio``, npm ``socket.io``) run by
the harness, with a ``redis-server`` of its own beside it when it uses the Redis streams adapter.

Its options (``--target-args``) are the application's own (``targets/socketio/README.md``):
``--recovery on/off``, ``--max-disconnection-ms``, ``--adapter memory/redis-streams``,
``--ping-interval-ms``, ``--ping-timeout-ms``, ``--push-mode``, ``--one-socket-per-user``,
... With ``--adapter redis-streams`` and no ``--redis-url``, the harness starts a
``redis-server`` in the run directory (``redis/``) and keeps it up across the
application's restarts: a restart then tests what the adapter kept in Redis.
"""

from __future__ import annotations

from pathlib import Path

from server_stub.process import StubError

from .processes import HelperError, RedisServer, TargetProcess

PROGRAM = ("node", "targets/socketio/server.js")
NEEDS = ("targets/socketio/node_modules/socket.io/package.json",)
MAX_DISCONNECTION_MS = 120_000  #: the app's default (socket.io's)
SWEEP_S = 60  #: socket.io-adapter's SessionAwareAdapter sweeps expired sessions and packets once a minute


def _value(args: list[str], name: str) -> str | None:
    """The value of ``name`` in ``args`` (``--name value`` or ``--name=value``), the last one given."""
    found = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            found = args[i + 1]
        elif arg.startswith(name + "="):
            found = arg.partition("=")[2]
    return found


class SocketIOProcess(TargetProcess):
    """The application, and its own Redis when its Redis streams adapter has no ``--redis-url``."""

    def __init__(self, target, *args: str, log_path: Path) -> None:
        super().__init__(target, *args, log_path=log_path)
        self.redis: RedisServer | None = None

    def start(self, timeout: float = 15.0) -> SocketIOProcess:
        if _value(self.args, "--adapter") == "redis-streams" and _value(self.args, "--redis-url") is None:
            if self.redis is None:
                self.redis = RedisServer(Path(self.log_path).parent / "redis")
                try:
                    self.redis.start()
                except HelperError as e:
                    self.redis = None
                    raise StubError(f"--target socketio --adapter redis-streams: {e}") from None
            self.args = [*self.args, "--redis-url", self.redis.url]
        super().start(timeout)
        return self

    @property
    def retention(self) -> dict | None:
        """How long the app keeps what a returning client may recover: socket.io's in-memory adapter frees
        stored packets at its once-a-minute sweep past maxDisconnectionDuration (the Redis streams adapter
        keeps them in Redis, out of the process). None when recovery is off. The leak verdict does not judge
        memory held after a shorter drain."""
        if _value(self.args, "--recovery") == "off":
            return None
        window_s = float(_value(self.args, "--max-disconnection-ms") or MAX_DISCONNECTION_MS) / 1000
        if _value(self.args, "--adapter") == "redis-streams":
            return {"seconds": window_s, "why": "maxDisconnectionDuration: sessions kept for returning clients"}
        return {
            "seconds": window_s + SWEEP_S,
            "why": "maxDisconnectionDuration, then socket.io's in-memory adapter frees stored packets at its "
            "once-a-minute sweep",
        }

    def close(self) -> None:
        super().close()
        if self.redis is not None:
            self.redis.stop()
