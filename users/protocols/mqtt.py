"""MQTT 5 and 3.1.1 over WebSocket (subprotocol ``mqtt``, binary frames) as sans-I/O adapters.

The simulated user's session is an MQTT session: a client id (the user's id and
the session's number, so a new session is a new id) with clean start off and a
session expiry (v5) or clean session off (v3.1.1), subscribed at QoS 1 to the
session's own topic ``harness/<client id>/in``. What the harness judges maps
onto it like this:

* open: CONNECT, then CONNACK; a new session subscribes (SUBACK) before it counts
  as open. A resume is CONNECT with the same client id: CONNACK's session-present
  says whether the broker kept it (identity: the client id, kept by definition).
* what was missed: the broker sends the QoS 1 messages it queued for the session
  right after CONNACK. A PINGREQ sent at the resume comes back after them: its
  PINGRESP marks the end of the replay.
* pushes: QoS 1 PUBLISHes to the session's topic by the harness's own publisher
  connection (:class:`MqttPublisher`), each payload carrying the publisher's
  sequence number (``{"seq", "id", "data"}``): loss, duplicates and order are
  judged by it (:class:`~users.protocols.session.Session`). A redelivery flagged
  DUP is at-least-once delivery working as specified: acknowledged, not delivered
  again, not a duplicate.
* heartbeat: PINGREQ at the keepalive; PINGRESP answers them in order.
* closes: a v5 DISCONNECT's reason code says why (session taken over, keep alive
  timeout, server shutting down, ...). A broker may also close without a word
  (MQTT 3.1.1 always does; mosquitto 2.0 over WebSocket does on v5 too): after
  1.5 keepalives of the client's silence that is the keepalive reap the
  specification describes, otherwise a loss.
* credentials: a username (the user's id) and ``--password``; MQTT has no token
  endpoint. Neither version refreshes credentials in place here (3.1.1 has no
  way; v5 re-authentication needs an authentication method the broker offers).
"""

from __future__ import annotations

import itertools
from collections import deque
from enum import StrEnum
from typing import ClassVar

import orjson

from contract.events import CloseReason, Detail, Kind

from . import mqtt_codec as codec
from .base import (
    Adapter,
    Backoff,
    Capability,
    Connection,
    Credentials,
    Failed,
    Frame,
    HeartbeatAnswered,
    HeartbeatDriver,
    Observation,
    Opened,
    ProtocolViolation,
    Send,
)
from .mqtt_codec import Level, PacketType, Reason

SUBPROTOCOL = "mqtt"
#: The session's topic: pushes to the session land here.
TOPIC = "harness/{client_id}/in"
KEEPALIVE_S = 15  #: the seeds' heartbeat interval
SESSION_EXPIRY_S = 120  #: the seeds' resume window
#: A broker drops a client silent for this many keepalives (MQTT 3.1.1 section 3.1.2.10, MQTT 5 3.1.2.11).
IDLE_FACTOR = 1.5
#: An unannounced close after this share of the idle timeout in silence is the broker's reap (its clock and
#: the client's differ by the time the last packet took to arrive).
REAP_TOLERANCE = 0.95
_SUBSCRIBE_ID = 1  #: the packet id of the session's one SUBSCRIBE
#: QoS 1 messages in flight a broker takes unless its CONNACK says fewer (MQTT 5, 3.2.2.3.3; 3.1.1 has no limit).
RECEIVE_MAXIMUM_DEFAULT = 65_535

