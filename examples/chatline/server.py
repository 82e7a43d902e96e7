"""chatline: a small chat backend speaking a JSON dialect of its own, for the adapter guide (docs/ADAPTERS.md).

Not agentws/1: other field names (``op``, not ``t``), numeric message numbers
(``no``), credentials in the first frame (``auth``), and a heartbeat the *server*
drives (``ping`` every ``ping_every_ms``; a connection that answers none for
``idle_after_ms`` is closed with 4000). The protocol, in full:

client -> server
  {"op": "auth", "bearer": TOKEN, "sid": SID?, "after": NO?}   first frame: open, or resume SID after NO
  {"op": "pong", "n": N}                                       answer to ping N
  {"op": "say", "ref": REF, "text": TEXT}                       a message; the reply streams back
  {"op": "seen", "upto": NO}                                   everything up to NO arrived (the server forgets it)
  {"op": "reauth", "bearer": TOKEN, "ref": REF}                new credentials on the open socket
  {"op": "history", "ref": REF}                                the conversation so far
  {"op": "quit"}                                               end the session for good
server -> client
  {"op": "ready", "sid", "agent", "restored": bool, "why": "expired"?, "turns", "exp",
   "ping_every_ms", "idle_after_ms", "keep_s"}                 keep_s: how long a session outlives its connection
  {"op": "ping", "n": N}
  {"op": "part", "no", "ref", "turn", "idx", "text"}          a piece of the reply to REF
  {"op": "end", "no", "ref", "turn", "parts", "digest"}        its end: sha256 of the pieces joined
  {"op": "push", "no", "id", "body"}                           something sent to the session (POST /inject)
  {"op": "caught_up", "no"}                                    a resume's replay is over
  {"op": "reauthed", "ref", "exp"}
  {"op": "log", "ref", "turns": [{"turn", "ref", "text", "digest"}]}   the conversation (digest once replied)
  {"op": "expiring", "grace_ms"}                               the credentials run out: reauth within the grace
Close codes: 4000 idle, 4001 credentials expired, 4002 taken over by a newer connection, 4003 bad credentials,
1001 shutting down.

HTTP: ``POST /auth/token {"user", "ttl_s"}`` -> ``{"token", "exp"}``; ``POST /inject {"sid", "id", "body"}``
(``Authorization: Bearer ADMIN``) queues a push, attached or not; ``GET /stats`` -> connections, sessions.

``--lose-while-away`` plants a bug: pushes to a session whose client is away are dropped, not queued.
On start it prints one JSON line: ``{"url", "pid", "admin_token"}``.

    python examples/chatline/server.py [--port 0] [--ping-every-ms 1000] [--lose-while-away]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

SECRET = secrets.token_bytes(16)
PARTS = ("chat", "line ", "says ", "hello")
PART_GAP_S = 0.03


def token_for(user: str, ttl_s: float) -> tuple[str, float]:
    exp = time.time() + ttl_s
    body = f"{user}|{exp:.3f}"
    return body + "|" + hmac.new(SECRET, body.encode(), hashlib.sha256).hexdigest()[:24], exp


def check_token(token: object) -> tuple[str, float] | None:
    """(user, exp) of a valid, unexpired token; None otherwise."""
    if not isinstance(token, str) or token.count("|") != 2:
        return None
    user, exp, sig = token.split("|")
    good = hmac.new(SECRET, f"{user}|{exp}".encode(), hashlib.sha256).hexdigest()[:24]
    if not hmac.compare_digest(sig, good) or float(exp) <= time.time():
        return None
    return user, float(exp)


@dataclass
class Session:
    sid: str
    user: str
    agent: str
    last_no: int = 0
    turns: int = 0
    outbox: list[dict] = field(default_factory=list)  #: sent, not yet seen
    log: list[dict] = field(default_factory=list)  #: the conversation: turn, ref, text, digest
    ws: web.WebSocketResponse | None = None
    detached_at: float = 0.0


class Chatline:
    def __init__(self, args) -> None:
        self.args = args
        self.sessions: dict[str, Session] = {}
        self.connections = 0
        self.admin_token = secrets.token_hex(8)

    # -- sessions ------------------------------------------------------------------
    def open(self, user: str, sid: object, after: object) -> tuple[Session, bool, str]:
        s = self.sessions.get(sid) if isinstance(sid, str) else None
        if s is not None and s.user == user:
            return s, True, ""
        why = "expired" if isinstance(sid, str) else ""
        sid = secrets.token_hex(8)
        s = self.sessions[sid] = Session(sid, user, "agent-" + secrets.token_hex(4))
        return s, False, why

    async def send(self, s: Session, frame: dict) -> None:
        """Number the frame, keep it until seen, send it if the client is there."""
        s.last_no += 1
        frame["no"] = s.last_no
        s.outbox.append(frame)
        if s.ws is not None and not s.ws.closed:
            await s.ws.send_str(json.dumps(frame))

    async def expire(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for sid, s in list(self.sessions.items()):
                if s.ws is None and now - s.detached_at > self.args.resume_window_s:
                    del self.sessions[sid]

    # -- one connection ------------------------------------------------------------------
    async def serve(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.connections += 1
        try:
            await self._serve(ws)
        finally:
            self.connections -= 1
        return ws

    async def _serve(self, ws: web.WebSocketResponse) -> None:
        try:
            first = await ws.receive(timeout=5.0)
            auth = json.loads(first.data) if first.type == WSMsgType.TEXT else {}
        except (TimeoutError, ValueError):
            auth = {}
        who = check_token(auth.get("bearer")) if isinstance(auth, dict) and auth.get("op") == "auth" else None
        if who is None:
            await ws.close(code=4003, message=b"bad credentials")
            return
        s, restored, why = self.open(who[0], auth.get("sid"), auth.get("after"))
        if s.ws is not None and not s.ws.closed:
            await s.ws.close(code=4002, message=b"taken over")
        s.ws, exp = ws, who[1]
        a = self.args
        ready = {
            "op": "ready", "sid": s.sid, "agent": s.agent, "restored": restored, "exp": exp, "turns": s.turns,
            "ping_every_ms": a.ping_every_ms, "idle_after_ms": a.idle_after_ms, "keep_s": a.resume_window_s,
        }  # fmt: skip
        if why:
            ready["why"] = why
        await ws.send_str(json.dumps(ready))
        if restored:
            after = auth.get("after") if isinstance(auth.get("after"), int) else 0
            for frame in [f for f in s.outbox if f["no"] > after]:
                await ws.send_str(json.dumps(frame))
            await ws.send_str(json.dumps({"op": "caught_up", "no": s.last_no}))
        state = {"heard": time.monotonic(), "exp": exp, "warned": False}
        pinger = asyncio.ensure_future(self._ping(ws, state))
        try:
            await self._read(ws, s, state)
        finally:
            pinger.cancel()
            if s.ws is ws:
                s.ws, s.detached_at = None, time.monotonic()

    async def _ping(self, ws: web.WebSocketResponse, state: dict) -> None:
        n, a = 0, self.args
        while not ws.closed:
            await asyncio.sleep(a.ping_every_ms / 1000)
            now = time.monotonic()
            if now - state["heard"] > a.idle_after_ms / 1000:
                await ws.close(code=4000, message=b"idle")
                return
            if time.time() > state["exp"]:
                if not state["warned"]:
                    state["warned"], state["grace_until"] = True, now + a.grace_ms / 1000
                    await ws.send_str(json.dumps({"op": "expiring", "grace_ms": a.grace_ms}))
                elif now > state["grace_until"]:
                    await ws.close(code=4001, message=b"credentials expired")
                    return
            n += 1
            await ws.send_str(json.dumps({"op": "ping", "n": n}))

    async def _read(self, ws: web.WebSocketResponse, s: Session, state: dict) -> None:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                break
            state["heard"] = time.monotonic()
            frame = json.loads(msg.data)
            op = frame.get("op")
            if op == "say":
                asyncio.ensure_future(self._reply(s, frame.get("ref"), str(frame.get("text", ""))))
            elif op == "seen" and isinstance(frame.get("upto"), int):
                s.outbox = [f for f in s.outbox if f["no"] > frame["upto"]]
            elif op == "reauth":
                who = check_token(frame.get("bearer"))
                if who is None or who[0] != s.user:
                    await ws.close(code=4003, message=b"bad credentials")
                    return
                state.update(exp=who[1], warned=False)
                await ws.send_str(json.dumps({"op": "reauthed", "ref": frame.get("ref"), "exp": who[1]}))
            elif op == "history":
                await ws.send_str(json.dumps({"op": "log", "ref": frame.get("ref"), "turns": s.log[-100:]}))
            elif op == "quit":
                self.sessions.pop(s.sid, None)
                await ws.close(code=1000)
                return

    async def _reply(self, s: Session, ref: object, text: str) -> None:
        """The reply streams on whether or not the client stays: what it misses is replayed on resume."""
        s.turns += 1
        turn = s.turns
        entry = {"turn": turn, "ref": ref, "text": text, "digest": None}
        s.log.append(entry)
        for idx, piece in enumerate(PARTS):
            await self.send(s, {"op": "part", "ref": ref, "turn": turn, "idx": idx, "text": piece})
            await asyncio.sleep(PART_GAP_S)
        digest = entry["digest"] = hashlib.sha256("".join(PARTS).encode()).hexdigest()
        await self.send(s, {"op": "end", "ref": ref, "turn": turn, "parts": len(PARTS), "digest": digest})

    # -- HTTP -------------------------------------------------------------------------
    async def token(self, request: web.Request) -> web.Response:
        body = await request.json()
        token, exp = token_for(str(body.get("user", "")), float(body.get("ttl_s") or 300))
        return web.json_response({"token": token, "exp": exp})

    async def inject(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.admin_token}":
            return web.json_response({"error": "unauthorized"}, status=401)
        body = await request.json()
        s = self.sessions.get(body.get("sid"))
        if s is None:
            return web.json_response({"error": "no such session"}, status=404)
        if self.args.lose_while_away and s.ws is None:
            return web.json_response({"queued": True})  # the planted bug: said queued, dropped
        await self.send(s, {"op": "push", "id": body.get("id"), "body": body.get("body")})
        return web.json_response({"queued": True})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"pid": os.getpid(), "connections": self.connections, "sessions": len(self.sessions)})


async def main(args) -> None:
    app = web.Application()
    chat = Chatline(args)
    app.router.add_get("/chat", chat.serve)
    app.router.add_post("/auth/token", chat.token)
    app.router.add_post("/inject", chat.inject)
    app.router.add_get("/stats", chat.stats)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    url = f"http://{args.host}:{port}"
    print(json.dumps({"url": url, "ws_url": url.replace("http", "ws", 1) + "/chat", "pid": os.getpid(),
                      "admin_token": chat.admin_token}))  # fmt: skip
    sys.stdout.flush()
    expiry = asyncio.ensure_future(chat.expire())
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    watcher = asyncio.ensure_future(watch_parent(args.parent_pid, stop)) if args.parent_pid else None
    await stop.wait()
    if watcher is not None:
        watcher.cancel()
    expiry.cancel()
    for s in chat.sessions.values():
        if s.ws is not None:
            await s.ws.close(code=1001, message=b"shutting down")
    await runner.cleanup()


async def watch_parent(pid: int, stop: asyncio.Event) -> None:
    """Stop when the process that started this one is gone: never outlive the harness."""
    while True:
        await asyncio.sleep(1.0)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            stop.set()
            return


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--parent-pid", type=int, default=0, help="exit when this process is gone")
    ap.add_argument("--ping-every-ms", type=int, default=1000)
    ap.add_argument("--idle-after-ms", type=int, default=2500)
    ap.add_argument("--grace-ms", type=int, default=2000)
    ap.add_argument("--resume-window-s", type=float, default=10.0)
    ap.add_argument("--lose-while-away", action="store_true", help="planted bug: drop pushes to an absent client")
    return ap.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
