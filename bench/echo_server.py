"""The baseline: a minimal aiohttp WebSocket echo server (uvloop), nothing of agentws.

It uses the same ``WebSocketResponse`` options as ``server_stub/http.py`` so the
difference between the two is what server_stub adds on top of aiohttp. It
prints one JSON line (``{"url", "ws_url", "pid"}``) when listening and exits on
SIGTERM / SIGINT.

    python bench/echo_server.py [--port 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys

from aiohttp import WSMsgType, web


async def ws_echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False, max_msg_size=64 * 1024, timeout=2.0, autoping=True)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type is WSMsgType.TEXT:
            await ws.send_str(msg.data)
        else:
            break
    return ws


async def serve(host: str, port: int) -> None:
    app = web.Application()
    app.router.add_get("/ws", ws_echo)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    h, p = site._server.sockets[0].getsockname()[:2]
    print(json.dumps({"url": f"http://{h}:{p}", "ws_url": f"ws://{h}:{p}/ws", "pid": os.getpid()}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> int:
    ap = argparse.ArgumentParser(description="minimal aiohttp WebSocket echo server (benchmark baseline)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
