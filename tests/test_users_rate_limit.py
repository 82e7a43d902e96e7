"""FlappingUser against a backend that rate-limits connects: 4029 obeyed, no retry storm."""

from __future__ import annotations

from collections import defaultdict

import pytest

from tests.test_users_locust_runs import assert_clean_end, run_locust

USERS, SECONDS = 3, 5
RATE, BURST = 2, 2
#: gevent's timers and the wall clock (event ts) agree to well under this
CLOCK_SLACK_S = 0.002


def by_user(events: list[dict]) -> dict[str, list[dict]]:
    """Each user's events in the order it emitted them (one greenlet per user: file order)."""
    users = defaultdict(list)
    for e in events:
        users[e["user"]].append(e)
    return users


@pytest.mark.parametrize("new_session", ["false", "true"])
def test_flapping_users_wait_out_every_4029(tmp_path, stub_factory, new_session):
    stub = stub_factory("--rate-limit", f"{RATE}/{BURST}")
    options = ("--flap-new-session", new_session, "--flap-connected-ms", "50", "--flap-disconnected-ms", "20")
    run = run_locust(tmp_path, stub.url, "FlappingUser", USERS, SECONDS, *options)

    limited = run.of("close", ok=1)
    assert limited and {(e["code"], e["reason"]) for e in limited} == {("4029", "rate_limited")}, run.describe()
    errors = run.of("error")
    assert {(e["code"], e["detail"], e["reason"]) for e in errors} == {
        ("rate_limited", "retry_after_ms", "rate_limited")
    }, run.describe()
    assert all(e["retry_after_ms"] > 0 for e in errors), run.describe()

    waits = []
    for user, events in by_user(run.events).items():
        retry_ms = closed_at = None
        rejected_in_a_row = 0
        for e in events:
            if e["kind"] == "error":
                retry_ms = e["retry_after_ms"]
            elif e["kind"] == "close":
                assert retry_ms is not None, f"{user}: 4029 without a retry_after_ms before it"
                closed_at, rejected_in_a_row = e["ts"], rejected_in_a_row + 1
                # the wait the server named always suffices, so a user is never refused twice running
                assert rejected_in_a_row == 1, f"{user}: refused twice without a welcome between"
            elif e["kind"] == "connect" and closed_at is not None:
                waited_s = e["ts"] - closed_at
                assert waited_s >= retry_ms / 1000 - CLOCK_SLACK_S, (user, waited_s, retry_ms)
                waits.append(waited_s)
                retry_ms = closed_at = None
            elif e["kind"] == "welcome":
                rejected_in_a_row = 0
    assert waits, run.describe()

    # bounded: accepted connects follow the bucket (burst + rate x time), refusals at most one per acceptance
    welcomes = len(run.of("welcome", ok=1))
    assert welcomes <= USERS * (BURST + RATE * (SECONDS + 1)), run.describe()
    assert len(limited) <= welcomes + USERS, run.describe()
    assert stub.stats()["rate_limited_total"] == len(limited)
    # the only failed requests are the refused connects themselves: no give-ups, no other errors
    name = "connect" if new_session == "true" else "resume"
    assert {(r["name"], r["failure"]) for r in run.failures()} == {
        (name, "RequestFailed('closed with 4029 before the session opened')")
    }, run.describe()
    assert len(run.failures()) == len(limited), run.describe()
    assert not run.of("reconnect", ok=0) and not run.of("welcome", ok=0), run.describe()
    assert_clean_end(run)
