"""A small asyncio agentws/1 client for the server_stub tests.

Every frame received is kept in ``frames`` (in order); ``last_seq`` is the
highest ``seq`` seen, which is what a resume sends. Waits are bounded:
``recv`` raises ``TimeoutError`` and ``Closed`` instead of hanging.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import urllib.error
import urllib.request
from typing import Any

import aiohttp

from agentws.protocol import VERSION, T

DEFAULT_TIMEOUT_S = 5.0


class Closed(Exception):
    """The server closed the socket while a frame was awaited."""

    def __init__(self, code: int | None) -> None:
        super().__init__(f"socket closed with {code}")
        self.code = code


async def get_token(http: aiohttp.ClientSession, url: str, user: str, ttl_s: float | None = None) -> str:
    body: dict[str, Any] = {"user": user}
    if ttl_s is not None:
        body["ttl_s"] = ttl_s
    async with http.post(f"{url}/auth/token", json=body) as r:
        r.raise_for_status()
        return (await r.json())["token"]


async def notify(http: aiohttp.ClientSession, stub, session: str, push_id: int, data: dict | None = None) -> dict:
    headers = {"Authorization": f"Bearer {stub.admin_token}"}
    body = {"session": session, "id": push_id, "data": data or {}}
    async with http.post(f"{stub.url}/admin/notify", json=body, headers=headers) as r:
        assert r.status == 202, await r.text()
        return await r.json()


async def stats(http: aiohttp.ClientSession, stub) -> dict:
    async with http.get(f"{stub.url}/stats") as r:
        return await r.json()


def sha256_of(chunks: list[dict]) -> str:
    deltas = [c["delta"] for c in sorted(chunks, key=lambda c: c["i"])]
    return hashlib.sha256("".join(deltas).encode()).hexdigest()


class Client:
    """One WebSocket to the stub, for one user."""

    def __init__(self, stub, user: str, http: aiohttp.ClientSession) -> None:
        self.stub = stub
        self.user = user
        self.http = http
        self.token: str | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.frames: list[dict] = []
        self.welcome: dict | None = None
        self.last_seq = 0
        self.close_code: int | None = None

    async def connect(self, *, token: str | None = None, ttl_s: float | None = None) -> Client:
        self.token = token or await get_token(self.http, self.stub.url, self.user, ttl_s)
        self.ws = await self.http.ws_connect(self.stub.ws_url, autoclose=True, autoping=True, max_msg_size=0)
        return self

    async def hello(self, session: str | None = None, last_seq: int | None = None, **extra: Any) -> dict:
        """Send ``hello`` and return the ``welcome``."""
        frame: dict[str, Any] = {"t": T.HELLO, "v": VERSION, "token": self.token, **extra}
        if session is not None:
            frame["session"] = session
        if last_seq is not None:
            frame["last_seq"] = last_seq
            self.last_seq = max(self.last_seq, last_seq)
        await self.send(frame)
        self.welcome = await self.recv(T.WELCOME)
        return self.welcome

    async def send(self, frame: dict | str | bytes) -> None:
        assert self.ws is not None
        if isinstance(frame, bytes):
            await self.ws.send_bytes(frame)
        elif isinstance(frame, str):
            await self.ws.send_str(frame)
        else:
            await self.ws.send_str(json.dumps(frame))

    async def next_frame(self, timeout: float = DEFAULT_TIMEOUT_S) -> dict:
        """The next frame, whatever its type; ``Closed`` when the server closed instead."""
        assert self.ws is not None
        msg = await self.ws.receive(timeout=timeout)
        if msg.type is aiohttp.WSMsgType.TEXT:
            frame = json.loads(msg.data)
            self.frames.append(frame)
            if "seq" in frame:
                self.last_seq = max(self.last_seq, frame["seq"])
            return frame
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            self.close_code = self.ws.close_code
            raise Closed(self.close_code)
        if msg.type is aiohttp.WSMsgType.ERROR:
            self.close_code = self.ws.close_code
            raise Closed(self.close_code)
        raise AssertionError(f"unexpected message {msg.type}: {msg.data!r}")

    async def recv(self, t: str | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> dict:
        """The next frame of type ``t`` (any type when None); frames before it stay in ``frames``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {t or 'frame'} within {timeout} s; got {[f.get('t') for f in self.frames]}")
            frame = await self.next_frame(remaining)
            if t is None or frame.get("t") == t:
                return frame

    async def recv_closed(self, timeout: float = DEFAULT_TIMEOUT_S) -> int | None:
        """Read (and keep) frames until the server closes; returns the close code."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"socket still open after {timeout} s")
            try:
                await self.next_frame(remaining)
            except Closed as closed:
                return closed.code

    async def quiet(self, for_s: float) -> list[dict]:
        """Frames that arrive within ``for_s`` (the socket must stay open)."""
        got = []
        deadline = time.monotonic() + for_s
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                got.append(await self.next_frame(remaining))
            except TimeoutError:
                break
        return got

    async def reply(self, cid: str, text: str = "hi", timeout: float = DEFAULT_TIMEOUT_S) -> tuple[dict, list, dict]:
        """Send a ``msg`` and wait for its reply: (accepted, chunks, done)."""
        await self.send({"t": T.MSG, "cid": cid, "text": text})
        accepted = await self.recv(T.ACCEPTED, timeout)
        done = await self.recv(T.DONE, timeout)
        return accepted, self.of(T.CHUNK, turn=accepted["turn"]), done

    def of(self, t: str, **match: Any) -> list[dict]:
        return [f for f in self.frames if f.get("t") == t and all(f.get(k) == v for k, v in match.items())]

    def seqs(self) -> list[int]:
        return [f["seq"] for f in self.frames if "seq" in f]

    async def close(self) -> None:
        if self.ws is not None and not self.ws.closed:
            await self.ws.close()


class Clients:
    """An aiohttp session and the clients opened on it; closes all of them on exit."""

    def __init__(self, stub) -> None:
        self.stub = stub
        self.http: aiohttp.ClientSession | None = None
        self.opened: list[Client] = []

    async def __aenter__(self) -> Clients:
        # an https/wss stub (--tls-cert) is trusted through its StubProcess's context (the test CA)
        tls = getattr(self.stub, "ssl_context", None) or True
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ssl=tls))
        return self

    async def __aexit__(self, *exc) -> None:
        for c in self.opened:
            await c.close()
        assert self.http is not None
        await self.http.close()

    async def connect(self, user: str, **kw: Any) -> Client:
        assert self.http is not None
        client = Client(self.stub, user, self.http)
        self.opened.append(client)
        return await client.connect(**kw)

    async def session(self, user: str, **kw: Any) -> Client:
        """A connected client with a new session (``welcome`` received)."""
        client = await self.connect(user, **kw)
        await client.hello()
        return client

    async def resume(self, user: str, old: Client, last_seq: int | None = None, **kw: Any) -> Client:
        """A new socket resuming ``old``'s session from ``last_seq`` (default: the last seq ``old`` saw)."""
        client = await self.connect(user, **kw)
        await client.hello(old.welcome["session"], old.last_seq if last_seq is None else last_seq)
        return client

    async def token(self, user: str, ttl_s: float | None = None) -> str:
        assert self.http is not None
        return await get_token(self.http, self.stub.url, user, ttl_s)

    async def stats(self) -> dict:
        assert self.http is not None
        return await stats(self.http, self.stub)

    async def notify(self, session: str, push_id: int, data: dict | None = None) -> dict:
        assert self.http is not None
        return await notify(self.http, self.stub, session, push_id, data)


def run(coro):
    """Run a test coroutine with an overall bound, so no test can hang."""
    return asyncio.run(asyncio.wait_for(coro, 60))


def http(method: str, url: str, body: Any = None, headers: dict | None = None, raw: bytes | None = None):
    """A blocking HTTP request: (status, parsed JSON body or text)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text
