"""Small synthetic run directories with known answers, for the analysis tests.

The backend's RSS is exactly ``base + kib_per_connection x live connections``
(plus an optional leak), the connections ramp up linearly, hold and drop to
zero for the drain; users of every class produce the events the verdicts and
charts read. Deterministic: the same arguments write the same files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from contract.events import EVENT_COLUMNS

MiB = 1024 * 1024
T0 = 1_800_000_000.0
CLASSES = ("ConversationUser", "FlappingUser", "HeartbeatUser", "TokenRefreshUser", "ZombieUser")
ROLES = dict(zip(CLASSES, ("conversation", "flapping", "heartbeat", "refresh", "zombie"), strict=True))
BASE_RSS = 50 * MiB
PEAK_CONNECTIONS = 200
RAMP_S = 50
DRAIN_S = 10


def write_run(
    path: Path,
    *,
    seconds: int = 300,
    kib_per_connection: float = 20.0,
    leak_mib_per_hour: float = 0.0,
    users_per_class: int = 4,
    reconnect_ms: float = 20.0,
    events: bool = True,
    samples: bool = True,
    server_stats: bool = True,
    scenario: str = "synthetic",
    run_id: str | None = None,
    loop_lag_ms: float | None = None,
    late: tuple[tuple[float, float], ...] = (),
    heap_mib: float | None = None,
) -> Path:
    """Write a run directory into ``path`` (created) and return it.

    By default samples.csv has the first format's columns only (an older run). ``loop_lag_ms``: the Locust
    process reports this event-loop lag, with the machine's rows (CPU, run queue; 2 cores in meta.json);
    ``late``: (t, seconds) stretches where the process was stopped: no sample in them, the first one after
    reports the whole stretch as its lag. ``heap_mib``: the backend's /metrics heap, this much plus half of
    what its connections cost.
    """
    path.mkdir(parents=True, exist_ok=True)
    run_id = run_id or path.name
    ts = T0 + np.arange(-5, seconds + DRAIN_S, 1.0)
    t = ts - T0
    conns = np.where(t < 0, 0, np.where(t >= seconds, 0, np.minimum(t, RAMP_S) / RAMP_S * PEAK_CONNECTIONS)).round()
    rss = BASE_RSS + kib_per_connection * 1024 * conns + leak_mib_per_hour * MiB * np.clip(t, 0, None) / 3600
    if samples:
        backend = pd.DataFrame(
            {
                "ts": ts,
                "source": "backend",
                "pid": 100,
                "rss_bytes": rss.round(),
                "cpu_percent": 20.0,
                "num_fds": 20 + conns,
                "num_threads": 6,
                "tcp_established": conns,
                "tcp_close_wait": 0,
            }
        )
        local = backend.assign(source="local", pid=50, rss_bytes=80 * MiB, cpu_percent=10.0, num_fds=30, num_threads=3)
        rows = [backend, local]
        if heap_mib is not None:
            backend["heap_bytes"] = (heap_mib * MiB + (rss - BASE_RSS) / 2).round()
        if loop_lag_ms is not None:
            rows[1] = local = _lagging(local, loop_lag_ms, late)
            rows.append(pd.DataFrame({"ts": ts, "source": "machine", "cpu_percent": 30.0, "run_queue": 1.0}))
        pd.concat(rows).sort_values("ts", kind="stable").to_csv(path / "samples.csv", index=False)
    if server_stats:
        stats = pd.DataFrame(
            {
                "ts": ts,
                "pid": 100,
                "connections": conns,
                "max_agents_per_session": 1,
                "duplicate_agents_total": 0,
                "zombies_reaped_total": 0,
            }
        )
        stats.to_csv(path / "server_stats.csv", index=False)
    n_events = 0
    if events:
        frame = _events(seconds, users_per_class, reconnect_ms)
        frame.to_csv(path / "events.csv", index=False)
        n_events = len(frame)
    meta = {
        "format": 2,  # every event a row of events.csv: the format the analysis still reads
        "run_id": run_id,
        "complete": True,
        "start_utc": "2027-01-15T08:00:00.000Z",
        "end_utc": "2027-01-15T08:05:10.000Z",
        "scenario": scenario,
        "runner": "local",
        "user_classes": {c: users_per_class for c in CLASSES},
        "roles": {ROLES[c]: users_per_class for c in CLASSES},
        "backend": {
            "embedded": True,
            "url": "http://127.0.0.1:9",
            "pid": 100,
            "pids": [100],
            "store": "memory",
            "faults": [],
            "args": ["--store", "memory", "--hb-interval-ms", "15000"],
            "restarts": [],
            "exit_code": 0,
        },
        "recording": {"enabled": True, "events_received": n_events},
        "sample_interval_s": 1.0,
        "test_starts_utc": [T0],
        "test_stops_utc": [T0 + seconds],
        "drain": {"from_utc": T0 + seconds, "seconds": DRAIN_S},
        "exit_reason": "run-time limit reached",
    }
    if loop_lag_ms is not None:
        meta["machine"] = {"cpus": 2}
    (path / "meta.json").write_text(json.dumps(meta, indent=1))
    return path


def _lagging(local: pd.DataFrame, lag_ms: float, late: tuple[tuple[float, float], ...]) -> pd.DataFrame:
    """The Locust process's rows with their loop lag: ``lag_ms`` each, and each late stretch (t, seconds)
    a gap in its samples reported by the first sample after it (harness/lag.py's loop_late_from / _until)."""
    t = local["ts"] - T0
    local = local.assign(loop_lag_ms=lag_ms, loop_late_from=local["ts"] - lag_ms / 1000, loop_late_until=local["ts"])
    for at, seconds in late:
        local = local[~((t > at) & (t < at + seconds))]
        after = (t >= at + seconds).reindex(local.index).idxmax()
        local.loc[after, ["loop_lag_ms", "loop_late_from", "loop_late_until"]] = (
            seconds * 1000,
            T0 + at,
            T0 + at + seconds,
        )
    return local


def _events(seconds: int, users_per_class: int, reconnect_ms: float) -> pd.DataFrame:
    """Every user connects at the start; flapping users flap every 2 s, heartbeat users ping every 5 s,
    zombies are reaped every 30 s; one connect is refused."""
    rng = np.random.default_rng(7)
    rows = []
    for cls in CLASSES:
        for i in range(users_per_class):
            user = f"{cls}-abc123-{i}"
            session = f"s-{cls}-{i}"
            start = 0.1 + 0.05 * i
            rows += [(start, user, "", "connect", 1, 5.0, "", ""), (start, user, session, "welcome", 1, "", "", "new")]
            if cls == "FlappingUser":
                for at in np.arange(2.0 + i * 0.1, seconds - 1, 2.0):
                    latency = reconnect_ms * rng.lognormal(0, 0.3)
                    back = at + latency / 1000
                    rows += [
                        (at, user, session, "disconnect", 1, "", "", "flap_close"),
                        (back, user, session, "reconnect", 1, latency, "", ""),
                        (back, user, session, "welcome", 1, "", "", "resumed"),
                    ]
            elif cls == "HeartbeatUser":
                rows += [(at, user, session, "hb_rtt", 1, 1.0 + i, "", "") for at in np.arange(5.0, seconds, 5.0)]
            elif cls == "ZombieUser":
                rows += [
                    (at, user, session, "close", 1, 23000.0, "4001", "reaped")
                    for at in np.arange(30.0 + i, seconds, 30.0)
                ]
    rows.append((seconds / 2, "ConversationUser-abc123-0", "", "connect", 0, "", "503", "connect failed"))
    frame = pd.DataFrame(rows, columns=["t", "user", "session", "kind", "ok", "latency_ms", "code", "detail"])
    frame = frame.assign(ts=T0 + frame.pop("t"), worker="local", agent="", seq="", retry_after_ms="", note="")
    frame["role"] = frame["user"].str.partition("-")[0].map(ROLES)
    reaped = frame["detail"] == "reaped"
    frame["reason"] = np.where(reaped, "idle_reaped", "")
    frame["idle_timeout_ms"] = np.where(reaped, 22500.0, np.nan)
    frame.loc[frame["kind"] == "connect", "note"] = np.where(
        frame.loc[frame["kind"] == "connect", "ok"] == 0, "upgrade refused with HTTP 503", ""
    )
    return frame.sort_values("ts", kind="stable")[list(EVENT_COLUMNS)]
