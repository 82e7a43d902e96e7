"""Test locustfile: the harness plus EventUser, which emits a known number of protocol events.

Each task emits ``EVENTS_PER_TASK`` events (seq 1, 2, ... per user) and then one
Locust request event ``EMIT burst``, with no yield in between: so
``events.csv`` must hold exactly Request Count x EVENTS_PER_TASK ``hb_rtt`` rows, and each
user's seq values must run 1..n without a gap.
"""

import os
import uuid

from locust import User, constant, events, task

import harness  # noqa: F401  (the plugin under test)
from contract.events import Detail, Kind
from tests.locustfiles.harness_runs import secret_digest
from users.recording import emit

EVENTS_PER_TASK = int(os.environ.get("HARNESS_TEST_EVENTS_PER_TASK", "10"))
WAIT_S = float(os.environ.get("HARNESS_TEST_WAIT_S", "0.05"))
#: "1": the heartbeats are routine (contract.events.ROUTINE: counted per interval, not kept row by row);
#: "mix": a flapping user's routine cycle (connect, welcome, replay, disconnect, reconnect) and a heartbeat,
#: each burst (the recording benchmark's mix); otherwise each is a raw row (an unusual detail), so a test can
#: read every one back.
ROUTINE = os.environ.get("HARNESS_TEST_ROUTINE", "")
#: (kind, detail, latency or None) of the routine mix, in turn
MIX = (
    (Kind.CONNECT, "", 1.2),
    (Kind.WELCOME, Detail.RESUMED, None),
    (Kind.REPLAY, "", None),
    (Kind.DISCONNECT, Detail.FLAP_CLOSE, None),
    (Kind.RECONNECT, Detail.RESUMED, 14.0),
    (Kind.HB_RTT, "", 2.0),
)


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    # A secret like the users' --admin-token: the tests check it reaches the users however the run is started.
    parser.add_argument("--test-secret", default="", is_secret=True, help="a secret the users report by digest")


class EventUser(User):
    wait_time = constant(WAIT_S)

    def on_start(self) -> None:
        self.uid = uuid.uuid4().hex[:12]
        self.seq = 0
        # One connect event naming the host this user was aimed at (the test checks workers got it),
        # with the digest of --test-secret as its agent (never the secret itself).
        secret = getattr(self.environment.parsed_options, "test_secret", "") or ""
        emit(self.environment, Kind.CONNECT, user=self.uid, agent=secret_digest(secret), detail=self.host or "")

    @task
    def burst(self) -> None:
        for _ in range(EVENTS_PER_TASK):
            self.seq += 1
            if ROUTINE == "mix":
                kind, detail, latency = MIX[self.seq % len(MIX)]
                ms = latency and latency + self.seq % 7
                emit(self.environment, kind, user=self.uid, role="flapping", latency_ms=ms, detail=detail)
            elif ROUTINE:
                emit(self.environment, Kind.HB_RTT, user=self.uid, latency_ms=1.0 + self.seq % 5, seq=self.seq)
            else:
                emit(self.environment, Kind.HB_RTT, user=self.uid, latency_ms=1.5, seq=self.seq, detail="test")
        self.environment.events.request.fire(
            request_type="EMIT",
            name="burst",
            response_time=0,
            response_length=EVENTS_PER_TASK,
            exception=None,
            context={},
        )
