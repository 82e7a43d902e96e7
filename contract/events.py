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


class Role(StrEnum):
    """What a simulated user does to the backend: the ``role`` column, whatever its Locust class is named."""

    FLAPPING = "flapping"  #: connects and drops in rapid cycles, resuming its session
    HEARTBEAT = "heartbeat"  #: one long-lived connection kept alive by heartbeats
    ZOMBIE = "zombie"  #: goes silent after opening: the backend must reap it
    REFRESH = "refresh"  #: swaps its short-lived credentials over the open socket
    CONVERSATION = "conversation"  #: sends messages, reads streamed replies, drops and resumes, gets pushes


class Detail(StrEnum):
    """The ``detail`` column: what an event's outcome was, from a fixed list (free text goes in ``note``)."""

    # connect / welcome (the session opened)
    NEW = "new"  #: a new session, none asked to resume
    NEW_EXPIRED = "new:expired"  #: a resume refused: the resume window passed
    NEW_EPOCH = "new:epoch"  #: ... the backend lost its state (a memory store restarted)
    NEW_GAP = "new:gap"  #: ... what was missed is no longer held
    NEW_NONE = "new:none"  #: ... no reason given
    RESUMED = "resumed"  #: resumed, same identity and context
    RESUMED_AGENT_CHANGED = "resumed:agent_changed"  #: resumed with another identity: a duplicate agent
    RESUMED_TURNS_DIFFER = "resumed:turns_differ"  #: resumed, the conversation's turn count changed
    RESUMED_CTX_HASH_CHANGED = "resumed:ctx_hash_changed"  #: resumed, the context changed with no turn
    # sequenced messages and streamed replies
    SEQ_GAP = "seq_gap"
    CHUNK_INDEX_GAP = "chunk_index_gap"
    NO_SEQ = "sequenced frame without seq"
    MESSAGE = "message"  #: dup_frame: a duplicate of a sequenced message ...
    PIECE = "piece"  #: ... of a piece of a streamed reply
    STREAM_END = "stream_end"  #: ... of a streamed reply's end
    PUSH = "push"  #: ... of a push
    COMPLETE = "complete"
    CHUNKS_MISSING = "chunks_missing"
    SHA256_MISMATCH = "sha256_mismatch"
    # pushes
    RECEIVED = "received"
    DUPLICATE = "duplicate"
    OUT_OF_ORDER = "out_of_order"
    PUSH_MISSING = "push missing after resume"
    # heartbeats, refresh, expiry
    NO_HB_ANSWER = "no hb_ack within two intervals"
    NO_SERVER_PING = "no server ping within two intervals"  #: a server-driven heartbeat stopped coming
    SERVER_PING = "server_ping"  #: hb_rtt of a server-driven heartbeat: how late its ping came (latency_ms)
    REFRESHED = "refreshed"
    NO_ANSWER = "no answer"
    CLOSED_AFTER_REFRESH = "connection closed after refresh"
    GRACE_GIVEN = "grace given"
    EXPIRY_NOT_ENFORCED = "token expiry not enforced"
    # zombies
    NOT_REAPED = "not reaped within the wait"
    REAPED = "reaped"  #: close: the server closed a silent connection (``idle_timeout_ms`` its announced bound)
    # takeover probes (a second connection resumes a session whose first is still open)
    TAKEN_OVER = "taken over"  #: close: the older connection ended, as it must
    NOT_TAKEN_OVER = "both connections alive after a takeover"  #: close ok=0: a duplicate session
    # disconnect: who ended the connection and why
    SERVER_CLOSE = "server_close"
    LOST = "lost"
    CLIENT_CLOSE = "client_close"
    CLIENT_ABORT = "client_abort"
    FLAP_CLOSE = "flap_close"
    FLAP_ABRUPT = "flap_abrupt"
    HEARTBEAT_DEAD = "heartbeat_dead"
    PLANNED_GAP_BRIEF = "planned_gap_brief"
    PLANNED_GAP_MEDIUM = "planned_gap_medium"
    PLANNED_GAP_EXTENDED = "planned_gap_extended"
    ZOMBIE_GAVE_UP = "zombie_gave_up"
    EXPIRY_ABORT = "expiry_not_enforced"
    WELCOME_TIMEOUT = "welcome_timeout"
    ADAPTER_FAILED = "adapter_failed"  #: the client dropped the connection: the adapter raised on a frame
    REFUSED = "refused"  #: the client closed a connection whose session the server refused (connect_error)
    # reconnect
    STOPPED_BY_CLOSE = "stopped by close code"
    GAVE_UP = "gave up"
    # error (the templated message in ``note``)
    CONNECT_FAILED = "connect failed"
    TOKEN_FAILED = "token request failed"
    NOTIFY_FAILED = "admin notify failed"
    RETRY_AFTER = "retry_after_ms"  #: the server said when to come back (``retry_after_ms``)
    ERROR_FRAME = "error frame"
    BAD_FRAME = "server frame not understood"
    ADAPTER_ERROR = "adapter error"  #: the protocol adapter raised (its message in ``note``)
    # history_check (the session's last open in ``note`` where it explains a failure)
    CONTEXT_KEPT = "context kept"
    IDENTITY_KEPT = "identity and turns kept"  #: ... where the protocol has no history to compare
    EXPIRED_CLEANLY = "expired cleanly"
    NOT_EXPIRED = "expected expiry"
    NOT_RESUMED = "not resumed"
    TURN_MISSING = "turn_missing"
    TURN_DIFFERS = "turn_differs"
    REPLY_DIFFERS = "reply_differs"
    TURN_COUNT_DIFFERS = "turn_count_differs"

    @classmethod
    def new_because(cls, why: str) -> Detail:
        """The detail of a resume refused for ``why`` (a new session came instead)."""
        return _NEW_BECAUSE.get(why, cls.NEW_NONE)

    @classmethod
    def planned_gap(cls, gap: str) -> Detail:
        """The disconnect detail of a planned ``brief``, ``medium`` or ``extended`` gap."""
        return cls(f"planned_gap_{gap}")


