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
            self.note(Kind.CLOSE, False, latency_ms=waited_ms, detail=Detail.NOT_REAPED, note=self.why_not_reaped())
            client.abort(Detail.ZOMBIE_GAVE_UP)

    def why_not_reaped(self) -> str:
        """Where the connection itself said it would not be reaped in time, that is the cause (an MQTT
        keepalive of 0, which a broker takes as never, or as its own maximum)."""
        idle_s, wait_s = self.client.adapter.idle_timeout_ms / 1000, self.settings.zombie_max_wait_s
        if not idle_s:
            return "the connection announced no idle timeout"
        if idle_s > wait_s:
            return f"the connection announced an idle timeout of {idle_s:.0f} s, longer than the {wait_s:.0f} s wait"
        return ""
