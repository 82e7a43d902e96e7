"""TokenRefreshUser: a client with short-lived tokens that swaps them over the open socket."""

from __future__ import annotations

import random
from time import time

from locust import constant, task

from contract.events import Detail, Kind, Role

from .base import AgentUser
from .protocols.base import Capability

#: A connection the server ends this soon after a refresh counts as broken by it.
BROKEN_BY_REFRESH_S = 1.0
#: How long past its expiry an unrefreshed token may keep the socket open (the backend's grace + slack).
EXPIRY_ENFORCED_WITHIN_S = 35.0


class TokenRefreshUser(AgentUser):
    """Talks to its agent with tokens of ``--token-ttl-s``, refreshing each ``--refresh-ahead-s`` before expiry.

    Every other refresh is made in the middle of a streamed reply; the reply
    must still complete with the right sha256, with no seq gap and no close.
    A share of users (``--refresh-expire-share``) never refreshes: they must see
    ``refresh_required`` and then the 4002 close, and come back with a new token.
    """

    wait_time = constant(0)
    role = Role.REFRESH
    needs = frozenset({Capability.REFRESH, Capability.STREAM})

    def on_start(self) -> None:
        self.lets_token_expire = random.random() < self.settings.refresh_expire_share
        self.refreshes = 0
        self.refreshed_at: float | None = None

    @task
    def talk_and_refresh(self) -> None:
        self.check_refresh_kept_the_connection()
        if not self.ensure_connected():
            return
        if self.lets_token_expire:
            self.wait_for_expiry()
        elif self.refreshes % 2:
            self.refresh_while_idle()
        else:
            self.refresh_mid_stream()

    def seconds_to_refresh(self) -> float:
        return max(0.0, self.client.token_exp - self.settings.refresh_ahead_s - time())

    def refresh_while_idle(self) -> None:
        if self.client.pump(self.seconds_to_refresh()) and self.refresh():
            self.client.pump(min(BROKEN_BY_REFRESH_S, self.seconds_to_refresh()))

    def refresh_mid_stream(self) -> None:
        client = self.client
        if not client.pump(self.seconds_to_refresh()):
            return
        pending = client.start_turn("tell me something long")
        if pending is None:
            return
        outcome = client.await_turn(pending, stop_after_chunks=1)
        if outcome is False:
            return  # the turn failed (recorded as such)
        # The refresh is due now even when the whole reply arrived before it could be interrupted
        # (a slow client reads the chunks in one go): skipping it would let the token lapse.
        if self.refresh() and outcome is None:
            client.await_turn(pending)

    def refresh(self) -> bool:
        self.refreshes += 1
        ok = self.client.renew_token()
        if ok:
            self.refreshed_at = self.now()
        return ok

    def check_refresh_kept_the_connection(self) -> None:
        lost, refreshed_at = self.client.lost, self.refreshed_at
        if lost is None or refreshed_at is None or lost.by_client:
            return
        self.refreshed_at = None
        if 0 <= lost.at - refreshed_at < BROKEN_BY_REFRESH_S:
            self.note(Kind.REFRESH, False, code=lost.code, detail=Detail.CLOSED_AFTER_REFRESH)

    def wait_for_expiry(self) -> None:
        """Let the token run out: ``refresh_required``, then the 4002 close (both recorded by the client)."""
        client = self.client
        if client.pump(max(0.0, client.token_exp - time()) + EXPIRY_ENFORCED_WITHIN_S):
            self.note(Kind.REFRESH_REQUIRED, False, detail=Detail.EXPIRY_NOT_ENFORCED)
            client.abort(Detail.EXPIRY_ABORT)
