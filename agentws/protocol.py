"""agentws/1: frame types, close codes, error codes and defaults, defined once.

The server (`server_stub`), the clients (`users`) and the analysis all import
these names; a literal ``4409`` or ``"welcome"`` anywhere else is a bug.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

VERSION = 1
WS_PATH = "/ws"


class T(StrEnum):
    """Frame types (the ``t`` field). ``HISTORY`` goes both ways."""

    # client -> server
    HELLO = "hello"
    MSG = "msg"
    ACK = "ack"
    HB = "hb"
    REFRESH = "refresh"
    HISTORY = "history"
    BYE = "bye"
    # server -> client
    WELCOME = "welcome"
    REPLAYED = "replayed"
    ACCEPTED = "accepted"
    CHUNK = "chunk"
    DONE = "done"
    NOTIFY = "notify"
    HB_ACK = "hb_ack"
    REFRESHED = "refreshed"
    REFRESH_REQUIRED = "refresh_required"
    GOAWAY = "goaway"
    ERROR = "error"


CLIENT_FRAMES = frozenset({T.HELLO, T.MSG, T.ACK, T.HB, T.REFRESH, T.HISTORY, T.BYE})
#: Server frames that carry ``seq`` and stay in the session's outbox until acked.
SEQUENCED_FRAMES = frozenset({T.ACCEPTED, T.CHUNK, T.DONE, T.NOTIFY})


class Close(IntEnum):
    """WebSocket close codes of agentws/1."""

    BYE = 1000  #: session ended by ``bye``
    GOING_AWAY = 1001
    ABNORMAL = 1006  #: no close frame at all (never sent on the wire; TCP dropped)
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    HEARTBEAT_TIMEOUT = 4001  #: zombie reaped
    TOKEN_EXPIRED = 4002
    RATE_LIMITED = 4029
    PROTOCOL_ERROR = 4400
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403  #: session belongs to another user
    TAKEN_OVER = 4409  #: a newer connection took the session over


class ErrorCode(StrEnum):
    """The ``code`` field of an ``error`` frame."""

    BAD_JSON = "bad_json"  #: not a JSON object
    UNKNOWN_TYPE = "unknown_type"  #: ``t`` missing or not a frame type
    HELLO_REQUIRED = "hello_required"  #: a frame before ``hello``
    DUPLICATE_HELLO = "duplicate_hello"  #: a second ``hello`` on one socket
    BAD_FIELD = "bad_field"  #: a field missing or of the wrong type
    BAD_VERSION = "bad_version"
    BAD_ACK = "bad_ack"  #: ``ack`` beyond the session's head
    UNAUTHORIZED = "unauthorized"  #: token invalid, expired or of another ``sub``
    FORBIDDEN = "forbidden"  #: session belongs to another user
    RATE_LIMITED = "rate_limited"
    TOKEN_EXPIRED = "token_expired"
    INTERNAL = "internal"


class NewSessionReason(StrEnum):
    """Why a ``hello`` that asked to resume got ``resumed: false``."""

    EXPIRED = "expired"  #: the resume window passed
    EPOCH = "epoch"  #: the backend lost its state (memory store restarted)
    GAP = "gap"  #: the frames the client needs are no longer held


# Defaults of the reference backend (server_stub).
DEFAULT_HB_INTERVAL_MS = 15_000
IDLE_TIMEOUT_FACTOR = 1.5  #: idle_timeout_ms = 1.5 x hb_interval_ms (MQTT keepalive rule)
DEFAULT_RESUME_WINDOW_S = 120.0
DEFAULT_MAX_FRAME_BYTES = 64 * 1024
DEFAULT_TOKEN_TTL_S = 300.0
DEFAULT_REFRESH_GRACE_MS = 5_000
DEFAULT_OUTBOX_LIMIT = 1_000
