"""Sessions across a backend restart, for each store: SIGTERM, kill -9, and the memory store's new epoch."""

from __future__ import annotations

import asyncio

import pytest

from agentws.protocol import Close, NewSessionReason, T
from tests.conftest import FAST
from tests.stubclient import Clients, run, sha256_of

#: Replies long enough (10 chunks, 50 ms apart) that a restart lands in the middle of one.
SLOW = ("--chunk-delay-ms", "50", "--chunks-per-reply", "10")

STORES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
]


@pytest.fixture
def store(request, tmp_path):
    """The ``--store`` spec of the parametrized kind (a real redis-server for redis).

    Tests name it before ``stub_factory`` so that redis outlives the backends' final flush.
    """
    if request.param == "redis":
        return request.getfixturevalue("redis_url")
    return f"sqlite:{tmp_path}/restart.db"


async def restart_while_reading(stub, client, *, hard: bool = False) -> int | None:
    """Restart the backend in a thread while ``client`` reads, so it answers the close handshake."""
    restarting = asyncio.create_task(asyncio.to_thread(stub.restart, hard=hard))
    code = await client.recv_closed(timeout=10)
    await restarting
    return code


@pytest.mark.parametrize("store", STORES, indirect=True)
def test_sigterm_restart_resumes_session_agent_history_and_the_interrupted_stream(store, stub_factory, user):
    stub = stub_factory(*SLOW, store=store)

    async def go():
        async with Clients(stub) as cs:
            a = await cs.session(user)
            _, _, done1 = await a.reply("c1", "first")
            await a.send({"t": T.MSG, "cid": "c2", "text": "second"})
            await a.recv(T.CHUNK)
            await a.close()
            b = await cs.resume(user, a)  # its welcome is the agent state to compare after the restart
            epoch = b.welcome["epoch"]
            assert await restart_while_reading(stub, b) == Close.SERVICE_RESTART
            goaway = b.frames[-1]
            assert goaway["t"] == T.GOAWAY and goaway["retry_after_ms"] > 0
            assert not b.of(T.DONE, turn=2), "the restart must interrupt the reply for this test to mean anything"

            c = await cs.resume(user, b)
            assert c.welcome["resumed"] is True and c.welcome["epoch"] == epoch
            assert c.welcome["session"] == a.welcome["session"]
            assert c.welcome["agent"] == b.welcome["agent"] and c.welcome["agent"]["turns"] == 2
            await c.recv(T.REPLAYED)
            while not c.of(T.DONE, turn=2):
                await c.recv(T.DONE)
            [done2] = c.of(T.DONE, turn=2)

            turn2 = [f for f in a.of(T.CHUNK) + b.of(T.CHUNK) + c.of(T.CHUNK) if f["turn"] == 2]
            assert sorted(f["i"] for f in turn2) == list(range(10))
            assert done2["sha256"] == sha256_of(turn2)
            assert sorted(set(a.seqs() + b.seqs() + c.seqs())) == list(range(1, done2["seq"] + 1))
            assert b.seqs() + c.seqs() == list(range(a.last_seq + 1, done2["seq"] + 1))

            await c.send({"t": T.HISTORY, "id": 1})
            turns = (await c.recv(T.HISTORY))["turns"]
            assert [(t["cid"], t["reply_sha256"]) for t in turns] == [("c1", done1["sha256"]), ("c2", done2["sha256"])]

    run(go())


@pytest.mark.parametrize("store", STORES, indirect=True)
def test_kill_9_keeps_state_older_than_the_flush_interval(store, stub_factory, user):
    # kill -9 skips the final flush: whatever changed in the last --flush-interval-ms (200 ms here)
    # is lost, and a client that saw such frames gets reason "gap". State older than that survives.
    stub = stub_factory(*FAST, "--flush-interval-ms", "200", store=store)

    async def go():
        async with Clients(stub) as cs:
            a = await cs.session(user)
            _, _, done = await a.reply("c1")
            await asyncio.sleep(0.6)  # three flush intervals
            await stub_kill_and_start(stub)
            b = await cs.connect(user)
            await b.hello(a.welcome["session"], 0)
            assert b.welcome["resumed"] is True
            assert b.welcome["agent"]["id"] == a.welcome["agent"]["id"] and b.welcome["agent"]["turns"] == 1
            await b.recv(T.REPLAYED)
            assert b.seqs() == a.seqs() and b.of(T.DONE) == [done]

    run(go())


async def stub_kill_and_start(stub) -> None:
    await asyncio.to_thread(stub.restart, hard=True)


def test_memory_store_restart_answers_reason_epoch(stub_factory, user):
    stub = stub_factory(*FAST, store="memory")

    async def go():
        async with Clients(stub) as cs:
            a = await cs.session(user)
            await a.reply("c1")
            assert await restart_while_reading(stub, a) == Close.SERVICE_RESTART
            b = await cs.connect(user)  # memory keeps no signing secret either: StubProcess passes one
            w = await b.hello(a.welcome["session"], a.last_seq)
            assert w["resumed"] is False and w["reason"] == NewSessionReason.EPOCH
            assert w["epoch"] != a.welcome["epoch"] and w["agent"]["id"] != a.welcome["agent"]["id"]

    run(go())


def test_windows_run_on_the_wall_clock_across_a_kill_9(stub_factory, user):
    # A session attached at the crash is restored with its window starting at the restart; one
    # that was detached before the crash must still expire on its own schedule, not after it.
    stub = stub_factory(*FAST, "--resume-window", "2", "--flush-interval-ms", "100")

    async def go():
        async with Clients(stub) as cs:
            detached = await cs.session(user)
            await detached.close()
            await cs.session(f"{user}-attached")
            await asyncio.sleep(1.0)  # flushed: one detached, one attached
            await stub_kill_and_start(stub)
            await asyncio.sleep(1.2)  # past the detached session's window, well inside the other's
            late = await cs.resume(user, detached)
            assert late.welcome["resumed"] is False and late.welcome["reason"] == NewSessionReason.EXPIRED

    run(go())
