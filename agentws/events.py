"""Client protocol events and Locust request names, defined once.

Every event a simulated client observes becomes one row of the run directory's
``events.csv`` with the columns below; the analysis reads them by these names.
"""

from __future__ import annotations

from enum import StrEnum


class Kind(StrEnum):
    """The ``kind`` column of ``events.csv``."""

    CONNECT = "connect"  #: TCP + WebSocket upgrade done (or failed)
    WELCOME = "welcome"  #: ``welcome`` received: session, agent, resumed, reason
    DISCONNECT = "disconnect"  #: the client saw (or decided) the connection end
    RECONNECT = "reconnect"  #: a resumed session is back: latency from disconnect to welcome
    REPLAY = "replay"  #: ``replayed`` received after a resume
    STREAM_DONE = "stream_done"  #: a streamed reply ended: ok when complete and sha256 matches
    CHUNK_GAP = "chunk_gap"  #: a sequenced frame or chunk index was skipped
    DUP_FRAME = "dup_frame"  #: a sequenced frame arrived twice (dropped before the application)
    NOTIFY = "notify"  #: a push arrived (or was found missing)
    HB_RTT = "hb_rtt"  #: heartbeat round trip
    REFRESH = "refresh"  #: token refresh answered (or not)
    REFRESH_REQUIRED = "refresh_required"
    CLOSE = "close"  #: the server closed the socket: code in ``code``
    HISTORY_CHECK = "history_check"  #: history/agent context compared after a resume
    ERROR = "error"  #: an ``error`` frame or a client-side failure


def user_id(user_class: str, process_tag: str, number: int) -> str:
    """The ``user`` column: ``<Class>-<process>-<n>``, unique per run, its class readable back."""
    return f"{user_class}-{process_tag}-{number}"


def user_class(user: str) -> str:
    """The user class of a ``user`` column value (see :func:`user_id`)."""
    return user.partition("-")[0]


#: Columns of ``events.csv``, in order.
EVENT_COLUMNS = (
    "ts",  # UNIX seconds, float
    "worker",  # Locust worker id (or "local")
    "user",  # simulated user id, unique per run
    "session",  # agentws session id, "" before the first welcome
    "kind",  # a Kind
    "ok",  # 1 / 0
    "latency_ms",  # float, empty when not timed
    "agent",  # agent id seen in welcome
    "seq",  # a sequence number where one applies
    "code",  # close code or error code
    "detail",  # short templated text, never a growing set of unique values
)


#: Columns of ``samples.csv`` (telemetry of the backend, every Locust process and the machine), in order.
SAMPLE_COLUMNS = (
    "ts",  # UNIX seconds, float
    "source",  # "backend", "local", "master", "worker:<id>" or "machine" (where the master runs)
    "pid",
    "rss_bytes",
    "cpu_percent",  # of one core for a process (can exceed 100); of all cores for "machine"
    "num_fds",
    "num_threads",
    "tcp_established",
    "tcp_close_wait",
    "loop_lag_ms",  # a Locust process: its event loop's worst lateness since the previous sample
    "loop_late_from",  # ... when that lateness began (UNIX seconds; harness/lag.py)
    "loop_late_until",  # ... and when it ended
    "run_queue",  # "machine": runnable tasks (procs_running) where the master runs
    "heap_bytes",  # the backend's runtime heap in use, from its /metrics, where it exposes one
)
#: Columns added after the first run directories were written: read as blank when a file lacks them.
SAMPLE_COLUMNS_ADDED = ("loop_lag_ms", "loop_late_from", "loop_late_until", "run_queue", "heap_bytes")


class RequestName(StrEnum):
    """Stable Locust request names (the ``name`` of a request event)."""

    CONNECT = "connect"
    RESUME = "resume"
    RECONNECT = "reconnect"
    HB = "hb"
    REFRESH = "refresh"
    TURN = "turn"
    HISTORY = "history"


#: Locust request type of every agentws request event.
REQUEST_TYPE = "WS"
