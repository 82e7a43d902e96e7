"""The HTTP side of the backend: /ws upgrade, /auth/token, /stats, /metrics, /healthz, /admin/notify."""

from __future__ import annotations

import hmac

from aiohttp import web
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from agentws.protocol import WS_PATH

from .connection import Connection

BACKEND = web.AppKey("backend", object)
MAX_TOKEN_TTL_S = 7 * 24 * 3600.0
MAX_BODY_BYTES = 64 * 1024


def _bad(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _json_body(request: web.Request) -> dict | web.Response:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return _bad("body too large", 413)
    try:
        body = await request.json()
    except ValueError:
        return _bad("body is not valid JSON")
    if not isinstance(body, dict):
        return _bad("body must be a JSON object")
    return body


async def ws_upgrade(request: web.Request) -> web.StreamResponse:
    backend = request.app[BACKEND]
    if backend.draining:
        return _bad("draining", 503)
    ws = web.WebSocketResponse(compress=False, max_msg_size=backend.config.max_frame_bytes, timeout=2.0, autoping=True)
    try:
        await ws.prepare(request)
    except ConnectionResetError:  # the client left during its own upgrade (stopped mid-connect, a network drop)
        # a plain answer aiohttp fails to write, and then drops as a premature disconnection: nothing to log
        return web.Response(status=499)
    conn = Connection(backend, ws)
    backend.opened(conn, request.transport)
    try:
        await conn.serve()
    finally:
        backend.closed(conn)
    return ws


async def auth_token(request: web.Request) -> web.Response:
    backend = request.app[BACKEND]
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    user, ttl = body.get("user"), body.get("ttl_s", backend.config.token_ttl_s)
    if not isinstance(user, str) or not user or len(user) > 128:
        return _bad("user must be a non-empty string of at most 128 characters")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= MAX_TOKEN_TTL_S:
        return _bad(f"ttl_s must be a number in (0, {MAX_TOKEN_TTL_S:.0f}]")
    token, exp = backend.issuer.issue(user, float(ttl))
    return web.json_response({"token": token, "exp": exp})


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[BACKEND].stats())


async def healthz(request: web.Request) -> web.Response:
    if request.app[BACKEND].draining:
        return web.json_response({"status": "draining"}, status=503)
    return web.json_response({"status": "ok"})


async def admin_notify(request: web.Request) -> web.Response:
    backend = request.app[BACKEND]
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {backend.config.admin_token}".encode()):
        return _bad("missing or wrong admin token", 401)
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    session, push_id, data = body.get("session"), body.get("id"), body.get("data", {})
    if not isinstance(session, str):
        return _bad("session must be a string")
    if type(push_id) is not int:
        return _bad("id must be an integer")
    if not isinstance(data, dict):
        return _bad("data must be a JSON object")
    if session not in backend.registry.sessions:
        return _bad("unknown session", 404)
    seq = await backend.notify(session, push_id, data)
    return web.json_response({"queued": True, "seq": seq}, status=202)


class _StatsCollector:
    """Every figure of /stats as a Prometheus metric (``agentws_`` prefix)."""

    def __init__(self, backend) -> None:
        self._backend = backend

    def collect(self):
        for name, value in self._backend.stats().items():
            if not isinstance(value, int | float) or name in ("pid", "rss_bytes", "open_fds", "threads"):
                continue  # the process_* collector reports these
            if name.endswith("_total"):
                yield CounterMetricFamily(f"agentws_{name.removesuffix('_total')}", name, value=value)
            else:
                yield GaugeMetricFamily(f"agentws_{name}", name, value=value)


def metrics_handler(backend):
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(_StatsCollector(backend))

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain", charset="utf-8")

    return metrics


def build_app(backend) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[BACKEND] = backend
    app.router.add_get(WS_PATH, ws_upgrade)
    app.router.add_post("/auth/token", auth_token)
    app.router.add_get("/stats", stats)
    app.router.add_get("/metrics", metrics_handler(backend))
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/admin/notify", admin_notify)
    return app
