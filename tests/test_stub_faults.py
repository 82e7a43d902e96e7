"""Each planted fault really shows (and the same scenario on a clean backend does not)."""

from __future__ import annotations

import asyncio
import time

import pytest

from agentws.protocol import Close, T
from server_stub.faults import LEAK_BYTES_PER_CONNECTION, SLOW_RESUME_RANGE_S, Fault
from tests.conftest import FAST
from tests.stubclient import Clients, run, sha256_of

SLOW = ("--chunk-delay-ms", "30", "--chunks-per-reply", "10")
CLEAN = None


def faults(fault: Fault):
    """Parametrize a scenario over the faulty backend and a clean one."""
    return pytest.mark.parametrize("fault", [fault, CLEAN], ids=["faulty", "clean"])


def start(stub_factory, fault: Fault | None, *args: str):
    return stub_factory(*args, *(["--fault", fault] if fault else []))


async def _cycles(cs: Clients, user: str, n: int) -> None:
    """Connect and close ``n`` times (no hello: the leaks happen per socket)."""
    for _ in range(n):
        c = await cs.connect(user)
        await c.close()
    cs.opened.clear()


async def _settle(cs: Clients, done, deadline_s: float = 5.0) -> dict:
    deadline = time.monotonic() + deadline_s
    while True:
        stats = await cs.stats()
        if done(stats) or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.05)


@faults(Fault.LEAK)
def test_leak_keeps_memory_for_every_connection(stub_factory, user, fault):
    stub = start(stub_factory, fault, *FAST, "--rate-limit", "0")
    n = 300

    async def go():
        async with Clients(stub) as cs:
            await _cycles(cs, user, 50)  # warm-up: allocator arenas, aiohttp caches
            before = (await _settle(cs, lambda s: s["connections"] == 0))["rss_bytes"]
            await _cycles(cs, user, n)
            after = (await _settle(cs, lambda s: s["connections"] == 0))["rss_bytes"]
            return (after - before) / n

    per_connection = run(go())
    if fault:
        assert per_connection >= 0.75 * LEAK_BYTES_PER_CONNECTION
    else:
        assert per_connection < 0.25 * LEAK_BYTES_PER_CONNECTION


@faults(Fault.FD_LEAK)
def test_fd_leak_keeps_one_descriptor_per_connection(stub_factory, user, fault):
    stub = start(stub_factory, fault, *FAST, "--rate-limit", "0")
    n = 40

    async def go():
        async with Clients(stub) as cs:
            await _cycles(cs, user, 5)
            before = (await _settle(cs, lambda s: s["connections"] == 0))["open_fds"]
            await _cycles(cs, user, n)
            after = await _settle(cs, lambda s: s["connections"] == 0 and (fault or s["open_fds"] <= before))
            return after["open_fds"] - before

    grown = run(go())
    if fault:
        assert grown >= n - 2
    else:
        assert grown <= 2


@faults(Fault.DUPLICATE_AGENT)
def test_duplicate_agent_changes_the_agent_on_resume(stub_factory, user, fault):
    stub = start(stub_factory, fault, *FAST)

    async def go():
        async with Clients(stub) as cs:
            a = await cs.session(user)
            await a.close()
            b = await cs.resume(user, a)
            assert b.welcome["resumed"] is True
            return a.welcome["agent"]["id"] != b.welcome["agent"]["id"], await cs.stats()

    changed, stats = run(go())
    assert changed == bool(fault)
    assert (stats["duplicate_agents_total"] > 0) == bool(fault)
    assert (stats["max_agents_per_session"] > 1) == bool(fault)


@faults(Fault.LOSE_OFFLINE)
def test_lose_offline_drops_pushes_for_a_detached_session(stub_factory, user, fault):
    stub = start(stub_factory, fault, *FAST)

    async def go():
        async with Clients(stub) as cs:
            a = await cs.session(user)
            await cs.notify(a.welcome["session"], 1, {"while": "attached"})
            await a.recv(T.NOTIFY)
            await a.close()
            await cs.notify(a.welcome["session"], 2, {"while": "detached"})
            b = await cs.resume(user, a)
            await b.recv(T.REPLAYED)
            await b.quiet(0.1)
            return [f["id"] for f in b.of(T.NOTIFY)]

    assert run(go()) == ([] if fault else [2])


@faults(Fault.STREAM_GAP)
def test_stream_gap_loses_chunks_made_while_detached(stub_factory, user, fault):
    stub = start(stub_factory, fault, *SLOW)

    async def go():
        async with Clients(stub) as cs:
            a = await cs.session(user)
            await a.send({"t": T.MSG, "cid": "c1", "text": "long"})
            await a.recv(T.CHUNK)
            await a.close()
            await asyncio.sleep(0.45)  # the rest of the reply (9 x 30 ms) is made while detached
            b = await cs.resume(user, a)
            await b.recv(T.REPLAYED)
            done = await b.recv(T.DONE) if not b.of(T.DONE) else b.of(T.DONE)[0]
            seqs = a.seqs() + b.seqs()
            chunks = a.of(T.CHUNK) + b.of(T.CHUNK)
            return seqs == list(range(1, done["seq"] + 1)), sha256_of(chunks) == done["sha256"]

    contiguous, sha_ok = run(go())
    assert contiguous is not bool(fault)
    assert sha_ok is not bool(fault)


