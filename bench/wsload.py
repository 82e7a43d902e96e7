"""A minimal, fast asyncio WebSocket load client for the server_stub benchmarks.

One process of this module is a *worker*: it reads one JSON command per line on
stdin and answers each with one JSON line on stdout, keeping its sockets between
commands (so a benchmark can hold 7,500 sockets in each of two workers while it
samples the backend). Run by the benchmarks as::

    python bench/wsload.py worker [--cpu N]

The WebSocket side is ``asyncio.Protocol`` (uvloop when importable) around the
simulated users' own sans-I/O frame layer, ``users/frames.py``: the same upgrade
request, accept-key check, masking and frame parser, driven by asyncio here
instead of gevent.

Commands (``{"cmd": NAME, ...}``; every answer carries ``"ok": true`` or an
``"error"``):

``tokens``      {url, prefix, count, concurrency}: one token per user ``prefix{i}``
                from POST /auth/token (kept, in order).
``open``        {host, port, n, concurrency, mode}: open n sockets and keep them.
                mode ``hello``: hello (token i, new session) + welcome;
                mode ``echo``: one text frame and its echo (the bare-aiohttp baseline).
``close_all``   {concurrency}: close every kept socket (close 1000, wait for EOF).
``cycles``      {host, port, n, parallel, mode}: n × (connect + [hello + welcome |
                one message + echo] + close) with ``parallel`` loops; tokens are
                used round-robin. Answers the wall time.
``sessions``    {host, port, n, concurrency, msg}: n new sessions; with ``msg`` each
                sends one ``msg`` turn (and waits for ``accepted``); then every
                socket is closed so the session is detached. Session ids are kept.
``resume``      {host, port, concurrency}: for every kept session: connect, then
                hello{session, last_seq: 0} and time it until ``replayed``; close.
                Answers the latencies (seconds) and frames replayed.
``quit``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import deque
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as `python bench/wsload.py`

from agentws.protocol import WS_PATH
from users.frames import (
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
    HandshakeError,
    encode_close,
    encode_frame,
    new_key,
    parse_close,
    parse_upgrade_response,
    upgrade_request,
)

CONNECT_TIMEOUT_S = 30.0
CLOSE_WAIT_S = 2.0


class WSClosed(ConnectionError):
    pass


class WS(asyncio.Protocol):
    """One client WebSocket. ``recv()`` returns (opcode, payload bytes) of data frames."""

    __slots__ = ("loop", "transport", "buf", "key", "reader", "upgraded", "waiter", "frames", "lost",
                 "close_code", "sent_close")  # fmt: skip

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = b""  #: the upgrade response, until it is complete
        self.key = new_key()
        self.reader = FrameReader()
        self.upgraded = False
        self.waiter: asyncio.Future | None = None
        self.frames: deque = deque()
        self.lost: asyncio.Future = loop.create_future()
        self.close_code: int | None = None
        self.sent_close = False

    # -- asyncio.Protocol --------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        self._wake()

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            self.buf += data
            try:
                upgrade = parse_upgrade_response(self.buf, self.key)
            except HandshakeError:
                self.close_code = -1  # refused upgrade
                self.transport.close()
                return
            if upgrade is None:
                return
            self.upgraded, self.buf = True, b""
            self._wake()
            data = upgrade.rest
        self.reader.feed(data)
        while (msg := self.reader.next_message()) is not None:
            if msg.opcode == OP_PING:
                self.transport.write(encode_frame(OP_PONG, msg.payload))
            elif msg.opcode == OP_CLOSE:
                code, _ = parse_close(msg.payload)
                self.close_code = code or 1005
                if not self.sent_close:
                    self.sent_close = True
                    self.transport.write(encode_frame(OP_CLOSE, msg.payload[:2]))
                self._wake()
            elif msg.opcode != OP_PONG:
                self.frames.append(msg)
                self._wake()

    # -- API ------------------------------------------------------------------------
    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _wait(self) -> None:
        self.waiter = self.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    async def handshake(self, host: str, port: int, path: str) -> None:
        self.transport.write(upgrade_request(f"{host}:{port}", path, self.key))
        while not self.upgraded:
            if self.lost.done() or self.close_code is not None:
                raise WSClosed(f"upgrade refused or connection lost (close {self.close_code})")
            await self._wait()

    def send_text(self, data: bytes) -> None:
        self.transport.write(encode_frame(OP_TEXT, data))

    async def recv(self) -> bytes:
        """The next data frame's payload; WSClosed once the server closed."""
        while not self.frames:
            if self.close_code is not None or self.lost.done():
                raise WSClosed(f"closed ({self.close_code})")
            await self._wait()
        return self.frames.popleft()[1]

    async def recv_json(self) -> dict:
        return orjson.loads(await self.recv())

    async def close(self, code: int = 1000) -> None:
        """Send close, wait for the server to close the TCP connection (bounded), then drop it."""
        if self.transport is None:
            return
        if not self.sent_close and not self.lost.done():
            self.sent_close = True
            self.transport.write(encode_close(code))
        if not self.lost.done():
            try:
                await asyncio.wait_for(asyncio.shield(self.lost), CLOSE_WAIT_S)
            except TimeoutError:
                self.transport.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def connect(host: str, port: int, path: str = WS_PATH) -> WS:
    loop = asyncio.get_running_loop()
    _, ws = await loop.create_connection(lambda: WS(loop), host, port)
    try:
        await asyncio.wait_for(ws.handshake(host, port, path), CONNECT_TIMEOUT_S)
    except BaseException:
        ws.abort()
        raise
    return ws