#: Why a broker ended or refused the connection, by MQTT 5 reason code; any other is OTHER.
CLOSE_REASONS = {
    Reason.SUCCESS: CloseReason.NORMAL,
    Reason.KEEP_ALIVE_TIMEOUT: CloseReason.IDLE_REAPED,
    Reason.SESSION_TAKEN_OVER: CloseReason.TAKEN_OVER,
    Reason.SERVER_SHUTTING_DOWN: CloseReason.RESTARTING,
    Reason.USE_ANOTHER_SERVER: CloseReason.RESTARTING,
    Reason.SERVER_MOVED: CloseReason.RESTARTING,
    Reason.SERVER_UNAVAILABLE: CloseReason.RESTARTING,
    Reason.SERVER_BUSY: CloseReason.RATE_LIMITED,
    Reason.QUOTA_EXCEEDED: CloseReason.RATE_LIMITED,
    Reason.CONNECTION_RATE_EXCEEDED: CloseReason.RATE_LIMITED,
    Reason.BAD_USERNAME_OR_PASSWORD: CloseReason.UNAUTHORIZED,
    Reason.NOT_AUTHORIZED: CloseReason.UNAUTHORIZED,
    Reason.BANNED: CloseReason.UNAUTHORIZED,
    Reason.BAD_AUTHENTICATION_METHOD: CloseReason.UNAUTHORIZED,
    Reason.CLIENT_ID_NOT_VALID: CloseReason.UNAUTHORIZED,
    Reason.MALFORMED_PACKET: CloseReason.PROTOCOL_ERROR,
    Reason.PROTOCOL_ERROR: CloseReason.PROTOCOL_ERROR,
    Reason.UNSUPPORTED_PROTOCOL_VERSION: CloseReason.PROTOCOL_ERROR,
    Reason.PACKET_TOO_LARGE: CloseReason.PROTOCOL_ERROR,
    Reason.RECEIVE_MAXIMUM_EXCEEDED: CloseReason.PROTOCOL_ERROR,
    Reason.UNSPECIFIED: CloseReason.SERVER_ERROR,
    Reason.IMPLEMENTATION_SPECIFIC: CloseReason.SERVER_ERROR,
}
_BAD_PAYLOAD = Observation(Kind.ERROR, False, code="bad_payload", detail=Detail.BAD_FRAME)
_REPLAY_MARK = object()  #: the PINGREQ sent at a resume: its answer ends the replay


def push_payload(push_id: int, data: dict) -> bytes:
    """What the harness's publisher puts in a push: its sequence number is the push id."""
    return orjson.dumps({"seq": push_id, "id": push_id, "data": data})


class CleanStart(StrEnum):
    """When a v5 client asks for a clean start (``--mqtt-clean-start``)."""

    FIRST = "first"  #: on a session's first connection only (paho's default): a fresh session, kept by its expiry
    NEVER = "never"  #: never: a new session is a new client id, so there is nothing to clean


class MqttOptions:
    """The MQTT knobs of a run (``--mqtt-keepalive-s``, ``--mqtt-session-expiry-s``, ``--mqtt-clean-start``,
    ``--password``)."""

    __slots__ = ("keepalive_s", "session_expiry_s", "clean_start", "password")

    def __init__(
        self,
        keepalive_s: int = KEEPALIVE_S,
        session_expiry_s: int = SESSION_EXPIRY_S,
        clean_start: CleanStart = CleanStart.FIRST,
        password: str = "",
    ) -> None:
        self.keepalive_s, self.session_expiry_s = keepalive_s, session_expiry_s
        self.clean_start, self.password = clean_start, password


class Mqtt(Adapter):
    """MQTT 5 over WebSocket: resume (session present), pushes (QoS 1 queue), heartbeat (PINGREQ)."""

    __slots__ = (
        "options", "sessions_started", "_reader", "_client_id", "_asked_resume", "_opened", "_pings",
        "_ended_by", "_refused",
    )  # fmt: skip
    name = "mqtt"
    level: ClassVar[Level] = Level.V5
    default_path = "/mqtt"
    capabilities = frozenset({Capability.RESUME, Capability.PUSH, Capability.HEARTBEAT})
    heartbeat_driver = HeartbeatDriver.CLIENT
    uses_token_endpoint = False
    tells_why_new = False

    def __init__(self, user_id: str) -> None:
        super().__init__(user_id)
        self.options = MqttOptions()
        self.sessions_started = 0
        self._client_id = ""
        self._new_connection()

    def configure(self, settings) -> None:
        self.options = MqttOptions(
            int(settings.mqtt_keepalive_s),
            int(settings.mqtt_session_expiry_s),
            CleanStart(settings.mqtt_clean_start),
            settings.password,
        )

    def _new_connection(self) -> None:
        self._reader = codec.PacketReader()
        self._asked_resume = False
        self._opened = False
        self._pings: deque = deque()
        self._ended_by: CloseReason | None = None  #: what the broker said before it closed (DISCONNECT)
        self._refused = ""

    @property
    def client_id(self) -> str:
        """The session's client id ('' before the first open)."""
        return self._client_id

    def connection(self, path: str) -> Connection:
        return Connection(path, (SUBPROTOCOL,))

    # -- intents -> frames ---------------------------------------------------------------------------
    def open(self, credentials: Credentials, resume: bool) -> list[Frame]:
        self._new_connection()
        self._asked_resume = resume and bool(self._client_id)
        if not self._asked_resume:
            self.sessions_started += 1
            self._client_id = f"{self.user_id}.{self.sessions_started}"
        o = self.options
        return [
            codec.connect(
                self._client_id,
                level=self.level,
                keepalive_s=o.keepalive_s,
                clean=self._clean(),
                username=self.user_id,
                password=o.password or credentials.token,
                session_expiry_s=o.session_expiry_s,
            )
        ]

    def _clean(self) -> bool:
        """v5: clean start for a new session's first connection (``first``) or never; v3.1.1: never (a clean
        session there ends with its connection)."""
        return not self._asked_resume and self.options.clean_start is CleanStart.FIRST

    def heartbeat(self, hb_id: int) -> list[Frame]:
        self._pings.append(hb_id)
        return [codec.pingreq()]

    def leave(self) -> list[Frame]:
        """v5: DISCONNECT with a session expiry of 0 ends the session too; 3.1.1 has no way to say so (its
        session ends only with a clean-session connection), so there it ends the connection only."""
        return [codec.disconnect(self.level, end_session=True)]

    def publisher(self, session: str, pushes: list[tuple[int, dict]], tag: str) -> MqttPublisher:
        return MqttPublisher(self, session, pushes, tag)

    def forget(self) -> None:
        super().forget()
        self._client_id = ""

    # -- frames -> observations -------------------------------------------------------------------
    def receive(self, frame: Frame) -> list:
        if isinstance(frame, str):
            raise ProtocolViolation("a text frame: MQTT over WebSocket is binary frames only")
        try:
            packets = self._reader.feed(frame)
        except codec.MalformedPacket as e:
            raise ProtocolViolation(f"malformed MQTT: {e}") from None
        out: list = []
        for p in packets:
            handler = _HANDLERS.get(p.type)
            if handler is None:
                raise ProtocolViolation(f"unexpected packet type {p.type} from the broker")
            try:
                out.extend(handler(self, p))
            except codec.MalformedPacket as e:
                raise ProtocolViolation(f"malformed MQTT: {e}") from None
        return out

    def closed(self, code: int | None, reason: str, silent_ms: float = 0.0) -> CloseReason:
        if self._ended_by is not None:
            return self._ended_by
        # A broker closes a client silent for 1.5 keepalives "as if the network had failed" (MQTT 3.1.1
        # 3.1.2.10): unannounced, as mosquitto does on every version. Such silence before an unannounced close
        # is that reap; a shorter one is a loss (a restart, the network).
        idle_ms = self.session.idle_timeout_ms
        if idle_ms and silent_ms >= idle_ms * REAP_TOLERANCE:
            return CloseReason.IDLE_REAPED
        return CloseReason.LOST

    # -- packets ----------------------------------------------------------------------------------
    def _connack(self, p: codec.Packet) -> list:
        ack = codec.parse_connack(p, self.level)
        if ack.code:
            return [self._refusal(ack.code)]
        s, o = self.session, self.options
        keepalive = int(ack.properties.get(codec.Prop.SERVER_KEEP_ALIVE, o.keepalive_s))
        expiry = ack.properties.get(codec.Prop.SESSION_EXPIRY_INTERVAL, o.session_expiry_s)
        s.hb_interval_ms = keepalive * 1000
        s.idle_timeout_ms = keepalive * 1000 * IDLE_FACTOR
        s.resume_window_s = float(expiry if self.level is Level.V5 else 0)
        if ack.session_present and self._asked_resume:
            self._pings.append(_REPLAY_MARK)
            return [self._opened_now(resumed=True), Send((codec.pingreq(),))]
        return [Send((codec.subscribe(_SUBSCRIBE_ID, [(TOPIC.format(client_id=self._client_id), 1)], self.level),))]

    def _refusal(self, code: int) -> Failed:
        reason = codec.V311_AS_REASON.get(code, code) if self.level is Level.V311 else code
        self._ended_by = CLOSE_REASONS.get(reason, CloseReason.OTHER)
        self._refused = codec.reason_name(reason)
        return Failed(f"connack {self._refused}", self._ended_by)

    def _suback(self, p: codec.Packet) -> list:
        packet_id, granted = codec.parse_suback(p, self.level)
        if packet_id != _SUBSCRIBE_ID or self._opened:
            return []
        if not granted or granted[0] >= 0x80:
            refused = codec.reason_name(granted[0]) if granted else "no reason code"
            return [Failed(f"suback {refused}", CloseReason.UNAUTHORIZED)]
        return [self._opened_now(resumed=False)]

    def _opened_now(self, *, resumed: bool) -> Opened:
        self._opened = True
        s = self.session
        obs = s.opened(
            session=self._client_id,
            resumed=resumed,
            asked_resume=self._asked_resume,
            identity=self._client_id,
            hb_interval_ms=s.hb_interval_ms,
            idle_timeout_ms=s.idle_timeout_ms,
            resume_window_s=s.resume_window_s,
        )
        return Opened(resumed, obs)

    def _publish(self, p: codec.Packet) -> list:
        msg = codec.parse_publish(p, self.level)
        out: list = [Send((codec.puback(msg.packet_id),))] if msg.qos == 1 else []
        try:
            body = orjson.loads(msg.payload)
            seq, push_id = body["seq"], body["id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            out.append(_BAD_PAYLOAD)
            return out
        s = self.session
        if msg.dup and type(seq) is int and seq <= s.last_seq:
            return out  # at-least-once redelivery of what arrived before its PUBACK did: not delivered again
        deliver, seen = s.sequenced(seq, Detail.PUSH)
        out.extend(seen)
        if deliver:
            out.append(s.push(push_id, seq))
        return out

    def _pingresp(self, p: codec.Packet) -> list:
        if not self._pings:
            return []
        hb_id = self._pings.popleft()
        if hb_id is _REPLAY_MARK:
            return [self.session.replayed(self.session.last_seq)]
        return [HeartbeatAnswered(hb_id)]

    def _disconnect(self, p: codec.Packet) -> list:
        d = codec.parse_disconnect(p, self.level)
        self._ended_by = CLOSE_REASONS.get(d.reason, CloseReason.OTHER)
        return [Backoff(0.0, f"disconnect {codec.reason_name(d.reason)}", self._ended_by, closing=True)]

    def _ignored(self, p: codec.Packet) -> list:
        return []


class Mqtt311(Mqtt):
    """MQTT 3.1.1 over WebSocket: as :class:`Mqtt`, with clean session off and no reason codes."""

    __slots__ = ()
    name = "mqtt311"
    level = Level.V311

    def _clean(self) -> bool:
        return False


_HANDLERS = {
    PacketType.CONNACK: Mqtt._connack,
    PacketType.SUBACK: Mqtt._suback,
    PacketType.PUBLISH: Mqtt._publish,
    PacketType.PINGRESP: Mqtt._pingresp,
    PacketType.DISCONNECT: Mqtt._disconnect,
    PacketType.PUBACK: Mqtt._ignored,
    PacketType.UNSUBACK: Mqtt._ignored,
    PacketType.AUTH: Mqtt._ignored,
}


class MqttPublisher:
    """The harness's own publisher of pushes to one session, over a connection of its own (sans-I/O).

    ``start()`` gives the frames to send once connected (CONNECT, as the session's user); feed every
    message received to :meth:`receive`, which answers with frames to send: PUBLISHes once CONNACK came,
    never more in flight than the broker's Receive Maximum, then DISCONNECT once every PUBACK came.
    :attr:`done` when over; :attr:`acknowledged` the push ids the broker took (a v5 PUBACK with a
    failure reason code is not taken); :attr:`error` why it stopped short.
    """

    __slots__ = (
        "level", "topic", "client_id", "username", "password", "acknowledged", "refused", "error", "done",
        "_reader", "_ids", "_waiting", "_in_flight", "_window",
    )  # fmt: skip

    def __init__(self, adapter: Mqtt, session: str, pushes: list[tuple[int, dict]], tag: str) -> None:
        self.level = adapter.level
        self.topic = TOPIC.format(client_id=session)
        self.client_id = f"{session}.pub{tag}"
        self.username, self.password = adapter.user_id, adapter.options.password
        self.acknowledged: list[int] = []
        self.refused: list[int] = []  #: push ids the broker answered with a failure reason code
        self.error = ""
        self.done = not pushes
        self._reader = codec.PacketReader()
        self._ids = itertools.count(1)
        self._waiting = deque(pushes)  #: not published yet
        self._in_flight: dict[int, int] = {}  #: packet id -> push id, until PUBACK
        self._window = 0  #: how many may be in flight (the broker's Receive Maximum, once CONNACK said it)

    def start(self) -> list[Frame]:
        return [
            codec.connect(
                self.client_id, level=self.level, keepalive_s=30, clean=True,
                username=self.username, password=self.password,
            )
        ]  # fmt: skip

    def receive(self, frame: Frame) -> list[Frame]:
        if isinstance(frame, str):
            return self._stop("a text frame from an MQTT broker")
        try:
            return [out for p in self._reader.feed(frame) for out in self._packet(p)]
        except codec.MalformedPacket as e:
            return self._stop(f"malformed MQTT: {e}")

    def _packet(self, p: codec.Packet) -> list[Frame]:
        if self.done:
            return []
        if p.type == PacketType.CONNACK:
            ack = codec.parse_connack(p, self.level)
            if ack.code:
                return self._stop(f"publisher refused: connack {codec.reason_name(ack.code)}")
            self._window = int(ack.properties.get(codec.Prop.RECEIVE_MAXIMUM, RECEIVE_MAXIMUM_DEFAULT))
            return self._publish_more()
        if p.type == PacketType.PUBACK:
            packet_id, reason = codec.parse_puback(p, self.level)
            push_id = self._in_flight.pop(packet_id, None)
            if push_id is not None:
                (self.refused if reason >= 0x80 else self.acknowledged).append(push_id)
            if self.refused and not self.error:
                self.error = f"publish refused: puback {codec.reason_name(reason)}"
            out = self._publish_more()
            if not self._in_flight and not self._waiting:
                self.done = True
                out.append(codec.disconnect(self.level))
            return out
        if p.type == PacketType.DISCONNECT:
            reason = codec.parse_disconnect(p, self.level).reason
            return self._stop(f"publisher disconnected: {codec.reason_name(reason)}")
        return []

    def _publish_more(self) -> list[Frame]:
        out: list[Frame] = []
        while self._waiting and len(self._in_flight) < self._window:
            push_id, data = self._waiting.popleft()
            packet_id = next(self._ids)
            self._in_flight[packet_id] = push_id
            payload = push_payload(push_id, data)
            out.append(codec.publish(self.topic, payload, qos=1, packet_id=packet_id, level=self.level))
        return out

    def _stop(self, why: str) -> list[Frame]:
        self.error, self.done = why, True
        return []
