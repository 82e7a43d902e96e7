"""agentws/1 as PROTOCOL.md describes it, one behaviour per test, against the real backend."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from agentws.protocol import (
    IDLE_TIMEOUT_FACTOR,
    SEQUENCED_FRAMES,
    Close,
    ErrorCode,
    NewSessionReason,
    T,
)
from tests.conftest import FAST
from tests.stubclient import Clients, http, run, sha256_of

#: Replies slow enough (10 chunks, 30 ms apart) to act in the middle of one.
SLOW = ("--chunk-delay-ms", "30", "--chunks-per-reply", "10")

STATS_FIELDS = {
    "pid", "epoch", "uptime_s",
    "connections", "sessions_attached", "sessions_detached",
    "agents_live", "agents_created_total", "agents_destroyed_total",
    "max_agents_per_session", "duplicate_agents_total",
    "outbox_frames", "outbox_bytes",
    "zombies_reaped_total", "takeovers_total", "rate_limited_total",
    "token_expired_closes_total", "refreshes_total",
    "rss_bytes", "open_fds", "threads", "tasks",
}  # fmt: skip


@pytest.fixture(scope="module")
def slow_stub(module_stub_factory):
    return module_stub_factory(*SLOW)


def sequenced(frames: list[dict]) -> list[dict]:
    return [f for f in frames if f["t"] in SEQUENCED_FRAMES]


def test_new_session_welcome_has_every_field(shared_stub, user):
    async def go():
        async with Clients(shared_stub) as cs:
            c = await cs.connect(user)
            w = await c.hello()
            epoch = (await cs.stats())["epoch"]
            assert w["epoch"] == epoch
            assert re.fullmatch(rf"{re.escape(epoch)}\.[0-9a-f]+", w["session"])
            assert w["resumed"] is False and "reason" not in w
            assert set(w["agent"]) == {"id", "turns", "ctx_hash"} and w["agent"]["turns"] == 0
            assert w["head_seq"] == 0
            assert w["idle_timeout_ms"] == int(w["hb_interval_ms"] * IDLE_TIMEOUT_FACTOR)
            assert w["token_exp"] > time.time()
            assert w["resume_window_s"] > 0

    run(go())


def test_resume_replays_exactly_the_missing_frames_then_replayed(shared_stub, user):
    async def go():
        async with Clients(shared_stub) as cs:
            a = await cs.session(user)
            await a.reply("c1")
            head = a.last_seq
            await a.close()
            b = await cs.resume(user, a, last_seq=3)
            assert b.welcome["resumed"] is True and b.welcome["session"] == a.welcome["session"]
            assert b.welcome["agent"]["id"] == a.welcome["agent"]["id"] and b.welcome["head_seq"] == head
            replayed = await b.recv(T.REPLAYED)
            assert replayed["through"] == head
            assert b.seqs() == list(range(4, head + 1))
            assert b.frames[1:-1] == sequenced(a.frames)[3:]

    run(go())


def test_cumulative_ack_drops_frames_so_resume_replays_only_later_ones(stub, user):
    async def go():
        async with Clients(stub) as cs:
            a = await cs.session(user)
            await a.reply("c1")
            head = a.last_seq
            assert (await cs.stats())["outbox_frames"] == head
            await a.send({"t": T.ACK, "seq": 4})
            await a.send({"t": T.HB, "id": 1})
            await a.recv(T.HB_ACK)
            assert (await cs.stats())["outbox_frames"] == head - 4
            await a.close()
            b = await cs.resume(user, a, last_seq=4)
            await b.recv(T.REPLAYED)
            assert b.seqs() == list(range(5, head + 1))

    run(go())


def test_seq_strictly_increasing_and_never_reset_across_reconnects(shared_stub, user):
    async def go():
        async with Clients(shared_stub) as cs:
            c = await cs.session(user)
            seen = []
            for round_ in range(3):
                await c.reply(f"c{round_}")
                seen += c.seqs()
                await c.close()
                c = await cs.resume(user, c)
                await c.recv(T.REPLAYED)
            assert seen == list(range(1, len(seen) + 1))
            assert c.welcome["head_seq"] == seen[-1]

    run(go())


def test_reply_streams_chunks_then_done_with_sha256_of_joined_deltas(shared_stub, user):
    async def go():
        async with Clients(shared_stub) as cs:
            c = await cs.session(user)
            accepted, chunks, done = await c.reply("c1", "hello there")
            assert accepted["cid"] == "c1" and accepted["turn"] == 1
            assert [ch["i"] for ch in chunks] == list(range(done["n"])) and done["n"] == 5
            assert done["turn"] == 1 and done["sha256"] == sha256_of(chunks)

    run(go())


def test_stream_goes_on_while_detached_and_is_replayed_complete(slow_stub, user):
    async def go():
        async with Clients(slow_stub) as cs:
            a = await cs.session(user)
            await a.send({"t": T.MSG, "cid": "c1", "text": "long answer"})
            await a.recv(T.CHUNK)
            await a.close()
            await asyncio.sleep(0.5)  # longer than the rest of the reply (9 x 30 ms)
            b = await cs.resume(user, a)
            await b.recv(T.REPLAYED)
            chunks = a.of(T.CHUNK) + b.of(T.CHUNK)
            [done] = b.of(T.DONE)
            assert [ch["i"] for ch in chunks] == list(range(10))
            assert done["sha256"] == sha256_of(chunks)
            assert a.seqs() + b.seqs() == list(range(1, done["seq"] + 1))

    run(go())


def test_notify_while_attached_arrives_as_next_sequenced_frame(shared_stub, user):
    async def go():
        async with Clients(shared_stub) as cs:
            c = await cs.session(user)
            queued = await cs.notify(c.welcome["session"], 7, {"k": "v"})
            frame = await c.recv(T.NOTIFY)
            assert frame == {"t": T.NOTIFY, "id": 7, "data": {"k": "v"}, "seq": 1} and queued["seq"] == 1

    run(go())


def test_notifies_while_detached_are_replayed_once_and_in_order(shared_stub, user):
    async def go():
        async with Clients(shared_stub) as cs:
            a = await cs.session(user)
            await a.close()
            for push_id in range(1, 6):
                await cs.notify(a.welcome["session"], push_id, {"n": push_id})
            b = await cs.resume(user, a)
            await b.recv(T.REPLAYED)
            await b.quiet(0.2)
            assert [(f["id"], f["seq"]) for f in b.of(T.NOTIFY)] == [(i, i) for i in range(1, 6)]

    run(go())


def test_hb_is_answered_with_hb_ack_of_the_same_id(shared_stub, user):
    async def go():
        async with Clients(shared_stub) as cs:
            c = await cs.session(user)
            for hb_id in (1, "x-2"):
                await c.send({"t": T.HB, "id": hb_id})
                assert await c.recv(T.HB_ACK) == {"t": T.HB_ACK, "id": hb_id}

    run(go())


def test_refresh_mid_stream_swaps_token_without_touching_session_seq_or_stream(slow_stub, user):
    async def go():
        async with Clients(slow_stub) as cs:
            c = await cs.session(user, ttl_s=60)
            await c.send({"t": T.MSG, "cid": "c1", "text": "hi"})
            await c.recv(T.CHUNK)
            new_token, before = await cs.token(user, ttl_s=600), await cs.stats()
            await c.send({"t": T.REFRESH, "id": "r1", "token": new_token})
            refreshed = await c.recv(T.REFRESHED)
            assert not c.of(T.DONE), "the refresh must land mid-stream for this test to mean anything"
            assert refreshed["id"] == "r1" and refreshed["token_exp"] > c.welcome["token_exp"] + 500
            done = await c.recv(T.DONE)
            assert c.seqs() == list(range(1, done["seq"] + 1))
            assert done["sha256"] == sha256_of(c.of(T.CHUNK))
            assert (await cs.stats())["refreshes_total"] == before["refreshes_total"] + 1
            await c.send({"t": T.HB, "id": 1})
            await c.recv(T.HB_ACK)

    run(go())


def test_history_lists_every_turn_with_its_reply_sha256(shared_stub, user):
    async def go():
        async with Clients(shared_stub) as cs:
            c = await cs.session(user)
            _, _, done1 = await c.reply("c1", "first")
            _, _, done2 = await c.reply("c2", "second")
            await c.send({"t": T.HISTORY, "id": 9})
            history = await c.recv(T.HISTORY)
            assert history["id"] == 9
            assert history["turns"] == [
                {"turn": 1, "cid": "c1", "text": "first", "reply_sha256": done1["sha256"]},
                {"turn": 2, "cid": "c2", "text": "second", "reply_sha256": done2["sha256"]},
            ]

    run(go())


def test_repeated_cid_returns_the_original_accepted_and_starts_no_turn(shared_stub, user):
    async def go():
        async with Clients(shared_stub) as cs:
            c = await cs.session(user)
            accepted, _, _ = await c.reply("same")
            await c.send({"t": T.MSG, "cid": "same", "text": "hi"})
            assert await c.recv(T.ACCEPTED) == accepted
            await c.quiet(0.15)
            assert len(c.of(T.DONE)) == 1
            await c.send({"t": T.HISTORY, "id": 1})
            assert len((await c.recv(T.HISTORY))["turns"]) == 1

    run(go())


def test_bye_closes_1000_and_destroys_session_and_agent(shared_stub, user):
    async def go():
        async with Clients(shared_stub) as cs:
            c = await cs.session(user)
            before = await cs.stats()
            await c.send({"t": T.BYE})
            assert await c.recv_closed() == Close.BYE
            after = await cs.stats()
            assert after["agents_live"] == before["agents_live"] - 1
            assert after["agents_destroyed_total"] == before["agents_destroyed_total"] + 1
            again = await cs.resume(user, c)
            assert again.welcome["resumed"] is False and again.welcome["reason"] == NewSessionReason.EXPIRED

    run(go())


def test_takeover_closes_the_old_socket_4409_and_keeps_the_agent(shared_stub, user):
    async def go():
        async with Clients(shared_stub) as cs:
            old = await cs.session(user)
            await old.reply("c1")
            before = await cs.stats()
            new = await cs.resume(user, old)
            assert new.welcome["resumed"] is True
            assert new.welcome["agent"]["id"] == old.welcome["agent"]["id"] and new.welcome["agent"]["turns"] == 1
            assert await old.recv_closed() == Close.TAKEN_OVER
            after = await cs.stats()
            assert after["takeovers_total"] == before["takeovers_total"] + 1
            assert after["agents_live"] == before["agents_live"] and after["max_agents_per_session"] == 1
            await new.send({"t": T.HB, "id": 1})
            await new.recv(T.HB_ACK)

    run(go())


def test_silent_socket_is_reaped_4001_within_idle_timeout(stub_factory, user):
    stub = stub_factory(*FAST, "--hb-interval-ms", "200")

    async def go():
        async with Clients(stub) as cs:
            c = await cs.connect(user)
            started = time.monotonic()
            idle_s = (await c.hello())["idle_timeout_ms"] / 1000
            assert await c.recv_closed(timeout=idle_s + 1) == Close.HEARTBEAT_TIMEOUT
            assert time.monotonic() - started >= idle_s * 0.9
            assert (await cs.stats())["zombies_reaped_total"] == 1

    run(go())


def test_heartbeats_keep_a_socket_open_past_idle_timeout(stub_factory, user):
    stub = stub_factory(*FAST, "--hb-interval-ms", "200")

    async def go():
        async with Clients(stub) as cs:
            c = await cs.session(user)
            for hb_id in range(8):  # 8 x 100 ms: well past the 300 ms idle timeout
                await c.send({"t": T.HB, "id": hb_id})
                await c.recv(T.HB_ACK)
                await asyncio.sleep(0.1)
            assert len(c.of(T.HB_ACK)) == 8
            assert (await cs.stats())["zombies_reaped_total"] == 0

    run(go())


def test_expired_token_gets_refresh_required_then_close_4002_after_grace(stub_factory, user):
    stub = stub_factory(*FAST, "--refresh-grace-ms", "300")

    async def go():
        async with Clients(stub) as cs:
            c = await cs.session(user, ttl_s=0.5)
            required = await c.recv(T.REFRESH_REQUIRED, timeout=3)
            at = time.monotonic()
            assert time.time() >= c.welcome["token_exp"] - 0.05
            assert required["grace_ms"] == 300
            assert await c.recv_closed(timeout=0.3 + 1) == Close.TOKEN_EXPIRED
            assert time.monotonic() - at >= 0.25
            assert c.frames[-1]["t"] == T.ERROR and c.frames[-1]["code"] == ErrorCode.TOKEN_EXPIRED
            assert (await cs.stats())["token_expired_closes_total"] == 1

    run(go())


def test_refresh_within_grace_keeps_the_socket_open(stub_factory, user):
    stub = stub_factory(*FAST, "--refresh-grace-ms", "300")

    async def go():
        async with Clients(stub) as cs:
            c = await cs.session(user, ttl_s=0.5)
            await c.recv(T.REFRESH_REQUIRED, timeout=3)
            fresh = await cs.token(user, ttl_s=60)
            await c.send({"t": T.REFRESH, "id": 1, "token": fresh})
            await c.recv(T.REFRESHED)
            assert not [f for f in await c.quiet(0.6) if f["t"] == T.ERROR]
            await c.send({"t": T.HB, "id": 2})
            await c.recv(T.HB_ACK)

    run(go())


def test_connects_above_the_rate_limit_get_retry_after_and_4029(stub_factory, user):
    stub = stub_factory(*FAST, "--rate-limit", "1/2")

    async def go():
        async with Clients(stub) as cs:
            await cs.session(user)
            await cs.session(user)
            c = await cs.connect(user)
            await c.send({"t": T.HELLO, "v": 1, "token": c.token})
            assert await c.recv_closed() == Close.RATE_LIMITED
            [error] = c.frames
            assert error["code"] == ErrorCode.RATE_LIMITED and error["retry_after_ms"] > 0
            stats = await cs.stats()
            assert stats["rate_limited_total"] == 1 and stats["agents_live"] == 2
            await cs.session(f"{user}-other")

    run(go())


def test_resume_after_the_window_gets_a_new_session_with_reason_expired(stub_factory, user):
    stub = stub_factory(*FAST, "--resume-window", "1")

    async def go():
        async with Clients(stub) as cs:
            a = await cs.session(user)
            await a.reply("c1")
            await a.close()
            await asyncio.sleep(1.6)  # window + housekeeping tick (window / 4) + slack
            b = await cs.resume(user, a)
            w = b.welcome
            assert w["resumed"] is False and w["reason"] == NewSessionReason.EXPIRED
            assert w["session"] != a.welcome["session"] and w["agent"]["id"] != a.welcome["agent"]["id"]
            assert w["agent"]["turns"] == 0 and w["head_seq"] == 0
            stats = await cs.stats()
            assert stats["agents_live"] == 1 and stats["sessions_detached"] == 0

    run(go())


def test_resume_of_a_session_from_another_epoch_gets_reason_epoch(shared_stub, user):
    async def go():
        async with Clients(shared_stub) as cs:
            c = await cs.connect(user)
            w = await c.hello("00000000.0123456789abcdef", 3)
            assert w["resumed"] is False and w["reason"] == NewSessionReason.EPOCH

    run(go())


def test_outbox_overflow_gives_a_new_session_with_reason_gap(stub_factory, user):
    stub = stub_factory(*FAST, "--outbox-limit", "4")

    async def go():
        async with Clients(stub) as cs:
            a = await cs.session(user)
            await a.reply("c1")  # 7 sequenced frames: 3 more than the outbox holds
            await a.close()
            b = await cs.resume(user, a, last_seq=1)
            w = b.welcome
            assert w["resumed"] is False and w["reason"] == NewSessionReason.GAP
            assert w["session"] != a.welcome["session"] and w["agent"]["id"] != a.welcome["agent"]["id"]
            assert (await cs.stats())["agents_live"] == 1

    run(go())


def test_last_seq_beyond_head_gives_a_new_session_with_reason_gap(shared_stub, user):
    async def go():
        async with Clients(shared_stub) as cs:
            a = await cs.session(user)
            await a.close()
            b = await cs.resume(user, a, last_seq=5)
            assert b.welcome["resumed"] is False and b.welcome["reason"] == NewSessionReason.GAP

    run(go())


def test_stats_has_every_documented_field(shared_stub):
    stats = shared_stub.stats()
    assert STATS_FIELDS <= set(stats)
    assert all(isinstance(stats[name], int | float) for name in STATS_FIELDS - {"epoch"})
    assert stats["pid"] == shared_stub.pid


def test_metrics_has_process_and_agentws_figures(shared_stub):
    status, text = http("GET", f"{shared_stub.url}/metrics")
    assert status == 200
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert "process_resident_memory_bytes" in names and "process_open_fds" in names
    for figure in ("connections", "agents_live", "sessions_attached", "duplicate_agents_total", "tasks"):
        assert f"agentws_{figure}" in names, figure


def test_healthz_answers_200(shared_stub):
    assert http("GET", f"{shared_stub.url}/healthz")[0] == 200


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "user"),
        ({"user": ""}, "user"),
        ({"user": 5}, "user"),
        ({"user": "u" * 129}, "user"),
        ({"user": "u", "ttl_s": 0}, "ttl_s"),
        ({"user": "u", "ttl_s": -1}, "ttl_s"),
        ({"user": "u", "ttl_s": "60"}, "ttl_s"),
        ({"user": "u", "ttl_s": True}, "ttl_s"),
        ({"user": "u", "ttl_s": 1e9}, "ttl_s"),
        ([1, 2], "object"),
    ],
)
def test_auth_token_refuses_bad_input_with_400_naming_the_field(shared_stub, body, field):
    status, answer = http("POST", f"{shared_stub.url}/auth/token", body)
    assert status == 400 and field in answer["error"]


def test_auth_token_refuses_a_body_that_is_not_json(shared_stub):
    status, answer = http("POST", f"{shared_stub.url}/auth/token", raw=b"{nope")
    assert status == 400 and "JSON" in answer["error"]


@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Basic abc"])
def test_admin_notify_without_the_admin_token_is_401(shared_stub, auth):
    headers = {"Authorization": auth} if auth else {}
    status, _ = http("POST", f"{shared_stub.url}/admin/notify", {"session": "x", "id": 1}, headers)
    assert status == 401


def test_admin_notify_for_an_unknown_session_is_404(shared_stub):
    headers = {"Authorization": f"Bearer {shared_stub.admin_token}"}
    status, _ = http("POST", f"{shared_stub.url}/admin/notify", {"session": "nope", "id": 1}, headers)
    assert status == 404


@pytest.mark.parametrize(
    "body, field",
    [
        ({"id": 1}, "session"),
        ({"session": 5, "id": 1}, "session"),
        ({"session": "s", "id": "1"}, "id"),
        ({"session": "s", "id": True}, "id"),
        ({"session": "s", "id": 1, "data": [1]}, "data"),
        ("just a string", "object"),
    ],
)
def test_admin_notify_with_a_bad_body_is_400(shared_stub, body, field):
    headers = {"Authorization": f"Bearer {shared_stub.admin_token}"}
    status, answer = http("POST", f"{shared_stub.url}/admin/notify", body, headers)
    assert status == 400 and field in answer["error"]


def test_short_lived_token_is_accepted_until_its_exp(shared_stub, user):
    async def go():
        async with Clients(shared_stub) as cs:
            for _ in range(10):
                c = await cs.connect(user, ttl_s=0.3)
                assert (await c.hello())["token_exp"] >= time.time()
                await c.close()

    run(go())
