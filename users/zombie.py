"""ZombieUser: a client whose application hangs after ``hello``: the socket stays open, nothing is sent."""

from __future__ import annotations

from locust import constant, task

from contract.events import Detail, Kind, Role

from .base import AgentUser


class ZombieUser(AgentUser):
    """Connects, says hello, then goes silent and waits for the backend to reap it.

    It sends nothing more (not even an ack) and only watches the socket for its
    end: ``close`` records the backend's code and how long after the client's
    last frame it came. A socket still open after ``--zombie-max-wait-s`` is
    recorded as ``close`` ok=0 (the backend never reaped it) and cut. Each
    round resumes the session, as a client restarting after a hang would.
    """

    wait_time = constant(0)
    role = Role.ZOMBIE
    keepalive = False

    @task
    def hang(self) -> None:
        client = self.client
        if not self.ensure_connected():
            return
        silent_since = client.last_sent
        if client.pump(self.settings.zombie_max_wait_s):
            waited_ms = (self.now() - silent_since) * 1000
            # Where the session announced no idle timeout (MQTT keepalive 0), that is the cause: say so.
            cause = "" if client.adapter.idle_timeout_ms else "the session announced no idle timeout (keepalive 0?)"
            self.note(Kind.CLOSE, False, latency_ms=waited_ms, detail=Detail.NOT_REAPED, note=cause)
            client.abort(Detail.ZOMBIE_GAVE_UP)
