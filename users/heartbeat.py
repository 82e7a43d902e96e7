"""HeartbeatUser: one long-lived connection kept alive by application heartbeats."""

from __future__ import annotations

from locust import constant, task

from agentws.events import Kind, RequestName
from agentws.protocol import DEFAULT_HB_INTERVAL_MS

from .base import AgentUser
from .transport import Closed

#: Missing hb_acks for this many intervals means the connection is dead.
DEAD_AFTER_INTERVALS = 2


class HeartbeatUser(AgentUser):
    """Connects once and sends ``hb`` every interval (the backend's, from ``welcome``), timing each answer.

    When an ``hb_ack`` has not come back two intervals after its ``hb``, the
    connection is dead: it cuts it, reconnects and resumes. When its token
    expires (``refresh_required``) it refreshes it over the socket. The user's own
    greenlet waits on the socket between heartbeats; nothing else runs per
    user, so one process holds tens of thousands of them.
    """

    wait_time = constant(0)
    keepalive = False  #: it sends its own heartbeats, at --hb-interval-ms when given, and times them

    def on_start(self) -> None:
        self.next_hb_at = 0.0
        self.connection = None

    @task
    def keep_alive(self) -> None:
        client = self.client
        if not self.ensure_connected():
            return
        interval = self.interval_s()
        if client.ws is not self.connection:  # a new connection: first hb one interval after welcome
            self.connection, self.next_hb_at = client.ws, self.now() + interval
        oldest = client.oldest_unanswered_hb()
        dead_at = oldest + DEAD_AFTER_INTERVALS * interval if oldest is not None else float("inf")
        if not client.pump(min(self.next_hb_at, dead_at) - self.now(), until=self.refresh_due):
            return  # the backend or the network ended it; the next round reconnects by the close policy
        if self.refresh_due():
            self.refresh_token()
        elif self.now() >= dead_at:
            self.declare_dead(oldest)
        elif self.now() >= self.next_hb_at:
            self.next_hb_at += interval
            try:
                client.send_hb()
            except Closed as closed:
                client.on_lost(closed)

    def refresh_due(self) -> bool:
        return self.client.refresh_required_at is not None

    def refresh_token(self) -> None:
        """Answer ``refresh_required`` with a fresh token over the open socket, within the grace: a
        long-lived client is not cut off (4002) each time its token expires. One try per request."""
        self.client.refresh_required_at = None
        self.client.renew_token()

    def declare_dead(self, unanswered_since: float) -> None:
        client, detected = self.client, self.now()
        self.note(Kind.HB_RTT, False, detail="no hb_ack within two intervals")
        client.fire(RequestName.HB, client.started_at(unanswered_since), "no hb_ack within two intervals")
        client.abort("heartbeat_dead")
        self.come_back(detected)

    def interval_s(self) -> float:
        ms = self.settings.hb_interval_ms or self.client.state.hb_interval_ms or DEFAULT_HB_INTERVAL_MS
        return ms / 1000