_NEW_BECAUSE = {"expired": Detail.NEW_EXPIRED, "epoch": Detail.NEW_EPOCH, "gap": Detail.NEW_GAP}

#: Open details of a resumed session (same identity and context, or not).
RESUMED_DETAILS = (
    Detail.RESUMED, Detail.RESUMED_AGENT_CHANGED, Detail.RESUMED_TURNS_DIFFER, Detail.RESUMED_CTX_HASH_CHANGED,
)  # fmt: skip
#: Disconnects the client planned: brief gaps resume within ``brief_p99_max_ms``.
BRIEF_GAPS = (Detail.FLAP_CLOSE, Detail.FLAP_ABRUPT, Detail.PLANNED_GAP_BRIEF)
#: Disconnects nobody planned: the server or the network ended the connection, or the client found it dead.
UNPLANNED = (Detail.SERVER_CLOSE, Detail.LOST, Detail.HEARTBEAT_DEAD)


class CloseReason(StrEnum):
    """Why a connection ended, classified by the protocol adapter: the ``reason`` column.

    The analysis judges these, never a protocol's close codes (agentws/1's 4001,
    an MQTT v5 DISCONNECT reason code, an Engine.IO ping timeout all map here).
    """

    NORMAL = "normal"  #: the session ended as asked (a leave for good, a normal close)
    CLIENT = "client"  #: the client closed or cut the connection itself
    LOST = "lost"  #: no close handshake: TCP reset, EOF, a timeout
    IDLE_REAPED = "idle_reaped"  #: the server closed a connection it found silent (heartbeat timeout)
    TAKEN_OVER = "taken_over"  #: a newer connection took the session over
    CREDENTIALS_EXPIRED = "credentials_expired"  #: the credentials ran out and were not refreshed
    RATE_LIMITED = "rate_limited"  #: come back later (``retry_after_ms`` says when, if the server said)
    UNAUTHORIZED = "unauthorized"  #: credentials refused, or the session belongs to someone else
    RESTARTING = "restarting"  #: the server is going away: restart, deploy, shutdown
    PROTOCOL_ERROR = "protocol_error"  #: the server or the client broke the protocol (or a message too big)
    SERVER_ERROR = "server_error"  #: the server failed internally
    OTHER = "other"  #: a close the adapter does not classify: reconnect as for a transient one


def user_id(user_class: str, process_tag: str, number: int) -> str:
    """The ``user`` column: ``<Class>-<process>-<n>``, unique per run, its class readable back."""
    return f"{user_class}-{process_tag}-{number}"


def user_class(user: str) -> str:
    """The user class of a ``user`` column value (see :func:`user_id`)."""
    return user.partition("-")[0]


#: The run directory's format, named in meta.json as ``format``. 2 added the role, reason, idle_timeout_ms,
#: retry_after_ms and note columns of events.csv and made detail an enum (:class:`Detail`). 3 keeps a raw row
#: only for what a verdict may cite (:data:`ROUTINE` outcomes are counted per interval in the tallies) and
#: stores the tables in Parquet (harness/columnar.py).
FORMAT = 3
#: Formats the analysis reads (1 is refused, naming its version).
FORMATS_READ = (2, 3)

