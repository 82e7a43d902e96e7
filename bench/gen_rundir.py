"""Write a synthetic soak run directory in the harness's formats, fast: the input of the analysis benchmark.

    .venv/bin/python bench/gen_rundir.py OUT_DIR [--hours 24] [--events 5000000] [--users 2000]
                                                 [--seed 1] [--leak-mib-per-hour 0]

Why: the analysis must turn a 24-hour soak run directory (1 s samples, 5 million
events) into verdicts and a report within a time and memory budget. Nobody can
wait a day per benchmark run, so this writes such a directory in seconds,
vectorised (numpy), deterministic for a given seed.

What it writes is a *healthy* run of the embedded reference backend (``--resume-window
120 --hb-interval-ms 15000``, so an idle timeout of 22.5 s), one local Locust process,
every verdict expected to pass; ``--leak-mib-per-hour`` adds a linear growth of the
backend's RSS for the leak verdict to catch. Files: ``meta.json``, ``events.csv``,
``samples.csv``, ``server_stats.csv``, ``locust_stats.csv``, ``locust_stats_history.csv``
(full history), ``locust_failures.csv``, ``locust_exceptions.csv`` (empty: no failures),
an empty ``backend.log`` and a placeholder ``locust_report.html``. The format is the run
directory's format 2 (contract/events.py): every event carries its user's ``role``, closes and
disconnects a ``reason`` (agentws/1 close codes stay in ``code``, for people only), a reap its
announced ``idle_timeout_ms``; meta.json names ``format`` and the ``roles``.

The model, so that the figures mean something:

* Users are spawned at 20/s, each with one ``connect`` + ``welcome`` (``new``), and stay
  connected until the load stops, except for the gaps their class makes. After the
  load a 10 s drain follows (telemetry only, no connections, sessions detached).
* Event budget: zombies, flapping, conversation and token users get a fixed share of
  ``--events`` (4, 18, 14, 4 %), heartbeat ``hb_rtt`` events the exact rest (~60 %).
  The *rates* follow from the budget (a heartbeat user's hb every ~29 s at the defaults,
  a flapping user flaps in bursts of 10), the timings *inside* a cycle are the real ones.
* ZombieUser cycles run back to back at the real pace (reaped every ~22.8 s), so their
  user count follows from the budget (~9 at the defaults); the others share ``--users``
  by weight (heartbeat 50 %, conversation 20 %, flapping 15 %, token 15 %).
* Backend RSS = 44 MiB + a warm-up of 10 MiB + 20 KiB per connection + 6 KiB per
  detached session + a GC-like sawtooth (2-6 MiB over 2-7 min) + noise + the leak.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
#: Every event a row of events.csv: the run directory format 2, which the analysis still reads.
FORMAT_WRITTEN = 2
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agentws.protocol import DEFAULT_HB_INTERVAL_MS, DEFAULT_RESUME_WINDOW_S, IDLE_TIMEOUT_FACTOR, Close  # noqa: E402
from contract.events import (  # noqa: E402
    EVENT_COLUMNS,
    SAMPLE_COLUMNS,
    CloseReason,
    Detail,
    Kind,
    Role,
)
from users.options import BACKOFF_BASE_MS, BACKOFF_CAP_MS  # noqa: E402

#: The columns of server_stats.csv in the order the real backend's /stats answers them.
STATS_COLUMNS = (
    "ts pid epoch uptime_s connections sessions_attached sessions_detached agents_live max_agents_per_session "
    "outbox_frames outbox_bytes agents_created_total agents_destroyed_total duplicate_agents_total "
    "zombies_reaped_total takeovers_total rate_limited_total token_expired_closes_total refreshes_total "
    "rss_bytes open_fds threads tasks error"
).split()
HISTORY_COLUMNS = (
    "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%,"
    "Total Request Count,Total Failure Count,Total Median Response Time,Total Average Response Time,"
    "Total Min Response Time,Total Max Response Time,Total Average Content Size"
).split(",")
PERCENTILES = (50, 66, 75, 80, 90, 95, 98, 99, 99.9, 99.99, 100)

MiB, KiB = 1 << 20, 1 << 10
HB_INTERVAL_MS = DEFAULT_HB_INTERVAL_MS
IDLE_TIMEOUT_MS = int(HB_INTERVAL_MS * IDLE_TIMEOUT_FACTOR)  #: the backend's default, 22.5 s
RESUME_WINDOW_S = DEFAULT_RESUME_WINDOW_S
SPAWN_RATE = 20.0
DRAIN_S = 10.0
TURN_S = 1.0  #: a streamed reply: 20 chunks x 50 ms
FRAMES_PER_TURN = 22  #: accepted + 20 chunks + done, all sequenced
PUSHES_WHILE_AWAY = 2
GAP_NAMES = ("brief", "medium", "extended")
GAP_WEIGHTS = (0.6, 0.3, 0.1)
GAP_S = (0.2, 1.0, RESUME_WINDOW_S * 1.25 + 1.0)  #: users/conversation.py: extended = past the window
FLAPS_PER_BURST = 10
FLAP_HOLD_S, FLAP_AWAY_S = 0.1, 0.05

USER_WEIGHTS = {"HeartbeatUser": 0.5, "ConversationUser": 0.2, "FlappingUser": 0.15, "TokenRefreshUser": 0.15}
#: Share of the events after the initial connects; HeartbeatUser's hb_rtt events are the rest.
EVENT_SHARES = {"ZombieUser": 0.04, "FlappingUser": 0.18, "ConversationUser": 0.14, "TokenRefreshUser": 0.04}
CLASSES = ("ConversationUser", "FlappingUser", "HeartbeatUser", "TokenRefreshUser", "ZombieUser")
#: The ``role`` of each user class (the classes' ``role`` attribute in users/), in CLASSES order.
ROLES = (Role.CONVERSATION, Role.FLAPPING, Role.HEARTBEAT, Role.REFRESH, Role.ZOMBIE)

KINDS = [str(k) for k in Kind]
#: agentws/1 close codes, for the ``code`` column only (for people: the analysis reads ``reason``).
CODES = ["", str(int(Close.BYE)), str(int(Close.ABNORMAL)), str(int(Close.HEARTBEAT_TIMEOUT))]
REASONS = ["", CloseReason.IDLE_REAPED, CloseReason.CLIENT]
DETAILS = [
    "", Detail.NEW, Detail.RESUMED, Detail.NEW_EXPIRED, Detail.FLAP_CLOSE, *map(Detail.planned_gap, GAP_NAMES),
    Detail.SERVER_CLOSE, Detail.REAPED, Detail.COMPLETE, Detail.RECEIVED, Detail.CONTEXT_KEPT,
    Detail.EXPIRED_CLEANLY, Detail.REFRESHED,
]  # fmt: skip
#: The ``idle_timeout_ms`` column: blank, or the announced idle timeout on a reap (a float, as the client writes it).
IDLE_TIMEOUTS = ["", repr(float(IDLE_TIMEOUT_MS))]
KIND, CODE, REASON, DETAIL = ({s: i for i, s in enumerate(t)} for t in (KINDS, CODES, REASONS, DETAILS))


# -- events: columns built block by block ------------------------------------------------------
class Events:
    """The columns of events.csv as numpy arrays, one block per step of a cycle (vectorised over cycles).

    ``session`` is an index into the run's sessions (-1: none yet); a session's agent has the
    same index. Kind, code, reason and detail are indexes into KINDS, CODES, REASONS, DETAILS;
    ``idle`` (0/1) into IDLE_TIMEOUTS. The role follows from the user (written by write_events).
    """

    def __init__(self) -> None:
        self.blocks: list[dict[str, np.ndarray]] = []

    def add(
        self, ts, user, session, kind: str, *, latency=np.nan, seq=-1, code="", reason="", detail="", idle=0, ok=1
    ) -> None:
        ts = np.asarray(ts, dtype=np.float64)
        n = len(ts)

        def full(value, dtype):
            return np.broadcast_to(np.asarray(value, dtype=dtype), (n,))

        def coded(value, table):
            return full(table[value] if isinstance(value, str) else value, np.int8)

        self.blocks.append(
            {
                "ts": ts,
                "user": full(user, np.int32),
                "session": full(session, np.int32),
                "kind": full(KIND[kind], np.int8),
                "ok": full(ok, np.int8),
                "latency": full(latency, np.float64),
                "seq": full(seq, np.int64),
                "code": coded(code, CODE),
                "reason": coded(reason, REASON),
                "detail": coded(detail, DETAIL),
                "idle": full(idle, np.int8),
            }
        )

    def __len__(self) -> int:
        return sum(len(b["ts"]) for b in self.blocks)

    def columns(self) -> dict[str, np.ndarray]:
        """All blocks, sorted by ts (stable: a user's steps at one instant keep their order)."""
        cols = {k: np.concatenate([b[k] for b in self.blocks]) for k in self.blocks[0]}
        order = np.argsort(cols["ts"], kind="stable")
        return {k: v[order] for k, v in cols.items()}


@dataclass
class Timeline:
    """What the backend's gauges and counters follow: connection gaps, detached sessions, counted moments."""

    gaps: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  #: (start, end): socket closed
    detached: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  #: (start, end): session detached
    reaped: list[np.ndarray] = field(default_factory=list)  #: 4001 closes
    refreshed: list[np.ndarray] = field(default_factory=list)
    created: list[np.ndarray] = field(default_factory=list)  #: agents (sessions) created
    destroyed: list[np.ndarray] = field(default_factory=list)  #: agents destroyed with an expired session


@dataclass
class Run:
    """The run's fixed frame: times, users, sessions."""

    rng: np.random.Generator
    t_start: float  #: test start (UNIX s)
    t_stop: float  #: load stops
    user_class: np.ndarray  #: class index (into CLASSES) per user, users in spawn order
    spawned: np.ndarray  #: each user's first connect
    n_sessions: int = 0

    def new_sessions(self, n: int) -> np.ndarray:
        first, self.n_sessions = self.n_sessions, self.n_sessions + n
        return np.arange(first, self.n_sessions, dtype=np.int32)

    def users_of(self, name: str) -> np.ndarray:
        return np.flatnonzero(self.user_class == CLASSES.index(name)).astype(np.int32)


def lognormal_ms(rng, median: float, sigma: float, n, tail_share: float = 0.0, tail_ms: float = 0.0) -> np.ndarray:
    """Latencies: lognormal around ``median``, plus a rare heavy tail (a GC pause, a retransmission).

    The tail is cut at 25 x ``tail_ms`` so that a cycle's steps keep their order and fit its slot.
    """
    x = median * rng.lognormal(0.0, sigma, n)
    if tail_share:
        x += (rng.random(n) < tail_share) * np.minimum(rng.pareto(2.0, n), 25.0) * tail_ms
    return x


def in_group(counts: np.ndarray) -> np.ndarray:
    """0, 1, ... within each of consecutive groups of the given sizes (vectorised ``range`` per group)."""
    total = int(counts.sum())
    return np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)


