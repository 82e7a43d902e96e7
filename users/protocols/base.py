"""The protocol adapter contract: a session protocol as intents in, frames out, and frames in, observations out.

An adapter is sans-I/O, in the manner of the ``websockets`` library's ``Protocol``:
it owns no socket, reads no clock and knows nothing of Locust. The client
(:mod:`users.client`, one for every protocol) opens the connection the adapter
describes (:meth:`Adapter.connection`), sends the frames its intents return, and
hands it every message received, text (``str``) or binary (``bytes``); the
adapter answers with observations (below), which the client records and acts on.

Calling contract, in order, for each connection of one simulated user's session:

1. :meth:`Adapter.connection` once per client: URL path and query, subprotocols.
2. :meth:`Adapter.open` (credentials, resume or not): the frames that open or
   resume the session; then :meth:`Adapter.receive` for every message until it
   returns :class:`Opened` (or the connection ends: :meth:`Adapter.closed`).
3. While open, in any order: :meth:`Adapter.heartbeat`, :meth:`Adapter.refresh`,
   :meth:`Adapter.send_turn`, :meth:`Adapter.ask_history`, :meth:`Adapter.acknowledge`
   (and :meth:`Adapter.push_request`, which describes an HTTP request, not a frame)
   (the client calls it at most once a second), :meth:`Adapter.leave`; and
   :meth:`Adapter.receive` for every message.
4. :meth:`Adapter.closed` once when the connection ended (close code and reason, or
   None when no close frame came; how long the client had been silent): the
   :class:`~contract.events.CloseReason`; by
   default, looked up in the adapter's :attr:`Adapter.close_reasons`.
5. :meth:`Adapter.forget` before a new session (the client gave up resuming).

Every method may raise: the client records an ``error`` event with the message,
drops the connection and reconnects; the Locust worker carries on. An adapter
raises :class:`ProtocolViolation` when the *server* broke the protocol (a malformed
frame, a packet it may not send): recorded as the server's fault, not the adapter's.

Before the first connection the client calls :meth:`Adapter.configure` with the
run's settings (``users.options.Settings``) for the options the protocol reads.

What the session knows across connections lives in :attr:`Adapter.session`
(:class:`users.protocols.session.Session`: position, duplicates, gaps, streams,
pushes, the conversation as seen), so adapters share one definition of loss,
duplicates and order.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, NamedTuple

from contract.events import CloseReason

from .session import Observation, Session

#: A WebSocket message: text (``str``) or binary (``bytes``).
Frame = str | bytes


class Capability(StrEnum):
    """What a protocol (and a backend speaking it) can do; user classes declare those they need."""

    RESUME = "resume"  #: resume a session with what was missed replayed (a position or an offset)
    REFRESH = "refresh"  #: swap credentials over the open connection
    STREAM = "stream"  #: streamed replies to a message, with a checksum of the whole
    PUSH = "push"  #: messages sent to a session while its client is away, delivered on resume
    HISTORY = "history"  #: the conversation so far, asked for after a resume
    HEARTBEAT = "heartbeat"  #: a heartbeat the client can time (its round trip)


class HeartbeatDriver(StrEnum):
    """Who drives the heartbeat."""

    CLIENT = "client"  #: the client sends and the server answers (agentws/1, MQTT PINGREQ)
    SERVER = "server"  #: the server pings and the client answers (Engine.IO)


class Connection(NamedTuple):
    """What a connection needs: the path and query to ask for and the subprotocols to offer."""

    path: str
    subprotocols: tuple[str, ...] = ()


class PushRequest(NamedTuple):
    """How the harness has the backend push to a session: an HTTP POST of ``body`` (JSON) to ``path`` on the
    host, with ``--admin-token`` as its bearer. The client makes the request; the adapter only describes it."""

    path: str
    body: dict


class ProtocolViolation(Exception):
    """The server's frames broke the protocol; the message says how. The connection is dropped and retried."""


class Credentials(NamedTuple):
    """What the client proves itself with (a bearer token, a username and password) and until when."""

    token: str
    expires_at: float = 0.0  #: UNIX seconds; 0: unknown


# -- observations: what a received frame tells the client --------------------------------------
# Observation (from .session): a fact to record as it is, one row of events.csv.
class Opened(NamedTuple):
    """The session is open: new, or resumed with the same identity or not (``observation`` says which and why)."""

    resumed: bool
    observation: Observation


class Answered(NamedTuple):
    """The answer to a request the client made (a refresh, a history), by its request id."""

    request: str  #: "refresh" or "history"
    request_id: object
    body: dict


class HeartbeatAnswered(NamedTuple):
    """The answer to the client's heartbeat ``hb_id``: the client times the round trip."""

    hb_id: object


class Send(NamedTuple):
    """Frames the adapter needs sent now: an answer to a server ping, an acknowledgement the protocol demands."""

    frames: tuple[Frame, ...]
    server_ping: bool = False  #: an answer to the server's heartbeat (the client counts it as one received)


class CredentialsExpiring(NamedTuple):
    """The server says the credentials are running out: refresh them in place within the grace."""

    grace_ms: float = 0.0


class Backoff(NamedTuple):
    """The server refused or is going away and said when to come back: no sooner than ``retry_after_ms``."""

    retry_after_ms: float
    code: str = ""
    reason: CloseReason = CloseReason.OTHER
    closing: bool = False  #: the server announced it is closing (a goaway, an MQTT DISCONNECT)


