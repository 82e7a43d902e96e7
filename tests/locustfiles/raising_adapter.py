"""An agentws/1 adapter with a bug: every seventh frame it receives makes it raise (tests/test_users_locust_runs.py)."""

from __future__ import annotations

from users.protocols.agentws import AgentWS


class Raising(AgentWS):
    name = "raising"

    def receive(self, frame):
        self.received = getattr(self, "received", 0) + 1
        if self.received % 7 == 0:
            raise ValueError("cannot parse this frame")
        return super().receive(frame)
