"""ConversationUser: a client talking to its agent over a flaky link, checking what survives a drop."""

from __future__ import annotations

import random

import gevent
from locust import constant, task
from locust.exception import StopUser

from contract.events import Detail, Kind, Role

from .base import AgentUser
from .protocols.base import Capability
from .push import can_push, push

GAPS = ("brief", "medium", "extended")
#: Past the resume window by this much (plus a quarter window: the backend expires sessions periodically).
EXPIRY_SLACK_S = 1.0


class ConversationUser(AgentUser):
    """Sends turns and reads the streamed replies, then drops the connection at a random point.

    Drops are often mid-stream. It stays away for a brief, medium or extended
    gap (extended: past the resume window), and while away has the backend push
    notifications to its session. On resume it checks that the agent, its turn
    count and its history are unchanged, that the interrupted reply completes
    with the right sha256, and that every push arrived once and in order. Past
    the window it checks for a clean new session (``reason: expired``, no turns).
    With ``--conversation-cycles`` it stops after that many drops.
    """

    wait_time = constant(0)
    role = Role.CONVERSATION
    #: Turns with streamed replies, pushes while away and the history compared after a resume, where the
    #: protocol has them (on MQTT: no turns, pushes published at QoS 1 to the session's topic).
    needs = frozenset({Capability.RESUME})

    def on_start(self) -> None:
        #: (session, generation) -> last push id sent. A new session numbers its pushes from 1, even under an old
        #: name (an MQTT client id whose session the broker lost): the publisher's sequence restarts with it.
        self.push_ids: dict[tuple[str, int], int] = {}
        self.cycles = 0

    @task
    def converse(self) -> None:
        if not self.ensure_connected():
            return
        client = self.client
        if Capability.STREAM not in client.adapter.capabilities:
            if client.pump(self.settings.reply_timeout_s * random.random()):
                self.drop_and_come_back()
            return
        for _ in range(max(0, self.settings.turns_per_connection - 1)):
            if not client.turn("hello agent"):
                return
        pending = client.start_turn("tell me a long story")
        if pending is None:
            return
        if random.random() < self.settings.drop_mid_stream_share:
            stop_after = random.randint(1, max(1, client.session.chunks_per_reply - 1))
            if client.await_turn(pending, stop_after_chunks=stop_after) is False:
                return
        elif not client.await_turn(pending):
            return
        self.drop_and_come_back()

    def drop_and_come_back(self) -> None:
        client = self.client
        gap = random.choices(GAPS, weights=self.settings.gap_weight_list())[0]
        client.abort(Detail.planned_gap(gap))
        session = client.session.session
        expected = [] if gap == "extended" else self.push_while_away(session)
        gevent.sleep(self.gap_seconds(gap))
        self.cycles += 1
        if self.come_back(self.now(), planned=True):
            if gap == "extended":
                self.check_expired_cleanly()
            else:
                self.check_context_kept(expected)
        if self.settings.conversation_cycles and self.cycles >= self.settings.conversation_cycles:
            raise StopUser()

    def gap_seconds(self, gap: str) -> float:
        s = self.settings
        if gap in ("brief", "medium"):
            length = s.gap_brief_s if gap == "brief" else s.gap_medium_s
            return max(0.0, length + random.uniform(-s.gap_spread_s, s.gap_spread_s))
        window = self.client.session.resume_window_s
        return s.gap_extended_s or window * 1.25 + EXPIRY_SLACK_S

    def push_while_away(self, session: str) -> list[int]:
        """Have the backend push to the detached session; the ids it must deliver on resume."""
        n = self.settings.pushes_while_away
        if n <= 0 or Capability.PUSH not in self.client.adapter.capabilities or not can_push(self.client):
            return []
        key = (session, self.client.session.generation)
        first = self.push_ids.get(key, 0) + 1
        sent = push(self.client, session, [(i, {"n": i}) for i in range(first, first + n)])
        # Numbers carry on after the last one the backend took: a publisher's sequence has no holes of its own.
        self.push_ids[key] = max(sent, default=first - 1)
        return sent

    def check_context_kept(self, expected_pushes: list[int]) -> None:
        client, state = self.client, self.client.session
        if not state.resumed:
            self.note(Kind.HISTORY_CHECK, False, detail=Detail.NOT_RESUMED, note=state.welcome_detail)
            return
        client.pump(self.settings.reply_timeout_s, until=lambda: state.replayed_through is not None)
        client.pump(self.settings.reply_timeout_s, until=lambda: not state.stream_open())
        for push_id in state.missing_pushes(expected_pushes):
            self.note(Kind.NOTIFY, False, seq=None, detail=Detail.PUSH_MISSING, code=push_id)
        differs, kept = "", Detail.IDENTITY_KEPT
        if Capability.HISTORY in client.adapter.capabilities:
            kept = Detail.CONTEXT_KEPT
            turns = client.history()
            if turns is None:
                return  # the history request failure is recorded as such
            differs = state.compare_history(turns)
        if not state.welcome_ok:
            self.note(Kind.HISTORY_CHECK, False, detail=state.welcome_detail)
        elif differs:
            self.note(Kind.HISTORY_CHECK, False, detail=differs)
        else:
            self.note(Kind.HISTORY_CHECK, True, detail=kept)

    def check_expired_cleanly(self) -> None:
        state = self.client.session
        # A protocol that cannot say why a resume was refused says only "new": past the window, that is the expiry.
        expired = (Detail.NEW_EXPIRED,) if self.client.adapter.tells_why_new else (Detail.NEW_EXPIRED, Detail.NEW_NONE)
        clean = not state.resumed and state.welcome_detail in expired and state.agent_turns == 0
        if clean:
            self.note(Kind.HISTORY_CHECK, True, detail=Detail.EXPIRED_CLEANLY)
        else:
            self.note(Kind.HISTORY_CHECK, False, detail=Detail.NOT_EXPIRED, note=state.welcome_detail)
