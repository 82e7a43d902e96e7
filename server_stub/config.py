"""The backend's configuration: one frozen dataclass and the command line that fills it."""

from __future__ import annotations

import argparse
import os
import secrets
from dataclasses import dataclass, field

from agentws import protocol as p

from .faults import Fault

JWT_SECRET_ENV = "AGENTWS_JWT_SECRET"
ADMIN_TOKEN_ENV = "AGENTWS_ADMIN_TOKEN"
DEFAULT_STORE = "sqlite:agentws-sessions.db"


@dataclass(frozen=True)
class RateLimit:
    """Per-user connect rate: a token bucket of ``burst`` refilled at ``per_second``."""

    per_second: float
    burst: float

    @property
    def enabled(self) -> bool:
        return self.per_second > 0


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 0
    store: str = DEFAULT_STORE
    resume_window_s: float = p.DEFAULT_RESUME_WINDOW_S
    hb_interval_ms: int = p.DEFAULT_HB_INTERVAL_MS
    idle_timeout_ms: int | None = None  #: None: 1.5 x hb_interval_ms
    token_ttl_s: float = p.DEFAULT_TOKEN_TTL_S
    refresh_grace_ms: int = p.DEFAULT_REFRESH_GRACE_MS
    chunk_delay_ms: int = 50
    chunks_per_reply: int = 20
    rate_limit: RateLimit = RateLimit(20.0, 40.0)
    max_frame_bytes: int = p.DEFAULT_MAX_FRAME_BYTES
    outbox_limit: int = p.DEFAULT_OUTBOX_LIMIT
    flush_interval_ms: int = 1_000
    shutdown_retry_after_ms: int = 1_000
    faults: frozenset[Fault] = frozenset()
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    jwt_secret: str | None = field(default=None, repr=False)  #: None: from the store, else generated
    parent_pid: int | None = None  #: drain and exit when this process is gone (an embedding harness died)
    tls_cert: str | None = None  #: PEM certificate (chain); with tls_key the backend serves https/wss
    tls_key: str | None = None

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def idle_timeout(self) -> int:
        if self.idle_timeout_ms is not None:
            return self.idle_timeout_ms
        return int(self.hb_interval_ms * p.IDLE_TIMEOUT_FACTOR)

    def has(self, fault: Fault) -> bool:
        return fault in self.faults