class Failed(NamedTuple):
    """The server reported an error (an error frame, a refused request) without retry-after."""

    code: str
    reason: CloseReason = CloseReason.OTHER
    #: The server refused the session and leaves the connection open but of no use (a Socket.IO
    #: ``connect_error``): the client closes it and follows its close policy for ``reason``.
    ends_connection: bool = False


class Adapter:
    """Base class of a protocol adapter. Subclasses set the class attributes and implement the operations.

    ``capabilities`` and ``heartbeat_driver`` describe the protocol; ``name`` is what
    ``--protocol`` and ``meta.json`` call it. An operation the protocol does not have
    raises :class:`NotImplementedError` here; :func:`users.protocols.check` refuses a
    run whose user classes need a capability its adapter does not declare.
    """

    name: ClassVar[str] = ""
    #: The path (and query) connections ask for unless ``--ws-path`` says otherwise.
    default_path: ClassVar[str] = "/"
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    heartbeat_driver: ClassVar[HeartbeatDriver] = HeartbeatDriver.CLIENT
    #: Its close codes by the reason they name (:meth:`closed`); a code not in it is OTHER.
    close_reasons: ClassVar[dict[int, CloseReason]] = {}
    #: Credentials come from the token endpoint (``--token-url``); False: the protocol logs in by itself
    #: (an MQTT username and ``--password``), and :meth:`open` gets the password as the token.
    uses_token_endpoint: ClassVar[bool] = True
    #: A refused resume says why (expired, a new epoch, a gap: ``Session.opened``'s ``why_new``); False where
    #: the protocol only says "new" (an MQTT CONNACK's session-present, a Socket.IO CONNECT's other sid).
    tells_why_new: ClassVar[bool] = True
    #: The operations every adapter must implement (the rest depend on its capabilities).
    REQUIRED: ClassVar[tuple[str, ...]] = ("connection", "open", "receive")

    __slots__ = ("user_id", "session", "__dict__")  # a subclass's own attributes go in __dict__ unless it slots them

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.session = Session()

    def configure(self, settings) -> None:
        """Read the run's options this protocol has (``users.options.Settings``); called before any open."""

    # -- the connection ---------------------------------------------------------------------
    def connection(self, path: str) -> Connection:
        """The path (with query) and subprotocols of the next connection; ``path`` is ``--ws-path``."""
        raise NotImplementedError

    @property
    def heartbeat_interval_ms(self) -> float:
        """The heartbeat interval the server announced (or the protocol's default); 0 when unknown."""
        return float(self.session.hb_interval_ms)

    @property
    def idle_timeout_ms(self) -> float:
        """How long the server lets a silent connection live, as it announced it; 0 when unknown."""
        return float(self.session.idle_timeout_ms)

    # -- intents -> frames ----------------------------------------------------------------------
    def open(self, credentials: Credentials, resume: bool) -> list[Frame]:
        """Open a session, or resume the current one when ``resume`` and there is one."""
        raise NotImplementedError

    def heartbeat(self, hb_id: int) -> list[Frame]:
        """A client heartbeat; the server's answer comes back as :class:`HeartbeatAnswered` with ``hb_id``."""
        raise NotImplementedError

    def refresh(self, credentials: Credentials, request_id: int) -> list[Frame]:
        """Swap the connection's credentials in place; answered by :class:`Answered` ("refresh", ``request_id``)."""
        raise NotImplementedError

    def send_turn(self, cid: str, text: str) -> list[Frame]:
        """Send a message (a turn) that the server answers with a streamed reply."""
        raise NotImplementedError

    def ask_history(self, request_id: int) -> list[Frame]:
        """Ask for the conversation so far; answered by :class:`Answered` ("history", ``request_id``)."""
        raise NotImplementedError

    def push_request(self, session: str, push_id: int, data: dict) -> PushRequest:
        """The request that has the backend push ``data`` (with the publisher's ``push_id``) to ``session``."""
        raise NotImplementedError

    def publisher(self, session: str, pushes: list[tuple[int, dict]], tag: str):
        """Where the backend takes no push request (an MQTT broker): the harness's own publisher of ``pushes``
        ((push id, data) pairs) to ``session``, a sans-I/O exchange over a connection of its own with
        ``start() -> frames``, ``receive(frame) -> frames``, ``done``, ``acknowledged`` (push ids) and
        ``error`` (users/push.py drives it). ``tag`` makes its identity unique."""
        raise NotImplementedError

    def acknowledge(self) -> list[Frame]:
        """What to acknowledge now (the position received so far); empty when nothing is due."""
        return []

    def leave(self) -> list[Frame]:
        """End the session for good (not only the connection)."""
        return []

    # -- frames -> observations ----------------------------------------------------------------
    def receive(self, frame: Frame) -> list:
        """Every observation one received message gives (see the classes above); [] for none."""
        raise NotImplementedError

    def closed(self, code: int | None, reason: str, silent_ms: float = 0.0) -> CloseReason:
        """Classify how the connection ended: the close frame's code and reason, None when none came (lost);
        ``silent_ms``: how long the client had sent nothing (a protocol whose server reaps silence without
        saying so, as MQTT's, tells a reap by it). By :attr:`close_reasons`; override where the code alone
        does not say (an MQTT DISCONNECT before it)."""
        if code is None:
            return CloseReason.LOST
        return self.close_reasons.get(code, CloseReason.OTHER)

    def forget(self) -> None:
        """Start over: the next :meth:`open` opens a new session."""
        self.session = Session()
