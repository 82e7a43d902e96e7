"""Start, run and stop the backend: restore from the store, serve, drain on SIGTERM.

On start one JSON line goes to stdout (``{"event": "listening", "url": ...,
"pid": ...}``) so a parent process can find the port. On SIGTERM or SIGINT
every client gets ``goaway`` and close 1012, the store is flushed, and the
process exits 0 within 5 s.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import ssl
import sys
import time

from aiohttp import web

from agentws.protocol import WS_PATH, Close, T

from .backend import Backend
from .config import Config
from .faults import Fault
from .http import build_app
from .model import Session
from .registry import Registry
from .stores import open_store
from .tokens import TokenIssuer

log = logging.getLogger("server_stub")

DRAIN_TIMEOUT_S = 3.0


async def flush(registry: Registry, store) -> None:
    snapshots, deleted = registry.take_changes()
    if not snapshots and not deleted:
        return
    try:
        await store.save(snapshots, deleted)
    except Exception:
        log.exception("store write failed; will retry")
        registry.dirty.update(s["id"] for s in snapshots)
        registry.deleted.update(deleted)


async def housekeeping(backend: Backend, store) -> None:
    """Expire sessions often enough for the resume window; write to the store every flush interval."""
    config, registry = backend.config, backend.registry
    flush_every = config.flush_interval_ms / 1000
    tick = min(flush_every, max(0.05, config.resume_window_s / 4))
    next_flush = time.monotonic() + flush_every
    while True:
        await asyncio.sleep(tick)
        registry.expire(time.time())
        backend.limiter.prune()
        if time.monotonic() >= next_flush:
            next_flush = time.monotonic() + flush_every
            await flush(registry, store)


async def watch_parent(pid: int, stop: asyncio.Event) -> None:
    """Stop when the process that started us is gone: an embedded backend must not outlive its harness."""
    while os.getppid() == pid:
        await asyncio.sleep(1.0)
    log.warning("parent process %d is gone: draining and exiting", pid)
    stop.set()


async def drain(backend: Backend) -> None:
    """Tell every client to come back later, then close them all with 1012."""
    goaway = {"t": T.GOAWAY, "retry_after_ms": backend.config.shutdown_retry_after_ms}
    for conn in list(backend.connections):
        conn.close_soon(Close.SERVICE_RESTART, "service restart", goaway)
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while backend.connections and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    for conn in list(backend.connections):
        transport = conn.ws._req.transport if conn.ws._req is not None else None
        if transport is not None:
            transport.abort()


def tls_context(config: Config) -> ssl.SSLContext | None:
    """The server's TLS context for ``--tls-cert``/``--tls-key``; None serves plain http/ws."""
    if not config.tls:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(config.tls_cert, config.tls_key)
    return ctx


async def serve(config: Config, announce=print) -> int:
    try:
        tls = tls_context(config)
    except (OSError, ssl.SSLError) as exc:  # readable but not a matching PEM pair
        print(f"server_stub: cannot load --tls-cert/--tls-key: {exc}", file=sys.stderr)
        return 2
    store = open_store(config.store)
    try:
        loaded = await store.open(config.jwt_secret)
    except Exception as exc:
        print(f"server_stub: cannot open store {config.store}: {exc}", file=sys.stderr)
        return 2
    registry = Registry(loaded.epoch, config.resume_window_s, config.outbox_limit)
    # adopt() keeps `detached` in expiry order: sessions attached at a crash (detached_at None) start
    # their window now, so they go last, or they would hold up the expiry of every older one.
    for snap in sorted(loaded.sessions, key=lambda s: s["detached_at"] or float("inf")):
        registry.adopt(Session.restore(snap, config.outbox_limit))
    backend = Backend(config, registry, TokenIssuer(loaded.secret))
    for session in registry.sessions.values():
        backend.ensure_streaming(session)

    runner = web.AppRunner(build_app(backend), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=4096, ssl_context=tls)
    try:
        await site.start()
    except OSError as exc:
        print(f"server_stub: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr)
        await runner.cleanup()
        await store.close()
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before the announcement: a parent may signal right after it
        loop.add_signal_handler(sig, stop.set)
    host, port = site._server.sockets[0].getsockname()[:2]
    scheme = "https" if tls else "http"
    base = f"{scheme}://{host}:{port}"
    announce(
        json.dumps(
            {
                "event": "listening",
                "url": base,
                "ws_url": f"{'wss' if tls else 'ws'}://{host}:{port}{WS_PATH}",
                "pid": os.getpid(),
                "epoch": registry.epoch,
                "store": store.name,
                "restored_sessions": len(registry.sessions),
                "faults": sorted(config.faults),
            }
        )
    )
    sys.stdout.flush()

    keeper = asyncio.create_task(housekeeping(backend, store))
    watcher = asyncio.create_task(watch_parent(config.parent_pid, stop)) if config.parent_pid else None
    await stop.wait()
    if watcher is not None:
        watcher.cancel()

    backend.draining = True
    keeper.cancel()
    await drain(backend)
    for session in registry.sessions.values():
        if session.stream_task is not None:
            session.stream_task.cancel()
            session.stream_task = None
    if not config.has(Fault.FORGET_ON_RESTART):
        await flush(registry, store)
    await store.close()
    await runner.cleanup()
    return 0


def run(config: Config) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s server_stub %(levelname)s %(message)s")
    try:
        import uvloop
    except ImportError:
        return asyncio.run(serve(config))
    return uvloop.run(serve(config))
