"""The socketio protocol against servers that break Engine.IO / Socket.IO or refuse the session.

Each server is a tiny socket server in a thread of the test process (tests/test_users_bad_targets.py's);
the users run in a child ``locust --headless`` with ``--protocol socketio``. Every case must end in
templated failure events whose note names what was wrong, bounded retries, and a worker that did not crash.
"""

from __future__ import annotations

from collections import Counter

from tests.test_users_bad_targets import BACKOFF, TinyServer, _upgrade
from tests.test_users_locust_runs import assert_clean_end, run_locust

OPEN = '0{"sid":"eio","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}'


def _text(payload: str) -> bytes:
    """A server's (unmasked) text frame."""
    data = payload.encode()
    assert len(data) < 126
    return bytes([0x81, len(data)]) + data


def _sends(*scripts: tuple[str, ...]):
    """Each connection gets the next script in turn: what the server sends after the upgrade."""
    turn = iter(range(1_000_000))

    def behave(conn) -> None:
        frames = scripts[next(turn) % len(scripts)]
        _upgrade(conn)
        conn.sendall(b"".join(_text(f) for f in frames))
        conn.recv(4096)  # the client's answer, or its close

    return behave


#: What a server that breaks the protocol sends, and what the error's note must name.
BROKEN = {
    ('0{"sid":"eio","upgrades":[],"pingInterval":25000,"pingTimeout":5000}',): "the server speaks Engine.IO 3",
    ("2",): "no Engine.IO open packet",
    ("0{not json",): "open packet is not JSON",
    (OPEN, "47"): "unknown Socket.IO packet type",
}
REFUSAL = (OPEN, '44{"message":"unauthorized","data":{"code":"unauthorized"}}')


def _run(tmp_path, stub, *scripts):
    server = TinyServer(_sends(*scripts))
    try:
        options = ("--protocol", "socketio", "--token-url", f"{stub.url}/auth/token", *BACKOFF)
        return run_locust(tmp_path, server.url, "FlappingUser", 2, 3, *options)
    finally:
        server.close()


def test_a_server_that_breaks_engine_io_or_socket_io_is_named_and_retried_a_bounded_number_of_times(tmp_path, stub):
    """Engine.IO 3, no open packet, a malformed one, an unknown packet type: one per connection in turn."""
    run = _run(tmp_path, stub, *BROKEN)
    failures = Counter(r["failure"] for r in run.failures())
    assert set(failures) == {"RequestFailed('the server broke the protocol')"}, run.describe()
    errors = run.of("error", ok=0)
    assert {e["code"] for e in errors} == {"protocol"}, run.describe()
    notes = [e["note"] for e in errors]
    for names in BROKEN.values():
        assert any(names in note for note in notes), (names, run.describe())
    assert all(any(names in note for names in BROKEN.values()) for note in notes), run.describe()
    # bounded: a few attempts a second per user with backoff, not a hot loop
    assert 4 <= sum(failures.values()) <= 2 * (3 + 3) * 20, run.describe()
    assert_clean_end(run)


def test_a_middlewares_connect_error_refuses_the_session_and_the_client_closes(tmp_path, stub):
    run = _run(tmp_path, stub, REFUSAL)
    failures = Counter(r["failure"] for r in run.failures())
    assert set(failures) == {"RequestFailed('the server refused the session')"}, run.describe()
    assert {e["code"] for e in run.of("error", ok=0)} == {"connect_error unauthorized"}, run.describe()
    assert {e["detail"] for e in run.of("disconnect")} == {"refused"}, run.describe()
    assert 2 <= sum(failures.values()) <= 2 * (3 + 3) * 20, run.describe()
    assert_clean_end(run)