# -- the worker ------------------------------------------------------------------------
class Worker:
    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.held: list[WS] = []
        self.sessions: list[tuple[str, str]] = []  #: (session id, token)
        self._next_token = 0

    def token(self) -> str:
        t = self.tokens[self._next_token % len(self.tokens)]
        self._next_token += 1
        return t

    async def cmd_tokens(self, url: str, prefix: str, count: int, concurrency: int = 32) -> dict:
        import aiohttp

        tokens: list[str | None] = [None] * count
        t0 = time.perf_counter()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
            it = iter(range(count))

            async def one_loop():
                for i in it:
                    async with http.post(f"{url}/auth/token", json={"user": f"{prefix}{i}", "ttl_s": 3600}) as r:
                        r.raise_for_status()
                        tokens[i] = (await r.json())["token"]

            await asyncio.gather(*(one_loop() for _ in range(concurrency)))
        self.tokens = tokens  # type: ignore[assignment]
        self._next_token = 0
        return {"count": count, "secs": time.perf_counter() - t0}

    async def _hello(self, ws: WS, token: str, **extra) -> dict:
        ws.send_text(orjson.dumps({"t": "hello", "v": 1, "token": token, **extra}))
        welcome = await ws.recv_json()
        if welcome.get("t") != "welcome":
            raise WSClosed(f"expected welcome, got {welcome!r}")
        return welcome

    async def _echo(self, ws: WS) -> None:
        ws.send_text(b'{"t":"ping"}')
        await ws.recv()

    async def _run_pool(self, n: int, concurrency: int, one) -> tuple[int, list[str]]:
        """Run ``one(i)`` for i in range(n) with at most ``concurrency`` in flight."""
        it = iter(range(n))
        failed = 0
        errors: list[str] = []

        async def loop_():
            nonlocal failed
            for i in it:
                try:
                    await one(i)
                except (OSError, WSClosed, TimeoutError, ValueError) as exc:
                    failed += 1
                    if len(errors) < 5:
                        errors.append(f"{type(exc).__name__}: {exc}")

        await asyncio.gather(*(loop_() for _ in range(min(concurrency, max(n, 1)))))
        return failed, errors

    async def cmd_open(self, host: str, port: int, n: int, concurrency: int = 100, mode: str = "hello") -> dict:
        t0 = time.perf_counter()
        start = len(self.held)

        async def one(i: int) -> None:
            ws = await connect(host, port)
            try:
                if mode == "hello":
                    await self._hello(ws, self.tokens[(start + i) % len(self.tokens)])
                else:
                    await self._echo(ws)
            except BaseException:
                ws.abort()
                raise
            self.held.append(ws)

        failed, errors = await self._run_pool(n, concurrency, one)
        return {
            "opened": len(self.held) - start,
            "held": len(self.held),
            "failed": failed,
            "errors": errors,
            "secs": time.perf_counter() - t0,
        }

    async def cmd_close_all(self, concurrency: int = 200) -> dict:
        held, self.held = self.held, []
        t0 = time.perf_counter()
        failed, errors = await self._run_pool(len(held), concurrency, lambda i: held[i].close())
        return {"closed": len(held), "secs": time.perf_counter() - t0}

    async def cmd_cycles(self, host: str, port: int, n: int, parallel: int = 8, mode: str = "hello") -> dict:
        async def one(i: int) -> None:
            ws = await connect(host, port)
            try:
                if mode == "hello":
                    await self._hello(ws, self.token())
                else:
                    await self._echo(ws)
                await ws.close()
            except BaseException:
                ws.abort()
                raise

        t0 = time.perf_counter()
        failed, errors = await self._run_pool(n, parallel, one)
        return {"n": n, "failed": failed, "errors": errors, "secs": time.perf_counter() - t0}

    async def cmd_sessions(self, host: str, port: int, n: int, concurrency: int = 50, msg: bool = True) -> dict:
        t0 = time.perf_counter()
        made: list[tuple[str, str]] = []

        async def one(i: int) -> None:
            token = self.tokens[i % len(self.tokens)]
            ws = await connect(host, port)
            try:
                welcome = await self._hello(ws, token)
                if msg:
                    ws.send_text(orjson.dumps({"t": "msg", "cid": f"c{i}", "text": f"bench turn {i}"}))
                    while (await ws.recv_json()).get("t") != "accepted":
                        pass
                await ws.close()
            except BaseException:
                ws.abort()
                raise
            made.append((welcome["session"], token))

        failed, errors = await self._run_pool(n, concurrency, one)
        self.sessions = made
        return {"sessions": len(made), "failed": failed, "errors": errors, "secs": time.perf_counter() - t0}

    async def cmd_resume(self, host: str, port: int, concurrency: int = 1) -> dict:
        latencies: list[float] = []
        replayed: list[int] = []
        not_resumed = 0
        sessions = self.sessions
        perf = time.perf_counter

        async def one(i: int) -> None:
            nonlocal not_resumed
            sid, token = sessions[i]
            ws = await connect(host, port)
            try:
                t0 = perf()
                welcome = await self._hello(ws, token, session=sid, last_seq=0)
                if not welcome.get("resumed"):
                    not_resumed += 1
                    await ws.close()
                    return
                frames = 0
                while True:
                    frame = await ws.recv_json()
                    if frame.get("t") == "replayed":
                        break
                    frames += 1
                latencies.append(perf() - t0)
                replayed.append(frames)
                await ws.close()
            except BaseException:
                ws.abort()
                raise

        t0 = perf()
        failed, errors = await self._run_pool(len(sessions), concurrency, one)
        return {
            "latencies": latencies,
            "replayed": replayed,
            "not_resumed": not_resumed,
            "failed": failed,
            "errors": errors,
            "secs": perf() - t0,
        }

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        out = sys.stdout
        while True:
            line = await reader.readline()
            if not line:
                break
            req = orjson.loads(line)
            name = req.pop("cmd")
            if name == "quit":
                break
            try:
                answer = {"ok": True, **await getattr(self, f"cmd_{name}")(**req)}
            except Exception as exc:  # reported to the parent, which decides
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            out.write(orjson.dumps(answer).decode() + "\n")
            out.flush()
        for ws in self.held:
            ws.abort()


def raise_nofile() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_loop(coro) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("role", choices=["worker"])
    ap.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    args = ap.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    raise_nofile()
    run_loop(Worker().run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
