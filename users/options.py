"""Every knob of the simulated users, as Locust custom arguments shown in the web UI.

:class:`Settings` reads them from ``environment.parsed_options``; when that is
None (an ``Environment`` built by hand in a test or notebook) every field has
its default, so one dataclass is the single list of defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from locust import events

#: The client's backoff defaults (full jitter): 500 ms doubling to 20 s at most.
BACKOFF_BASE_MS = 500
BACKOFF_CAP_MS = 20_000


@dataclass(frozen=True)
class Settings:
    # connection
    protocol: str = ""  #: a built-in adapter's name or module:Class (users/protocols); "": the target's, or agentws
    ws_path: str = ""  #: "" -> the protocol's own path
    token_url: str = ""  #: "" -> host + /auth/token
    token_ttl_s: float = 300.0
    admin_token: str = ""
    password: str = ""  #: for protocols that log in with the user's id and a password (MQTT)
    mqtt_keepalive_s: int = 15  #: MQTT keepalive (0: the broker never drops a silent client)
    mqtt_session_expiry_s: int = 120  #: MQTT 5 session expiry: how long the broker keeps an away session
    mqtt_clean_start: str = "first"  #: MQTT 5 clean start on a session's first connection ("first") or "never"
    socketio_namespace: str = "/"  #: the Socket.IO namespace the users join
    socketio_refresh_event: str = "refresh"  #: the application's event that swaps the token on the open socket
    ws_headers: str = ""  #: "Name: value; Name2: value2"
    ws_subprotocols: str = ""  #: comma-separated
    source_addresses: str = ""  #: comma-separated local addresses; connections take them in turn
    tls_verify: bool = True
    ca_file: str = ""  #: "" -> the system's trust store
    connect_timeout_s: float = 5.0
    reply_timeout_s: float = 5.0
    max_retries: int = 6
    backoff_base_ms: float = BACKOFF_BASE_MS
    backoff_cap_ms: float = BACKOFF_CAP_MS
    # FlappingUser
    flap_connected_ms: float = 100.0
    flap_disconnected_ms: float = 50.0
    flap_jitter: float = 0.0
    flap_new_session: bool = False
    flap_abrupt_share: float = 0.0
    flap_takeover_share: float = 0.0  #: cycles that resume on a second connection while the first is open
    flap_cycles: int = 0  #: 0 = no limit
    flap_final_turn: bool = False  #: after the last cycle: resume, send a message, read the whole reply
    # HeartbeatUser
    hb_interval_ms: float = 0.0  #: 0 = the backend's, from welcome
    # ZombieUser
    zombie_max_wait_s: float = 60.0
    # TokenRefreshUser
    refresh_ahead_s: float = 2.0
    refresh_expire_share: float = 0.0
    # ConversationUser
    turns_per_connection: int = 3
    drop_mid_stream_share: float = 0.5
    gap_brief_s: float = 0.2
    gap_medium_s: float = 1.0
    gap_extended_s: float = 0.0  #: 0 = resume_window_s from welcome + 1 s
    gap_weights: str = "6,3,1"  #: brief, medium, extended
    gap_spread_s: float = 0.0  #: brief and medium gaps drawn uniformly from their length +/- this
    conversation_cycles: int = 0  #: drops per user, then it stops; 0 = no limit
    pushes_while_away: int = 2

    @classmethod
    def from_environment(cls, environment) -> Settings:
        """The settings of a run; one shared instance per environment and parsed options."""
        parsed = getattr(environment, "parsed_options", None)
        cached = getattr(environment, "_agentws_settings", None)
        if cached is not None and cached[0] is parsed:
            return cached[1]
        settings = cls._from_options(parsed)
        environment._agentws_settings = (parsed, settings)
        return settings

    @classmethod
    def _from_options(cls, parsed) -> Settings:
        if parsed is None:
            return cls()
        values = {}
        for f in fields(cls):
            value = getattr(parsed, f.name, None)
            if value is not None:
                values[f.name] = value
        return cls(**values)

    def header_dict(self) -> dict[str, str]:
        pairs = (h.partition(":") for h in self.ws_headers.split(";") if h.strip())
        return {name.strip(): value.strip() for name, _, value in pairs}

    def source_address_list(self) -> list[str]:
        return [a.strip() for a in self.source_addresses.split(",") if a.strip()]

    def subprotocol_list(self) -> list[str]:
        return [p.strip() for p in self.ws_subprotocols.split(",") if p.strip()]

    def gap_weight_list(self) -> list[float]:
        weights = [float(w) for w in self.gap_weights.split(",")]
        return (weights + [0.0, 0.0, 0.0])[:3]


def _flag(text: str) -> bool:
    return str(text).strip().lower() in ("1", "true", "yes", "on")


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    d = Settings()

    def arg(name: str, type_, help_: str, **kw) -> None:
        dest = name.removeprefix("--").replace("-", "_")
        parser.add_argument(name, type=type_, default=getattr(d, dest), help=help_, include_in_web_ui=True, **kw)

    arg(
        "--protocol",
        str,
        "the session protocol: agentws, mqtt, mqtt311, socketio, or an adapter's module:Class (default: the target's)",
    )
    arg("--ws-path", str, "path (and query) of the WebSocket endpoint on the host (default: the protocol's)")
    arg("--token-url", str, "token endpoint (default: host + /auth/token)")
    arg("--token-ttl-s", float, "lifetime asked for each token")
    arg("--admin-token", str, "bearer token for /admin/notify", is_secret=True)
    arg("--password", str, "password of protocols that log in with the user's id (MQTT)", is_secret=True)
    arg("--mqtt-keepalive-s", int, "MQTT keepalive: PINGREQ interval; the broker drops silence after 1.5x (0 = never)")
    arg("--mqtt-session-expiry-s", int, "MQTT 5 session expiry: how long the broker keeps an away session")
    arg(
        "--mqtt-clean-start", str, "MQTT 5 clean start: a session's first connection (first, paho's default) or never",
        choices=("first", "never"),
    )  # fmt: skip
    arg("--socketio-namespace", str, "Socket.IO: the namespace the users join")
    arg("--socketio-refresh-event", str, "Socket.IO: the application's event (with an ack) that swaps the token")
    arg("--ws-headers", str, "extra upgrade headers, 'Name: value; Name2: value2'")
    arg("--ws-subprotocols", str, "subprotocols to offer, comma-separated")
    arg("--source-addresses", str, "local addresses to connect from, in turn (e.g. 127.0.0.2,127.0.0.3)")
    arg("--tls-verify", _flag, "verify the server certificate for wss/https (false: check nothing)")
    arg("--ca-file", str, "PEM file of the CA(s) to trust for wss/https instead of the system's")
    arg("--connect-timeout-s", float, "bound on TCP connect + upgrade + welcome")
    arg("--reply-timeout-s", float, "bound on waiting for hb_ack, refreshed, history, accepted")
    arg("--max-retries", int, "reconnect attempts before a user gives up on a disconnect")
    arg("--backoff-base-ms", float, "full-jitter backoff base")
    arg("--backoff-cap-ms", float, "full-jitter backoff cap")
    arg("--flap-connected-ms", float, "FlappingUser: time connected per cycle")
    arg("--flap-disconnected-ms", float, "FlappingUser: time disconnected per cycle")
    arg("--flap-jitter", float, "FlappingUser: +/- fraction applied to both times")
    arg("--flap-new-session", _flag, "FlappingUser: start a new session each cycle instead of resuming")
    arg("--flap-abrupt-share", float, "FlappingUser: share of cycles that cut TCP without a close frame")
    arg(
        "--flap-takeover-share", float,
        "FlappingUser: share of cycles that resume on a second connection first: the backend must end the first",
    )  # fmt: skip
    arg("--flap-cycles", int, "FlappingUser: cycles per user, then it stops (0 = until the run ends)")
    arg("--flap-final-turn", _flag, "FlappingUser: after the last cycle, resume and send a message, read its reply")
    arg("--hb-interval-ms", float, "HeartbeatUser: heartbeat interval (0 = the backend's from welcome)")
    arg("--zombie-max-wait-s", float, "ZombieUser: give up waiting for the reap after this long")
    arg("--refresh-ahead-s", float, "TokenRefreshUser: refresh this long before the token expires")
    arg("--refresh-expire-share", float, "TokenRefreshUser: share of users that let their token expire")
    arg("--turns-per-connection", int, "ConversationUser: turns before it drops the connection")
    arg("--drop-mid-stream-share", float, "ConversationUser: share of drops made in the middle of a reply")
    arg("--gap-brief-s", float, "ConversationUser: brief disconnection")
    arg("--gap-medium-s", float, "ConversationUser: medium disconnection")
    arg("--gap-extended-s", float, "ConversationUser: extended disconnection (0 = past the resume window)")
    arg("--gap-weights", str, "ConversationUser: weights of brief,medium,extended gaps")
    arg("--gap-spread-s", float, "ConversationUser: brief and medium gaps drawn uniformly from their length +/- this")
    arg("--conversation-cycles", int, "ConversationUser: drops per user, then it stops (0 = until the run ends)")
    arg("--pushes-while-away", int, "ConversationUser: notifications pushed while disconnected")