@faults(Fault.NO_REAP)
def test_no_reap_leaves_a_silent_socket_open_past_idle_timeout(stub_factory, user, fault):
    stub = start(stub_factory, fault, *FAST, "--hb-interval-ms", "200")

    async def go():
        async with Clients(stub) as cs:
            c = await cs.session(user)
            deadline = c.welcome["idle_timeout_ms"] / 1000 + 1
            try:
                return await c.recv_closed(timeout=deadline)
            except TimeoutError:
                return None

    assert run(go()) == (None if fault else Close.HEARTBEAT_TIMEOUT)


def test_slow_resume_takes_at_least_one_and_a_half_seconds(stub_factory, user):
    stub = start(stub_factory, Fault.SLOW_RESUME, *FAST)

    async def go():
        async with Clients(stub) as cs:
            a = await cs.session(user)
            await a.close()
            b = await cs.connect(user)
            started = time.monotonic()
            await b.hello(a.welcome["session"], a.last_seq)
            assert b.welcome["resumed"] is True
            return time.monotonic() - started

    assert run(go()) >= SLOW_RESUME_RANGE_S[0]


@faults(Fault.REFRESH_BREAKS)
def test_refresh_breaks_closes_the_socket_after_refresh(stub_factory, user, fault):
    stub = start(stub_factory, fault, *FAST)

    async def go():
        async with Clients(stub) as cs:
            c = await cs.session(user)
            fresh = await cs.token(user)
            await c.send({"t": T.REFRESH, "id": 1, "token": fresh})
            await c.recv(T.REFRESHED)
            await c.send({"t": T.HB, "id": 2})
            try:
                return await c.recv_closed(timeout=0.5)
            except TimeoutError:
                return None

    code = run(go())
    if fault:
        assert code is not None and code != Close.BYE
    else:
        assert code is None


@faults(Fault.FORGET_ON_RESTART)
def test_forget_on_restart_loses_the_session_created_just_before(stub_factory, user, fault):
    stub = start(stub_factory, fault, *FAST, "--flush-interval-ms", "60000")

    async def create():
        async with Clients(stub) as cs:
            a = await cs.session(user)
            await a.reply("c1")
            return a

    async def resume(a):
        async with Clients(stub) as cs:
            return (await cs.resume(user, a)).welcome

    a = run(create())
    stub.restart()
    welcome = run(resume(a))
    assert welcome["resumed"] is not bool(fault)


def test_clean_backend_returns_to_baseline_after_cycles_and_expiry(stub_factory, user):
    stub = stub_factory(*FAST, "--resume-window", "1", "--rate-limit", "0")

    async def go():
        async with Clients(stub) as cs:
            baseline = await cs.stats()  # a fresh process: nothing opened yet
            for _ in range(30):
                c = await cs.session(user)
                await c.reply("c1")
                await c.close()
            cs.opened.clear()
            during = await cs.stats()
            after = await _settle(
                cs, lambda s: s["agents_live"] == 0 and s["open_fds"] <= baseline["open_fds"] + 2, deadline_s=4
            )
            return baseline, during, after

    baseline, during, after = run(go())
    assert during["agents_live"] > 0
    assert after["agents_live"] == 0 and after["max_agents_per_session"] == 0
    assert after["sessions_attached"] == 0 and after["sessions_detached"] == 0 and after["connections"] == 0
    assert after["outbox_frames"] == 0
    assert after["agents_destroyed_total"] == after["agents_created_total"]
    assert abs(after["open_fds"] - baseline["open_fds"]) <= 2
    assert after["tasks"] <= baseline["tasks"] + 1


def test_duplicate_agent_with_a_reply_pending_survives_a_restart(stub_factory, user, tmp_path):
    """The fault replaces the agent while a turn is pending: the snapshot must still restore (it used
    to fail the backend's start-up with a KeyError, so a restart under the fault never came back)."""
    stub = start(stub_factory, Fault.DUPLICATE_AGENT, *SLOW, "--store", f"sqlite:{tmp_path}/dup.db")

    async def go():
        async with Clients(stub) as cs:
            a = await cs.session(user)
            await a.send({"t": T.MSG, "cid": "c1", "text": "first"})
            await a.recv(T.CHUNK)
            await a.close()
            b = await cs.resume(user, a)
            assert b.welcome["agent"]["id"] != a.welcome["agent"]["id"]
            await b.close()
        await asyncio.to_thread(stub.restart)
        async with Clients(stub) as cs:
            c = await cs.resume(user, b)
            done = await c.recv(T.DONE)
            return c.welcome, done

    welcome, done = run(go())
    assert welcome["resumed"] is True
    assert done["turn"] == 1 and done["n"] == 10
