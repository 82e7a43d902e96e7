"""HeartbeatUser: one long-lived connection kept alive by application heartbeats."""

from __future__ import annotations

from locust import constant, task

from contract.events import Detail, Kind, RequestName, Role

from .base import AgentUser
from .client import AdapterFailed
from .protocols.base import HeartbeatDriver
from .transport import Closed

#: Missing heartbeat answers for this many intervals means the connection is dead.
DEAD_AFTER_INTERVALS = 2
#: The interval when neither --hb-interval-ms nor the server says one.
FALLBACK_INTERVAL_MS = 15_000


class HeartbeatUser(AgentUser):
    """Connects once and sends a heartbeat every interval (the backend's, as announced), timing each answer.

    When an answer has not come back two intervals after its heartbeat, the
    connection is dead: it cuts it, reconnects and resumes. Where the server drives
    the heartbeat (Engine.IO's pings), it answers each ping and declares the
    connection dead when no ping came for two intervals. When its token expires
    (the server says so) it refreshes it over the socket. The user's own
    greenlet waits on the socket between heartbeats; nothing else runs per
    user, so one process holds tens of thousands of them.
    """

    wait_time = constant(0)
    role = Role.HEARTBEAT
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
        if client.adapter.heartbeat_driver is HeartbeatDriver.SERVER:
            self.answer_pings(interval)
            return
        if client.connections_opened != self.connection:  # a new connection: first hb one interval after open
            self.connection, self.next_hb_at = client.connections_opened, self.now() + interval
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
            except AdapterFailed:
                pass  # recorded, the connection dropped: the next round reconnects

    def answer_pings(self, interval: float) -> None:
        """A server-driven heartbeat: the client answers each ping as it reads (users/client.py); dead when
        none came for two intervals."""
        client = self.client
        last = max(client.last_server_ping, client.opened_at)
        dead_at = last + DEAD_AFTER_INTERVALS * interval
        if not client.pump(dead_at - self.now(), until=lambda: self.refresh_due() or client.last_server_ping > last):
            return
        if self.refresh_due():
            self.refresh_token()
        elif client.last_server_ping <= last and self.now() >= dead_at:
            detected = self.now()
            self.note(Kind.HB_RTT, False, detail=Detail.NO_SERVER_PING)
            client.abort(Detail.HEARTBEAT_DEAD)
            self.come_back(detected)

    def refresh_due(self) -> bool:
        return self.client.refresh_required_at is not None

    def refresh_token(self) -> None:
        """Answer the server's "credentials expiring" with a fresh token over the open socket, within the
        grace: a long-lived client is not cut off each time its token expires. One try per request."""
        self.client.renew_token()

    def declare_dead(self, unanswered_since: float) -> None:
        client, detected = self.client, self.now()
        self.note(Kind.HB_RTT, False, detail=Detail.NO_HB_ANSWER)
        client.fire(RequestName.HB, client.started_at(unanswered_since), "no hb_ack within two intervals")
        client.abort(Detail.HEARTBEAT_DEAD)
        self.come_back(detected)

    def interval_s(self) -> float:
        ms = self.settings.hb_interval_ms or self.client.adapter.heartbeat_interval_ms or FALLBACK_INTERVAL_MS
        return ms / 1000