def positive(kind, *, zero: bool = False):
    """An argparse type: a number of ``kind`` greater than 0 (or 0 and more with ``zero``)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (value >= 0 if zero else value > 0):
            raise argparse.ArgumentTypeError(f"{text!r} must be {'0 or more' if zero else 'greater than 0'}")
        return value

    return parse


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not in 0..65535")
    return value


def parse_rate_limit(text: str) -> RateLimit:
    """``R`` or ``R/B``: R connects per second per user, bursts of B (default 2R); 0 = off."""
    rate, _, burst = text.partition("/")
    try:
        per_second = float(rate)
        burst_size = float(burst) if burst else 2 * per_second
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not RATE or RATE/BURST") from None
    if per_second < 0 or burst_size < 0 or (per_second > 0 and burst_size < 1):
        raise argparse.ArgumentTypeError(f"{text!r}: rate must be >= 0 and burst >= 1")
    return RateLimit(per_second, burst_size)


def parse_store(text: str) -> str:
    if text == "memory" or text.startswith(("redis://", "rediss://", "unix://")):
        return text
    if text.startswith("sqlite:") and len(text) > len("sqlite:"):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not sqlite:PATH, memory or redis://HOST:PORT[/DB]")


def _readable_file(text: str) -> str:
    """A file that can be opened now: a typo should fail at the command line, not at the first handshake."""
    try:
        with open(text, "rb"):
            pass
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {text!r}: {exc.strerror or exc}") from None
    return text


def build_parser() -> argparse.ArgumentParser:
    d = Config()
    ap = argparse.ArgumentParser(
        prog="python -m server_stub",
        description="The reference agentws/1 backend (docs/PROTOCOL.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--host", default=d.host)
    ap.add_argument("--port", type=_port, default=d.port, help="0 picks a free port")
    ap.add_argument("--store", type=parse_store, default=d.store, help="sqlite:PATH, memory or redis://HOST:PORT[/DB]")
    ap.add_argument(
        "--resume-window",
        type=positive(float),
        default=d.resume_window_s,
        metavar="S",
        help="seconds a detached session (and its agent) is kept",
    )
    ap.add_argument("--hb-interval-ms", type=positive(int), default=d.hb_interval_ms)
    ap.add_argument(
        "--idle-timeout-ms",
        type=positive(int),
        default=None,
        help="close a socket silent this long with 4001 (default 1.5 x hb interval)",
    )
    ap.add_argument(
        "--token-ttl",
        type=positive(float),
        default=d.token_ttl_s,
        metavar="S",
        help="lifetime of tokens from POST /auth/token when the request names none",
    )
    ap.add_argument("--refresh-grace-ms", type=positive(int), default=d.refresh_grace_ms)
    ap.add_argument("--chunk-delay-ms", type=positive(int), default=d.chunk_delay_ms)
    ap.add_argument("--chunks-per-reply", type=positive(int), default=d.chunks_per_reply)
    ap.add_argument(
        "--rate-limit",
        type=parse_rate_limit,
        default=d.rate_limit,
        metavar="RATE[/BURST]",
        help="connects per second per user (0 = off)",
    )
    ap.add_argument("--max-frame-bytes", type=positive(int), default=d.max_frame_bytes)
    ap.add_argument(
        "--outbox-limit",
        type=positive(int),
        default=d.outbox_limit,
        help="sequenced frames kept per session for replay",
    )
    ap.add_argument(
        "--flush-interval-ms",
        type=positive(int),
        default=d.flush_interval_ms,
        help="how often changed sessions are written to the store (kill -9 loses at most this)",
    )
    ap.add_argument(
        "--fault", action="append", default=[], choices=[f.value for f in Fault], help="plant a fault (repeatable)"
    )
    ap.add_argument(
        "--admin-token", default=None, help=f"bearer token for /admin/* (default: ${ADMIN_TOKEN_ENV}, else generated)"
    )
    ap.add_argument(
        "--parent-pid",
        type=positive(int),
        default=None,
        metavar="PID",
        help="drain and exit when this process (the one that started us) is gone",
    )
    ap.add_argument(
        "--tls-cert", type=_readable_file, default=None, metavar="PATH", help="PEM certificate: serve https and wss"
    )
    ap.add_argument(
        "--tls-key", type=_readable_file, default=None, metavar="PATH", help="PEM private key of --tls-cert"
    )
    return ap


def parse_config(argv: list[str] | None = None) -> Config:
    ap = build_parser()
    args = ap.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        ap.error("--tls-cert and --tls-key must be given together")
    admin = args.admin_token or os.environ.get(ADMIN_TOKEN_ENV) or secrets.token_urlsafe(24)
    return Config(
        host=args.host,
        port=args.port,
        store=args.store,
        resume_window_s=args.resume_window,
        hb_interval_ms=args.hb_interval_ms,
        idle_timeout_ms=args.idle_timeout_ms,
        token_ttl_s=args.token_ttl,
        refresh_grace_ms=args.refresh_grace_ms,
        chunk_delay_ms=args.chunk_delay_ms,
        chunks_per_reply=args.chunks_per_reply,
        rate_limit=args.rate_limit,
        max_frame_bytes=args.max_frame_bytes,
        outbox_limit=args.outbox_limit,
        flush_interval_ms=args.flush_interval_ms,
        faults=frozenset(Fault(f) for f in args.fault),
        admin_token=admin,
        jwt_secret=os.environ.get(JWT_SECRET_ENV) or None,
        parent_pid=args.parent_pid,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )
