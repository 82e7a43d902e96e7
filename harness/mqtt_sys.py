"""An MQTT broker's own figures, from its ``$SYS`` topics: the ``server_stats.csv`` of an MQTT run.

A broker has no ``/stats``; mosquitto (and most brokers) publish their counters
under ``$SYS/broker/...`` every ``sys_interval``. :class:`SysTopics` is one MQTT
3.1.1 connection of the master's (a greenlet, over the users' WebSocket transport,
to the same URL they use) subscribed to ``$SYS/broker/#``, keeping the latest value
of each figure in :data:`FIELDS`; telemetry reads them once a sample. It reconnects
by itself after a restart; while it is not connected a poll fails with the reason.
"""

from __future__ import annotations

import logging
import time

import gevent

from users.protocols import mqtt_codec as codec
from users.protocols.mqtt_codec import Level, PacketType
from users.transport import Closed, ConnectError, WebSocket

logger = logging.getLogger(__name__)

#: server_stats.csv columns, by the ``$SYS`` topic they come from (mosquitto 2.0's names).
FIELDS = {
    "uptime_s": "$SYS/broker/uptime",
    "clients_connected": "$SYS/broker/clients/connected",
    "clients_disconnected": "$SYS/broker/clients/disconnected",
    "clients_total": "$SYS/broker/clients/total",
    "clients_expired": "$SYS/broker/clients/expired",
    "subscriptions": "$SYS/broker/subscriptions/count",
    "messages_stored": "$SYS/broker/store/messages/count",
    "messages_received": "$SYS/broker/messages/received",
    "messages_sent": "$SYS/broker/messages/sent",
    "publish_dropped": "$SYS/broker/publish/messages/dropped",
    "heap_current_bytes": "$SYS/broker/heap/current",
    "heap_maximum_bytes": "$SYS/broker/heap/maximum",
}
_COLUMN_OF = {topic: column for column, topic in FIELDS.items()}
KEEPALIVE_S = 30
RETRY_S = 1.0


def number(payload: bytes) -> float | str:
    """A ``$SYS`` value: ``"1234"``, ``"56 seconds"`` -> a number; anything else as text."""
    text = payload.decode(errors="replace").strip()
    try:
        return float(text.split()[0]) if text else ""
    except ValueError:
        return text


class SysTopics:
    """The latest ``$SYS`` figures of the broker at ``ws_url`` (subprotocols as the users offer them)."""

    def __init__(self, ws_url: str, subprotocols: list[str], connect_timeout_s: float = 5.0, ssl_context=None):
        self.ws_url, self.subprotocols = ws_url, subprotocols
        self.connect_timeout_s, self.ssl_context = connect_timeout_s, ssl_context
        self.values: dict[str, float | str] = {}
        self.connected = False
        self.error = "not connected yet"
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> SysTopics:
        self._greenlet = gevent.spawn(self._run)
        return self

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=5)

    def poll(self) -> dict:
        """The figures now (every column, blank until the broker published it); raises while disconnected."""
        if not self.connected:
            raise ConnectionError(f"$SYS: {self.error}")
        return {column: self.values.get(column, "") for column in FIELDS}

    def _run(self) -> None:
        while True:
            try:
                self._session()
            except (ConnectError, Closed, OSError, codec.MalformedPacket) as e:
                self.error = f"{type(e).__name__}: {e}"[:200]
            self.connected = False
            gevent.sleep(RETRY_S)

    def _session(self) -> None:
        ws = WebSocket.open(
            self.ws_url, timeout=self.connect_timeout_s, subprotocols=self.subprotocols, ssl_context=self.ssl_context
        )
        try:
            client_id = f"harness-sys-{int(time.time() * 1000) % 10**9}"
            ws.send(codec.connect(client_id, level=Level.V311, keepalive_s=KEEPALIVE_S, clean=True))
            reader = codec.PacketReader()
            last_sent = time.monotonic()
            while True:
                message = ws.recv(max(0.1, KEEPALIVE_S / 2 - (time.monotonic() - last_sent)))
                if time.monotonic() - last_sent >= KEEPALIVE_S / 2:
                    ws.send(codec.pingreq())
                    last_sent = time.monotonic()
                if message is None:
                    continue
                if isinstance(message, str):
                    raise codec.MalformedPacket("a text frame from an MQTT broker")
                for p in reader.feed(message):
                    self._packet(ws, p)
        finally:
            ws.abort()

    def _packet(self, ws: WebSocket, p: codec.Packet) -> None:
        if p.type == PacketType.CONNACK:
            ack = codec.parse_connack(p, Level.V311)
            if ack.code:
                raise ConnectionError(f"$SYS subscriber refused: {codec.V311_CONNACK.get(ack.code, ack.code)}")
            ws.send(codec.subscribe(1, [("$SYS/broker/#", 0)], Level.V311))
        elif p.type == PacketType.SUBACK:
            self.connected, self.error = True, ""
        elif p.type == PacketType.PUBLISH:
            msg = codec.parse_publish(p, Level.V311)
            column = _COLUMN_OF.get(msg.topic)
            if column is not None:
                self.values[column] = number(msg.payload)