def lay_out(run: Run, users: np.ndarray, n_cycles: int, cycle_s: float, jitter: bool = True):
    """Cycle start times: each user's share of ``n_cycles`` in equal slots from its spawn to the load's end.

    One cycle per slot, placed at random within it so that it ends inside it: a user's cycles
    never overlap. Returns (user, start, index within the user, index of the user's first cycle),
    sorted by user then time. Capped at what fits (``--events`` too large for ``--hours``).
    """
    first = run.spawned[users] + 1.0
    span = np.maximum(run.t_stop - 1.0 - cycle_s - first, 0.0)
    fits = int((span // max(cycle_s * 1.05, 1e-3)).sum())
    n_cycles = min(n_cycles, fits)
    per_user = np.full(len(users), n_cycles // len(users))
    per_user[: n_cycles % len(users)] += 1
    owner = np.repeat(np.arange(len(users)), per_user)
    j = in_group(per_user)
    slot = span[owner] / per_user[owner]
    room = np.maximum(slot - cycle_s, 0.0)
    start = first[owner] + j * slot + (run.rng.uniform(0.0, room) if jitter else room / 2)
    first_of_user = np.repeat(np.cumsum(per_user) - per_user, per_user)
    return users[owner], start, j, first_of_user


# -- the user classes -------------------------------------------------------------------------
def initial_connects(run: Run, ev: Events, tl: Timeline) -> None:
    """Every user: connect (no session yet), then welcome ``new`` with its first session and agent."""
    users = np.arange(len(run.user_class), dtype=np.int32)
    latency = lognormal_ms(run.rng, 8.0, 0.5, len(users))
    sessions = run.new_sessions(len(users))
    ev.add(run.spawned, users, -1, Kind.CONNECT, latency=latency)
    welcome = run.spawned + run.rng.uniform(0.0003, 0.0015, len(users))
    ev.add(welcome, users, sessions, Kind.WELCOME, detail=Detail.NEW)
    tl.created.append(welcome)


def heartbeats(run: Run, ev: Events, n: int) -> None:
    """HeartbeatUser: ``hb_rtt`` at a regular interval per user (the budget's, not 15 s), rtt ~0.6 ms."""
    user, start, _, _ = lay_out(run, run.users_of("HeartbeatUser"), n, 0.01, jitter=False)
    rtt = lognormal_ms(run.rng, 0.6, 0.6, len(start), tail_share=0.001, tail_ms=20.0)
    ev.add(start + rtt / 1000, user, user, Kind.HB_RTT, latency=rtt)


def reconnect_ms(rng, n) -> np.ndarray:
    """Disconnect (or the planned come-back) to welcome: lognormal around 5 ms with a tail."""
    return lognormal_ms(rng, 5.0, 0.35, n, tail_share=0.005, tail_ms=40.0)


def resume_steps(run: Run, ev: Events, user, session, since, latency, *, waited_s=0.0, replay_seq=0) -> tuple:
    """connect, welcome, reconnect, replay: an attempt ``waited_s`` (a backoff) after ``since``, ``latency`` ms long.

    The reconnect's latency runs from ``since``, backoff included, as AgentClient.recover measures it.
    Returns (when the socket was open, when the reconnect was recorded).
    """
    attempt = since + waited_s
    connect_ms = latency * run.rng.uniform(0.5, 0.8, len(attempt))
    ev.add(attempt + connect_ms / 1000, user, session, Kind.CONNECT, latency=connect_ms)
    ev.add(attempt + latency * 0.97 / 1000, user, session, Kind.WELCOME, detail=Detail.RESUMED)
    done = attempt + latency / 1000
    ev.add(done, user, session, Kind.RECONNECT, latency=latency + np.multiply(waited_s, 1000), detail=Detail.RESUMED)
    if replay_seq is not None:
        ev.add(done + 2e-5, user, session, Kind.REPLAY, seq=replay_seq)
    return attempt + connect_ms * 0.9 / 1000, done


def flapping(run: Run, ev: Events, tl: Timeline, n_flaps: int) -> None:
    """FlappingUser: bursts of 10 flaps, each a clean client close (1000, ``client``, ``flap_close``), 50 ms away,
    resume, hold 100 ms."""
    latency = reconnect_ms(run.rng, (n_flaps // FLAPS_PER_BURST, FLAPS_PER_BURST))
    if not len(latency):
        return
    period = FLAP_AWAY_S + latency / 1000 + FLAP_HOLD_S
    user, start, _, _ = lay_out(run, run.users_of("FlappingUser"), len(period), period.sum(axis=1).max())
    latency, period = latency[: len(start)], period[: len(start)]
    disconnect = (start[:, None] + np.cumsum(period, axis=1) - period).ravel()
    user = np.repeat(user, FLAPS_PER_BURST)
    bye = str(int(Close.BYE))
    ev.add(disconnect, user, user, Kind.DISCONNECT, code=bye, reason=CloseReason.CLIENT, detail=Detail.FLAP_CLOSE)
    opened, _ = resume_steps(run, ev, user, user, disconnect + FLAP_AWAY_S, latency.ravel())
    tl.gaps.append((disconnect, opened))
    tl.detached.append((disconnect, opened))


def conversations(run: Run, ev: Events, tl: Timeline, n_cycles: int) -> None:
    """ConversationUser: 3 turns, a drop (half of them mid-stream), a planned gap, the resume and its checks.

    Brief (0.2 s) and medium (1 s) gaps resume the session: 2 pushes made while away, the
    interrupted reply completing, ``replay``, ``history_check`` ``context kept``. An extended
    gap (151 s) outlives the 120 s window: a new session and agent (``new:expired``) and
    ``history_check`` ``expired cleanly``.
    """
    rng = run.rng
    user, start, _, first = lay_out(run, run.users_of("ConversationUser"), n_cycles, 3 * TURN_S + GAP_S[2] + 5.0)
    n = len(start)
    gap = rng.choice(len(GAP_S), n, p=GAP_WEIGHTS)
    extended, mid = gap == 2, rng.random(n) < 0.5
    pre, post, base = conversation_sessions(run, user, first, extended)

    turns = start[:, None] + TURN_S * np.arange(1, 4) + rng.uniform(0.0, 0.02, (n, 3))
    for k in range(2):
        ev.add(turns[:, k], user, pre, Kind.STREAM_DONE, seq=base + FRAMES_PER_TURN * (k + 1), detail=Detail.COMPLETE)
    whole = ~mid
    ev.add(
        turns[whole, 2],
        user[whole],
        pre[whole],
        Kind.STREAM_DONE,
        seq=base[whole] + 3 * FRAMES_PER_TURN,
        detail=Detail.COMPLETE,
    )
    chunks = rng.integers(1, 20, n)
    disconnect = np.where(mid, turns[:, 1] + 0.05 * (chunks + 1), turns[:, 2] + 0.001)
    gap_detail = np.array([DETAIL[Detail.planned_gap(g)] for g in GAP_NAMES])[gap]
    abort = str(int(Close.ABNORMAL))  # the client cuts TCP: users/client.py abort
    ev.add(disconnect, user, pre, Kind.DISCONNECT, code=abort, reason=CloseReason.CLIENT, detail=gap_detail)

    back = disconnect + np.array(GAP_S)[gap] + rng.uniform(0.001, 0.004, n)  # + the pushes made while away
    r = ~extended
    opened = np.empty(n)
    opened[r] = conversation_resume(run, ev, user[r], pre[r], back[r], base[r], mid[r], chunks[r])
    opened[extended] = conversation_expired(run, ev, user[extended], pre[extended], post[extended], back[extended])

    tl.gaps.append((disconnect, opened))
    expiry = disconnect[extended] + RESUME_WINDOW_S + rng.uniform(0.0, RESUME_WINDOW_S / 4, extended.sum())
    tl.detached += [(disconnect[r], opened[r]), (disconnect[extended], expiry)]
    tl.destroyed.append(expiry)
    tl.created.append(opened[extended])


def conversation_sessions(run: Run, user, first, extended):
    """Per cycle: the session before the gap, after it (new after an extended gap) and the seq it starts at."""
    idx = np.arange(len(user))
    new = np.full(len(user), -1, dtype=np.int32)
    new[extended] = run.new_sessions(int(extended.sum()))
    last_ext = np.maximum.accumulate(np.where(extended, idx, -1))
    prev_ext = np.concatenate([[-1], last_ext[:-1]])
    renewed = prev_ext >= first  # an earlier cycle of the same user ended in a new session
    pre = np.where(renewed, new[prev_ext], user).astype(np.int32)
    post = np.where(extended, new, pre).astype(np.int32)
    cycles_in_session = idx - np.where(renewed, prev_ext + 1, first)
    return pre, post, cycles_in_session * (3 * FRAMES_PER_TURN + PUSHES_WHILE_AWAY)


def conversation_resume(run: Run, ev: Events, user, session, back, base, mid, chunks) -> np.ndarray:
    """Back within the window: the pushes made while away, the rest of the reply, replay, the history check."""
    last = base + 3 * FRAMES_PER_TURN + PUSHES_WHILE_AWAY
    opened, welcome = resume_steps(run, ev, user, session, back, reconnect_ms(run.rng, len(back)), replay_seq=None)
    pushed = np.where(mid, base + 2 * FRAMES_PER_TURN + 1 + chunks, base + 3 * FRAMES_PER_TURN)
    for k in (1, 2):
        ev.add(welcome + k * 5e-5, user, session, Kind.NOTIFY, seq=pushed + k, detail=Detail.RECEIVED)
    ev.add(welcome[mid] + 1.5e-4, user[mid], session[mid], Kind.STREAM_DONE, seq=last[mid], detail=Detail.COMPLETE)
    ev.add(welcome + 2e-4, user, session, Kind.REPLAY, seq=last)
    ev.add(welcome + 0.0015, user, session, Kind.HISTORY_CHECK, detail=Detail.CONTEXT_KEPT)
    return opened


def conversation_expired(run: Run, ev: Events, user, old, new, back) -> np.ndarray:
    """Back after the window: a new session and agent, and the check that nothing of the old one leaked in."""
    rng, n = run.rng, len(back)
    latency = reconnect_ms(rng, n)
    connect_ms = latency * rng.uniform(0.5, 0.8, n)
    ev.add(back + connect_ms / 1000, user, old, Kind.CONNECT, latency=connect_ms)
    ev.add(back + latency * 0.97 / 1000, user, new, Kind.WELCOME, detail=Detail.NEW_EXPIRED)
    ev.add(back + latency / 1000, user, new, Kind.RECONNECT, latency=latency, detail=Detail.NEW_EXPIRED)
    ev.add(back + latency / 1000 + 0.001, user, new, Kind.HISTORY_CHECK, detail=Detail.EXPIRED_CLEANLY)
    return back + connect_ms * 0.9 / 1000


def token_refreshes(run: Run, ev: Events, tl: Timeline, n_cycles: int) -> None:
    """TokenRefreshUser: ``refresh`` over the open socket, every other one in the middle of a streamed reply."""
    user, start, j, _ = lay_out(run, run.users_of("TokenRefreshUser"), n_cycles, TURN_S + 0.5)
    latency = lognormal_ms(run.rng, 2.5, 0.4, len(start), tail_share=0.002, tail_ms=20.0)
    refreshed = start + 0.05 + latency / 1000
    ev.add(refreshed, user, user, Kind.REFRESH, latency=latency, detail=Detail.REFRESHED)
    mid = j % 2 == 0
    seq = (j[mid] // 2 + 1) * FRAMES_PER_TURN
    ev.add(start[mid] + TURN_S + 0.005, user[mid], user[mid], Kind.STREAM_DONE, seq=seq, detail=Detail.COMPLETE)
    tl.refreshed.append(refreshed)


def zombie_cycle_s() -> float:
    """A zombie's mean cycle: idle timeout + reaper delay + mean full-jitter backoff + the resume."""
    return IDLE_TIMEOUT_MS / 1000 + 0.025 + BACKOFF_BASE_MS / 2000 + 0.005


def zombies(run: Run, ev: Events, tl: Timeline) -> None:
    """ZombieUser, back to back from spawn to the end: silent after welcome, reaped after ~22.5 s (close 4001,
    ``idle_reaped``, ``reaped`` with the announced ``idle_timeout_ms``, then the disconnect ``server_close``),
    resumes after a backoff, silent again. Their number (plan_users) sets their share of the events."""
    rng = run.rng
    users = run.users_of("ZombieUser")
    per_user = math.ceil((run.t_stop - run.t_start) / (IDLE_TIMEOUT_MS / 1000))
    reap_ms = IDLE_TIMEOUT_MS + rng.uniform(0.5, 50.0, (len(users), per_user))
    backoff_s = rng.uniform(0.0, BACKOFF_BASE_MS / 1000, (len(users), per_user))  # full jitter, attempt 0
    latency = reconnect_ms(rng, (len(users), per_user))
    cycle = reap_ms / 1000 + backoff_s + latency / 1000
    silent_since = run.spawned[users][:, None] + 0.0003 + np.cumsum(cycle, axis=1) - cycle
    close = silent_since + reap_ms / 1000
    keep = (close + backoff_s + 0.1 < run.t_stop - 0.5).ravel()
    user = np.repeat(users, per_user)[keep]
    close, backoff_s = close.ravel()[keep], backoff_s.ravel()[keep]
    code, reaped = str(int(Close.HEARTBEAT_TIMEOUT)), CloseReason.IDLE_REAPED
    since_last_frame = reap_ms.ravel()[keep] + 0.3
    ev.add(
        close, user, user, Kind.CLOSE, latency=since_last_frame, code=code, reason=reaped, detail=Detail.REAPED, idle=1
    )
    ev.add(close + 5e-6, user, user, Kind.DISCONNECT, code=code, reason=reaped, detail=Detail.SERVER_CLOSE)
    opened, _ = resume_steps(run, ev, user, user, close, latency.ravel()[keep], waited_s=backoff_s)
    tl.gaps.append((close, opened))
    tl.detached.append((close, opened))
    tl.reaped.append(close)


def plan_users(n_users: int, n_events: int, hours: float, rng) -> np.ndarray:
    """Class per user in spawn order: ZombieUser count from its event budget, the rest by weight."""
    rest = n_events - 2 * n_users
    zombie_cycles = EVENT_SHARES["ZombieUser"] * rest / 6
    n_zombies = min(max(1, round(zombie_cycles * zombie_cycle_s() / (hours * 3600))), n_users // 10)
    counts = {"ZombieUser": n_zombies}
    others = n_users - n_zombies
    for name, weight in USER_WEIGHTS.items():
        counts[name] = int(others * weight)
    counts["HeartbeatUser"] += n_users - sum(counts.values())
    labels = np.concatenate([np.full(c, CLASSES.index(k), dtype=np.int8) for k, c in counts.items()])
    return rng.permutation(labels)


def generate_events(run: Run, n_events: int) -> tuple[dict[str, np.ndarray], Timeline]:
    ev, tl = Events(), Timeline()
    initial_connects(run, ev, tl)
    rest = n_events - len(ev)
    zombies(run, ev, tl)
    flapping(run, ev, tl, int(EVENT_SHARES["FlappingUser"] * rest / 5))
    conversations(run, ev, tl, int(EVENT_SHARES["ConversationUser"] * rest / 10.65))
    token_refreshes(run, ev, tl, int(EVENT_SHARES["TokenRefreshUser"] * rest / 1.5))
    heartbeats(run, ev, n_events - len(ev))
    cols = ev.columns()
    if len(cols["ts"]) != n_events:
        raise SystemExit(f"gen_rundir: {len(cols['ts'])} events fit, not {n_events} (more --hours?)")
    return cols, tl


# -- fast CSV: fields rendered as zero-padded byte matrices, joined, the zero bytes dropped ---------
POW10 = 10 ** np.arange(19, dtype=np.int64)


def n_digits(n: np.ndarray) -> np.ndarray:
    """Decimal digits of non-negative integers (0 has one)."""
    return np.maximum(np.searchsorted(POW10, n, side="right"), 1)


def text_field(strings) -> np.ndarray:
    """A lookup table of byte strings, zero-padded: rows x width uint8 (width 0 when all are empty)."""
    encoded = [s.encode() for s in strings]
    table = np.zeros((len(encoded), max(map(len, encoded))), dtype=np.uint8)
    for i, b in enumerate(encoded):
        table[i, : len(b)] = np.frombuffer(b, dtype=np.uint8)
    return table


def categorical(codes: np.ndarray, strings):
    """A column of few distinct strings (users, sessions, kinds...): rendered by indexing a byte table."""
    table = text_field(strings)
    return lambda sl: table[codes[sl]]


def int_field(values: np.ndarray):
    """Non-negative integers, right-aligned; negative ones are written empty."""

    def render(sl):
        n = values[sl]
        nd = np.where(n < 0, 0, n_digits(np.maximum(n, 0)))
        power = np.arange(nd.max())[::-1]  # of each column's digit
        digits = ((np.maximum(n, 0)[:, None] // POW10[power]) % 10 + 48).astype(np.uint8)
        return np.where(power < nd[:, None], digits, np.uint8(0))

    return render


def decimal_field(values: np.ndarray, *, significant: int | None = None, decimals: int | None = None):
    """Non-negative floats with ``significant`` digits in all (like repr) or a fixed number of ``decimals``.

    NaN is written empty. The digits come from integer arithmetic on x * 10**decimals, so the
    last one of a 17-digit timestamp is float noise, as it is in repr. Right-aligned: column
    ``r`` from the right is the digit of 10**r below the point (``r < dec``), the point, or the
    digit of 10**(r - 1) above it.
    """

    def render(sl):
        x = values[sl]
        missing = ~np.isfinite(x)
        x = np.where(missing, 0.0, x)
        whole = n_digits(np.floor(x).astype(np.int64))
        dec = np.maximum(significant - whole, 1) if significant else np.full(len(x), decimals)
        n = np.rint(x * 10.0**dec).astype(np.int64)
        carried = n >= POW10[whole + dec]  # 9.99.. rounded up to 10.0..: one more whole digit
        whole = whole + carried
        if significant:
            dec = np.maximum(dec - carried, 1)
            n = np.rint(x * 10.0**dec).astype(np.int64)
        total = np.where(missing, -1, whole + dec)  # digits; the point makes total + 1 characters
        r = np.arange(total.max() + 1)[::-1]
        digits = ((n[:, None] // POW10[r]) % 10 + 48).astype(np.uint8)  # digit of 10**r in column r
        dec = dec[:, None]
        chars = digits.copy()
        chars[:, :-1] = np.where(r[:-1] > dec, digits[:, 1:], digits[:, :-1])  # above the point: one column left
        chars = np.where(r == dec, np.uint8(ord(".")), chars)
        return np.where(r <= total[:, None], chars, np.uint8(0))

    return render


def write_csv(path: Path, header, fields, n_rows: int, chunk: int = 250_000) -> None:
    """Every field renders a row range to a byte matrix, zero-padded (no field has a zero byte); they are joined
    with the separators and the zero bytes dropped."""
    with open(path, "wb") as f:
        f.write((",".join(header) + "\n").encode())
        for lo in range(0, n_rows, chunk):
            sl = slice(lo, min(lo + chunk, n_rows))
            parts = [render(sl) for render in fields]
            rows = sl.stop - sl.start
            width = sum(m.shape[1] + 1 for m in parts)
            buf = np.empty((rows, width), dtype=np.uint8)
            at = 0
            for i, matrix in enumerate(parts):
                w = matrix.shape[1]
                if w:  # each row's bytes as one item: a copy per row, not per byte
                    item = np.dtype((np.void, w))
                    buf[:, at : at + w].view(item)[:, 0] = np.ascontiguousarray(matrix).view(item)[:, 0]
                buf[:, at + w] = ord("\n") if i == len(parts) - 1 else ord(",")
                at += w + 1
            buf[buf != 0].tofile(f)


def write_events(path: Path, cols: dict[str, np.ndarray], run: Run, users: list[str], sessions, agents) -> None:
    """events.csv with the recorder's columns (format 2); ts and latency with repr's length (16-17 digits), like
    the real file. Nothing the generator models has a retry-after or a note: those columns are blank."""
    session = cols["session"].astype(np.int64) + 1  # -1 (none yet) -> "" at index 0
    blank = np.zeros(len(session), dtype=np.int8)
    fields = {
        "ts": decimal_field(cols["ts"], significant=17),
        "worker": categorical(blank, ["local"]),
        "user": categorical(cols["user"], users),
        "role": categorical(run.user_class[cols["user"]], ROLES),
        "session": categorical(session, ["", *sessions]),
        "kind": categorical(cols["kind"], KINDS),
        "ok": int_field(cols["ok"].astype(np.int64)),
        "latency_ms": decimal_field(cols["latency"], significant=16),
        "agent": categorical(session, ["", *agents]),
        "seq": int_field(cols["seq"]),
        "code": categorical(cols["code"], CODES),
        "reason": categorical(cols["reason"], REASONS),
        "detail": categorical(cols["detail"], DETAILS),
        "idle_timeout_ms": categorical(cols["idle"], IDLE_TIMEOUTS),
        "retry_after_ms": categorical(blank, [""]),
        "note": categorical(blank, [""]),
    }
    assert tuple(fields) == EVENT_COLUMNS
    write_csv(path, EVENT_COLUMNS, list(fields.values()), len(session))


# -- telemetry ---------------------------------------------------------------------------------------
def active_at(grid: np.ndarray, intervals) -> np.ndarray:
    """How many of the (start, end) intervals contain each grid time."""
    if not intervals:
        return np.zeros(len(grid), dtype=np.int64)
    starts = np.sort(np.concatenate([s for s, _ in intervals]))
    ends = np.sort(np.concatenate([e for _, e in intervals]))
    return np.searchsorted(starts, grid, side="right") - np.searchsorted(ends, grid, side="right")


def counted_by(grid: np.ndarray, moments) -> np.ndarray:
    """A counter's value at each grid time: how many of the moments came before it."""
    if not moments:
        return np.zeros(len(grid), dtype=np.int64)
    return np.searchsorted(np.sort(np.concatenate(moments)), grid, side="right")


def sawtooth(rng, t: np.ndarray) -> np.ndarray:
    """GC-like: grows by 2-6 MiB over 2-7 minutes, then drops back; every tooth its own size."""
    periods = rng.uniform(120.0, 420.0, int(t[-1] / 120.0) + 2)
    edges = np.concatenate([[0.0], np.cumsum(periods)]) - rng.uniform(0.0, 120.0)
    tooth = np.searchsorted(edges, t, side="right") - 1
    heights = rng.uniform(2.0, 6.0, len(periods) + 1) * MiB
    return heights[tooth] * (t - edges[tooth]) / (edges[tooth + 1] - edges[tooth])


@dataclass
class Gauges:
    """Per telemetry sample: the backend's view of connections and sessions."""

    ts: np.ndarray
    connections: np.ndarray
    detached: np.ndarray
    events: np.ndarray  #: protocol events in the second before the sample


def gauges(run: Run, tl: Timeline, event_ts: np.ndarray, t0: float, drain_end: float) -> Gauges:
    """Sample the timeline every second from telemetry's start to the drain's end, as the harness does."""
    rng = run.rng
    grid = t0 + np.arange(math.ceil(drain_end - t0))
    ts = grid + rng.uniform(0.0002, 0.002, len(grid))  # the sampling greenlet's lateness
    users_on = np.searchsorted(np.sort(run.spawned), ts, side="right") * (ts < run.t_stop)
    connections = users_on - active_at(ts, tl.gaps)
    detached = active_at(ts, tl.detached) + (ts >= run.t_stop) * len(run.spawned)
    events = np.diff(np.searchsorted(event_ts, np.concatenate([[t0 - 1.0], ts])))
    return Gauges(ts, connections, detached, events)


def backend_rss(run: Run, g: Gauges, leak_mib_per_hour: float) -> np.ndarray:
    """What a healthy backend's RSS does (module docstring), plus the leak: it grows under load only."""
    rng = run.rng
    since = np.maximum(g.ts - run.t_start, 0.0)
    loaded = np.minimum(since, run.t_stop - run.t_start)
    rss = (
        44 * MiB
        + 10 * MiB * (1 - np.exp(-since / 900.0))
        + g.connections * 20 * KiB
        + g.detached * 6 * KiB
        + sawtooth(rng, since)
        + rng.normal(0.0, 64 * KiB, len(since))
        + leak_mib_per_hour * MiB * loaded / 3600.0
    )
    return (rss // 4096 * 4096).astype(np.int64)


def write_samples(path: Path, run: Run, g: Gauges, pids: dict, backend_rss_bytes: np.ndarray) -> None:
    """2 rows a second: ``backend`` (psutil on the embedded backend) and ``local`` (the Locust process)."""
    rng, n = run.rng, len(g.ts)
    loading = (g.ts >= run.t_start) & (g.ts < run.t_stop)
    hours = (g.ts - run.t_start) / 3600.0
    spawned = np.searchsorted(np.sort(run.spawned), g.ts, side="right") * loading
    backend_cpu = np.clip(1.5 + 0.08 * g.events + rng.normal(0.0, 0.8, n), 0.0, None)
    local_cpu = np.where(loading, np.clip(45 + 8 * np.sin(2 * np.pi * hours) + rng.normal(0, 5, n), 30, 60), 1.0)
    local_rss = 58 * MiB + spawned * 110 * KiB + rng.normal(0, 256 * KiB, n)
    backend = pd.DataFrame(
        {
            "ts": g.ts,
            "source": "backend",
            "pid": pids["backend"],
            "rss_bytes": backend_rss_bytes,
            "cpu_percent": backend_cpu.round(1),
            "num_fds": 17 + g.connections,
            "num_threads": 6,
            "tcp_established": pd.array(g.connections, dtype="Int64"),
            "tcp_close_wait": pd.array(np.zeros(n, dtype=np.int64), dtype="Int64"),
        }
    )
    local = backend.assign(
        source="local",
        pid=pids["local"],
        rss_bytes=(local_rss // 4096 * 4096).astype(np.int64),
        cpu_percent=local_cpu.round(1),
        num_fds=16 + g.connections,
        num_threads=11,
        tcp_established=pd.array([pd.NA] * n, dtype="Int64"),
        tcp_close_wait=pd.array([pd.NA] * n, dtype="Int64"),
    )
    both = pd.concat([backend, local]).sort_index(kind="stable")
    both.reindex(columns=list(SAMPLE_COLUMNS)).to_csv(path, index=False)  # columns it does not model: blank


def write_server_stats(path: Path, run: Run, g: Gauges, tl: Timeline, pids: dict, rss: np.ndarray) -> None:
    """``GET /stats`` every second: gauges from the timeline, counters from the counted moments."""
    rng, n = run.rng, len(g.ts)
    attached = g.connections
    outbox = rng.poisson(0.05 * (attached + g.detached))
    created = counted_by(g.ts, tl.created)
    stats = pd.DataFrame(
        {
            "ts": g.ts,
            "pid": pids["backend"],
            "epoch": pids["epoch"],
            "uptime_s": (g.ts - pids["backend_started"]).round(3),
            "connections": g.connections,
            "sessions_attached": attached,
            "sessions_detached": g.detached,
            "agents_live": attached + g.detached,
            "max_agents_per_session": (created > 0).astype(np.int64),
            "outbox_frames": outbox,
            "outbox_bytes": outbox * rng.integers(60, 80, n),
            "agents_created_total": created,
            "agents_destroyed_total": counted_by(g.ts, tl.destroyed),
            "duplicate_agents_total": 0,
            "zombies_reaped_total": counted_by(g.ts, tl.reaped),
            "takeovers_total": 0,
            "rate_limited_total": 0,
            "token_expired_closes_total": 0,
            "refreshes_total": counted_by(g.ts, tl.refreshed),
            "rss_bytes": rss + rng.integers(-4, 5, n) * 4096,
            "open_fds": 21 + g.connections,
            "threads": 6,
            "tasks": 6 + 2 * g.connections + rng.integers(0, 4, n),
            "error": "",
        }
    )
    stats[STATS_COLUMNS].to_csv(path, index=False)


# -- Locust's exports -----------------------------------------------------------------------------
REQUEST_NAMES = ("connect", "hb", "history", "reconnect", "refresh", "resume", "turn")  #: Locust's sorted order
#: Requests whose time is no event's latency_ms: (median ms, lognormal sigma).
UNTIMED_MS = {"history": (0.8, 0.6), "turn": (1005.0, 0.005)}


def request_of(cols: dict[str, np.ndarray]) -> np.ndarray:
    """The index in REQUEST_NAMES of the request each event stands for (-1: none)."""
    kind, name = cols["kind"], np.full(len(cols["kind"]), -1, dtype=np.int8)
    connect = kind == KIND[Kind.CONNECT]
    name[connect] = np.where(cols["session"][connect] < 0, 0, 5)  # a hello with a session is a resume
    for k, label in ((Kind.HB_RTT, "hb"), (Kind.RECONNECT, "reconnect"), (Kind.REFRESH, "refresh")):
        name[kind == KIND[k]] = REQUEST_NAMES.index(label)
    name[kind == KIND[Kind.STREAM_DONE]] = REQUEST_NAMES.index("turn")
    name[(kind == KIND[Kind.HISTORY_CHECK]) & (cols["detail"] == DETAIL[Detail.CONTEXT_KEPT])] = 2
    return name


def locust_rounded(ms: float) -> str:
    """As Locust shows a response time: whole ms below 100, then 2 significant digits (1016 -> 1000)."""
    return str(int(round(ms, 0 if ms < 100 else -1 if ms < 1000 else -2)))


def response_profile(ms: np.ndarray) -> dict:
    """Whole-run response times as Locust shows them."""
    pct = np.percentile(ms, PERCENTILES) if len(ms) else np.zeros(len(PERCENTILES))
    mean, low, high = (float(f(ms)) if len(ms) else 0.0 for f in (np.mean, np.min, np.max))
    return {
        "pct": [locust_rounded(p) for p in pct],
        "median": locust_rounded(pct[0]),
        "avg": repr(mean),
        "min": repr(low),
        "max": repr(high),
    }


def response_times(run: Run, cols, request: np.ndarray) -> list[np.ndarray]:
    """Per request name (then all together): the response times in ms, a sample for the untimed ones."""
    out = []
    for i, label in enumerate(REQUEST_NAMES):
        if label in UNTIMED_MS:
            median, sigma = UNTIMED_MS[label]
            out.append(median * run.rng.lognormal(0.0, sigma, min(100_000, int((request == i).sum()))))
        else:
            out.append(cols["latency"][request == i])
    out.append(np.concatenate(out))
    return out


def write_locust_exports(out: Path, run: Run, cols: dict[str, np.ndarray]) -> None:
    """locust_stats_history.csv (each second: every name seen so far, then Aggregated), locust_stats.csv, empties."""
    request = request_of(cols)
    labels = [*REQUEST_NAMES, "Aggregated"]
    profiles = [response_profile(ms) for ms in response_times(run, cols, request)]
    t0 = math.floor(run.t_start)
    seconds = np.arange(t0, math.floor(run.t_stop) + 1)
    second = np.floor(cols["ts"] - t0).astype(np.int64)
    counts = [np.bincount(second[request == i], minlength=len(seconds))[: len(seconds)] for i in range(len(labels) - 1)]
    counts.append(np.sum(counts, axis=0))
    t, which, total, rps = [], [], [], []
    for i, c in enumerate(counts):
        cumulative = np.cumsum(c)
        seen = (cumulative > 0) | (i == len(labels) - 1)
        t.append(seconds[seen])
        which.append(np.full(int(seen.sum()), i, dtype=np.int8))
        total.append(cumulative[seen])
        rps.append(np.convolve(c, np.ones(10) / 10.0)[: len(c)][seen])  # Locust's current rate: a 10 s window
    order = np.lexsort((np.concatenate(which), np.concatenate(t)))
    t, which = np.concatenate(t)[order], np.concatenate(which)[order]
    users = np.searchsorted(np.sort(run.spawned), seconds + 1.0, side="right")
    zeros = np.zeros(len(t), dtype=np.int8)
    fields = [
        int_field(t),
        int_field(users[t - t0]),
        categorical((which < len(REQUEST_NAMES)).astype(np.int8), ["", "WS"]),
        categorical(which, labels),
        decimal_field(np.concatenate(rps)[order], decimals=6),
        categorical(zeros, ["0.000000"]),
        *(categorical(which, [p["pct"][k] for p in profiles]) for k in range(len(PERCENTILES))),
        int_field(np.concatenate(total)[order]),
        categorical(zeros, ["0"]),
        *(categorical(which, [p[key] for p in profiles]) for key in ("median", "avg", "min", "max")),
        categorical(zeros, ["0.0"]),
    ]
    write_csv(out / "locust_stats_history.csv", HISTORY_COLUMNS, fields, len(t))
    write_locust_stats(out / "locust_stats.csv", labels, profiles, [int(c.sum()) for c in counts], run)
    (out / "locust_failures.csv").write_text("Method,Name,Error,Occurrences,First Seen,Last Seen\n")
    (out / "locust_exceptions.csv").write_text("Count,Message,Traceback,Nodes\n")


def write_locust_stats(path: Path, labels, profiles, counts, run: Run) -> None:
    header = ["Type", "Name", "Request Count", "Failure Count", "Median Response Time", "Average Response Time"]
    header += ["Min Response Time", "Max Response Time", "Average Content Size", "Requests/s", "Failures/s"]
    header += HISTORY_COLUMNS[6:17]
    rows = [header]
    for label, p, n in zip(labels, profiles, counts, strict=True):
        kind = "" if label == "Aggregated" else "WS"
        rate = repr(n / (run.t_stop - run.t_start))
        rows.append([kind, label, n, 0, p["median"], p["avg"], p["min"], p["max"], "0.0", rate, "0.0", *p["pct"]])
    path.write_text("".join(",".join(map(str, row)) + "\n" for row in rows))


# -- ids and meta.json --------------------------------------------------------------------------
def hex_ids(rng, n: int, digits: int) -> list[str]:
    values = rng.integers(0, 1 << (4 * digits), n, dtype=np.uint64)
    return [f"{int(v):0{digits}x}" for v in values]


def utc(ts: float) -> str:
    """As harness.rundir.utc: ISO 8601 with milliseconds and Z."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def options_of(args, run_dir: str, n_users: int) -> dict:
    """The options meta.json records (no secrets): Locust's main ones, the harness's, the users' defaults."""
    return {
        "analyser": "analysis", "backoff_base_ms": BACKOFF_BASE_MS, "backoff_cap_ms": BACKOFF_CAP_MS, "ca_file": "",
        "connect_timeout_s": 5.0, "csv_prefix": None, "drain": DRAIN_S, "drop_mid_stream_share": 0.5,
        "exit_code_on_error": 1, "expect_workers": 1, "flap_abrupt_share": 0.0, "flap_connected_ms": 100.0,
        "flap_cycles": 0, "flap_disconnected_ms": 50.0, "flap_jitter": 0.0, "flap_new_session": False,
        "gap_brief_s": GAP_S[0], "gap_extended_s": 0.0, "gap_medium_s": GAP_S[1], "gap_weights": "6,3,1",
        "hb_interval_ms": 0.0, "headless": True, "host": None, "html_file": None, "locustfile": "locustfile.py",
        "loglevel": "INFO", "master": False, "max_retries": 6, "no_record": False, "num_users": n_users,
        "only_summary": True, "processes": None, "pushes_while_away": PUSHES_WHILE_AWAY,
        "record_buffer_max": 200000, "refresh_ahead_s": 2.0, "refresh_expire_share": 0.0, "reply_timeout_s": 5.0,
        "run_dir": run_dir, "run_id": "", "run_time": round(args.hours * 3600), "sample_interval": 1.0,
        "scenario": "soak", "server_pid": 0, "spawn_rate": SPAWN_RATE, "stop_timeout": 0,
        "stub_chunk_delay_ms": None, "stub_chunks_per_reply": None, "stub_fault": [],
        "stub_flush_interval_ms": None, "stub_hb_interval_ms": HB_INTERVAL_MS, "stub_idle_timeout_ms": None,
        "stub_max_frame_bytes": None, "stub_outbox_limit": None, "stub_rate_limit": None,
        "stub_refresh_grace_ms": None, "stub_restart_at": None, "stub_restart_kill": False,
        "stub_resume_window": RESUME_WINDOW_S, "stub_store": None, "tls_cert": "", "tls_verify": True,
        "token_ttl_s": 300.0, "turns_per_connection": 3, "verdicts": False, "worker": False, "ws_headers": "",
        "ws_path": "/ws", "ws_subprotocols": "", "zombie_max_wait_s": 60.0,
    }  # fmt: skip


def write_meta(out: Path, args, run: Run, times: dict, pids: dict, rows: dict) -> None:
    run_id, runs, events = out.name, "runs", rows["events"]
    store = f"sqlite:{runs}/{run_id}/backend.db"
    url = f"http://127.0.0.1:{pids['port']}"
    counts = np.bincount(run.user_class, minlength=len(CLASSES))
    meta = {
        "run_id": run_id,
        "format": FORMAT_WRITTEN,
        "complete": True,
        "start_utc": utc(times["start"]),
        "scenario": "soak",
        "locustfile": "locustfile.py",
        "runner": "local",
        "expect_workers": 0,
        "user_classes_available": list(CLASSES),
        "user_classes": {name: int(c) for name, c in zip(CLASSES, counts, strict=True)},
        "roles": {str(role): int(c) for role, c in zip(ROLES, counts, strict=True)},
        "num_users": len(run.user_class),
        "spawn_rate": SPAWN_RATE,
        "run_time": round(args.hours * 3600),
        "versions": {"locust": version("locust"), "harness": "0.1.0", "python": sys.version.split()[0]},
        "thresholds": {},
        "backend": {
            "embedded": True,
            "url": url,
            "pid": pids["backend"],
            "pids": [pids["backend"]],
            "store": store,
            "faults": [],
            "args": [*"--host 127.0.0.1 --port 0 --store".split(), store, "--resume-window", str(RESUME_WINDOW_S)]
            + ["--hb-interval-ms", str(HB_INTERVAL_MS)],
            "log": "backend.log",
            "restarts": [],
            "exit_code": 0,
        },
        "recording": {"enabled": True, "events_received": events, "per_worker": {"local": {"received": events}}},
        "sample_interval_s": 1.0,
        "locust_exports": {"csv_prefix": "locust", "html": "locust_report.html"},
        "options": options_of(args, runs, len(run.user_class)),
        "host": url,
        "test_starts_utc": [run.t_start],
        "test_stops_utc": [run.t_stop],
        "load_stopped_utc": run.t_stop,
        "drain": {"from_utc": times["drain_from"], "seconds": DRAIN_S},
        "backend_notes": [],
        "workers": [],
        "rows": rows,
        "exit_reason": "run-time limit reached",
        "generated_by": "bench/gen_rundir.py",
        "generator": {k: getattr(args, k) for k in ("hours", "events", "users", "seed", "leak_mib_per_hour")},
        "end_utc": utc(times["end"]),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


# -- main -------------------------------------------------------------------------------------------
def generate(out: Path, args) -> dict:
    """Write the run directory; returns seconds per step."""
    steps, clock = {}, time.perf_counter()

    def step(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        steps[name], clock = now - clock, now

    rng = np.random.default_rng(args.seed)
    start = args.start
    t_start = start + 0.25
    t_stop = t_start + args.hours * 3600.0
    user_class = plan_users(args.users, args.events, args.hours, rng)
    spawned = t_start + 0.015 + np.arange(args.users) / SPAWN_RATE + rng.uniform(0, 0.01, args.users)
    run = Run(rng, t_start, t_stop, user_class, spawned)
    pids = {"backend": int(rng.integers(2000, 60000)), "port": int(rng.integers(32768, 61000))}
    pids |= {"local": pids["backend"] - 1, "epoch": hex_ids(rng, 1, 8)[0], "backend_started": start + 0.2}
    times = {"start": start, "drain_from": t_stop + 0.3}
    times["end"] = times["drain_from"] + DRAIN_S + 0.4

    cols, tl = generate_events(run, args.events)
    step("events (model)")
    tag = hex_ids(rng, 1, 6)[0]
    users = [f"{CLASSES[c]}-{tag}-{i + 1}" for i, c in enumerate(user_class)]
    sessions = [f"{pids['epoch']}.{h}" for h in hex_ids(rng, run.n_sessions, 16)]
    agents = [f"a-{h}" for h in hex_ids(rng, run.n_sessions, 12)]
    write_events(out / "events.csv", cols, run, users, sessions, agents)
    step("events.csv")

    g = gauges(run, tl, cols["ts"], t_start - 0.017, times["drain_from"] + DRAIN_S)
    rss = backend_rss(run, g, args.leak_mib_per_hour)
    write_samples(out / "samples.csv", run, g, pids, rss)
    write_server_stats(out / "server_stats.csv", run, g, tl, pids, rss)
    step("samples.csv + server_stats.csv")
    write_locust_exports(out, run, cols)
    (out / "backend.log").write_text("")
    (out / "locust_report.html").write_text("<!doctype html><title>synthetic run: no Locust report</title>\n")
    step("locust exports")
    rows = {"events": args.events, "samples": 2 * len(g.ts), "server_stats": len(g.ts)}
    write_meta(out, args, run, times, pids, rows)
    return steps


def parse_start(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="the run directory to write (created; must not exist or be empty)")
    ap.add_argument("--hours", type=float, default=24.0, help="length of the load phase")
    ap.add_argument("--events", type=int, default=5_000_000, help="rows of events.csv (exactly)")
    ap.add_argument("--users", type=int, default=2000, help="simulated users in all")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--leak-mib-per-hour", type=float, default=0.0, help="backend RSS growth under load")
    ap.add_argument(
        "--start", type=parse_start, default=parse_start("2026-11-20T06:00:00Z"), help="start_utc (ISO 8601)"
    )
    args = ap.parse_args(argv)
    if args.users < 20 or args.events < 4 * args.users:
        ap.error("need --users >= 20 and --events >= 4 x --users")
    out = fresh_dir(ap, args.out)
    began = time.perf_counter()
    steps = generate(out, args)
    print(f"{out}: {args.hours:g} h, {args.events:,} events, {args.users:,} users, seed {args.seed}")
    print_steps(out, steps, began)


def fresh_dir(ap: argparse.ArgumentParser, out: Path) -> Path:
    """The run directory to write: created, refused if it holds anything."""
    if out.exists() and any(out.iterdir()):
        ap.error(f"{out} exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    return out


def print_steps(out: Path, steps: dict, began: float) -> None:
    """Seconds per step (or a count), the total, and the size of each file or table folder written."""
    for name, value in steps.items():
        print(f"  {name:<40} {value:8.1f} s" if isinstance(value, float) else f"  {name:<40} {value:>12,}")
    print(f"  {'total':<40} {time.perf_counter() - began:8.1f} s")
    for path in sorted(out.iterdir()):
        size = sum(p.stat().st_size for p in path.iterdir()) if path.is_dir() else path.stat().st_size
        print(f"  {path.name:<40} {size / MiB:9.1f} MiB")


if __name__ == "__main__":
    main()