#: Columns of ``events.csv``, in order.
EVENT_COLUMNS = (
    "ts",  # UNIX seconds, float
    "worker",  # Locust worker id (or "local")
    "user",  # simulated user id, unique per run
    "role",  # a Role
    "session",  # the session's id as the server named it, "" before the first open
    "kind",  # a Kind
    "ok",  # 1 / 0
    "latency_ms",  # float, empty when not timed
    "agent",  # the session's identity as the server gave it (an agent id, a client id)
    "seq",  # a sequence number where one applies
    "code",  # the protocol's own close or error code, as it was (for people: the analysis reads reason)
    "reason",  # a CloseReason, on close, disconnect, reconnect and error events
    "detail",  # a Detail
    "idle_timeout_ms",  # the server's announced idle timeout, on a close that reaped a silent connection
    "retry_after_ms",  # the server's "come back no sooner", on an error or close that gave one
    "note",  # templated free text for people (an error's message); never judged
)
#: Columns a stored raw event adds to :data:`EVENT_COLUMNS` (format 3).
RECORDED_COLUMNS = (
    "gap",  # reconnect and history_check: the detail of the same user's last disconnect before it ("" if none)
    "n",  # how many events the row counts: 1, or 0 for a row kept as context or as an interval's slowest
    # (already counted in the tallies)
)
#: Columns of the stored raw events table (``events/``), in order.
STORED_EVENT_COLUMNS = EVENT_COLUMNS + RECORDED_COLUMNS

#: Columns of the ``tallies/`` table: routine outcomes counted per interval, worker and key, timed ones per
#: latency bucket (contract/histogram.py; -1 for events without a latency).
TALLY_COLUMNS = ("interval", "worker", "role", "kind", "ok", "detail", "reason", "gap", "bucket", "count")
#: The key a routine event is counted under (besides its interval, worker and bucket).
TALLY_KEY = ("role", "kind", "ok", "detail", "reason", "gap")
#: Columns of the ``activity/`` table: simulated users running per interval, worker and role.
ACTIVITY_COLUMNS = ("interval", "worker", "role", "users")

#: Outcomes counted, not kept row by row: (kind, ok, detail) of what every healthy run does thousands of times
#: a second. Everything else (every failure, gap, duplicate, identity change, server close, expiry, refusal)
#: is kept as a raw row: it is what the verdicts cite.
ROUTINE = frozenset(
    [
        (Kind.CONNECT, 1, ""),
        (Kind.WELCOME, 1, Detail.NEW),
        (Kind.WELCOME, 1, Detail.RESUMED),
        (Kind.RECONNECT, 1, Detail.NEW),
        (Kind.RECONNECT, 1, Detail.RESUMED),
        (Kind.REPLAY, 1, ""),
        (Kind.HB_RTT, 1, ""),
        (Kind.HB_RTT, 1, Detail.SERVER_PING),
        (Kind.STREAM_DONE, 1, Detail.COMPLETE),
        (Kind.NOTIFY, 1, Detail.RECEIVED),
        (Kind.REFRESH, 1, Detail.REFRESHED),
        (Kind.REFRESH_REQUIRED, 1, Detail.GRACE_GIVEN),
        (Kind.HISTORY_CHECK, 1, Detail.CONTEXT_KEPT),
        (Kind.HISTORY_CHECK, 1, Detail.IDENTITY_KEPT),
        (Kind.HISTORY_CHECK, 1, Detail.EXPIRED_CLEANLY),
        *((Kind.DISCONNECT, 1, d) for d in (Detail.FLAP_CLOSE, Detail.FLAP_ABRUPT, Detail.CLIENT_CLOSE)),
        *((Kind.DISCONNECT, 1, Detail.planned_gap(g)) for g in ("brief", "medium", "extended")),
    ]
)
#: Kinds whose rows carry the ``gap`` before them (the cause of a reconnect, what a history check followed).
GAP_KINDS = (Kind.RECONNECT, Kind.HISTORY_CHECK)

#: Columns of events.csv the analysis needs; a file of format 1 lacks the rest (see analysis/rundir.py).
EVENT_COLUMNS_V1 = ("ts", "worker", "user", "session", "kind", "ok", "latency_ms", "agent", "seq", "code", "detail")


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
    SERVER_PING = "server_ping"  #: a server-driven heartbeat: how late each ping came after the last
    REFRESH = "refresh"
    TURN = "turn"
    HISTORY = "history"


#: Locust request type of every agentws request event.
REQUEST_TYPE = "WS"
