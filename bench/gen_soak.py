"""Write a synthetic soak day in the run directory's format 3, fast: the input of the soak analysis benchmark.

    .venv/bin/python bench/gen_soak.py OUT_DIR [--hours 24] [--seed 1] [--leak-mib-per-hour 0]
                                               [--fault NAME ...] [--workers 4] [--users-scale 1]

Why: issue 16's target is a 24-hour soak of 10,000+ users judged in about a minute in
bounded memory. Such a day is ~10^8 protocol events; a real run records the routine
ones as counts per second, worker, key and latency bucket (harness/tally.py) and keeps a
raw row only for what a verdict may cite. This writes that directory directly from
rates, vectorised (numpy), deterministic for a seed, one hour at a time (memory stays
small whatever ``--hours``).

What it models (users spawned at 50/s over 4 Locust workers ``w1``..``w4``, round robin;
the embedded reference backend with its defaults: heartbeat 15 s, idle timeout 22.5 s,
resume window 120 s, token TTL 300 s):

* 10,000 **heartbeat** users: ``hb_rtt`` every 15 s (lognormal, median 2 ms), and every
  300 s ``refresh_required`` (grace given) answered by a ``refresh`` (median 3 ms).
* 500 **flapping** users: one cycle a second each: ``disconnect`` flap_close, ``connect``,
  ``welcome`` resumed, ``reconnect`` resumed (median 15 ms, 0.5 % tail around 150 ms), ``replay``.
* 250 **conversation** users: a cycle every ~18.5 s: three ``stream_done`` complete, a planned
  gap (brief 0.2 s : medium 1 s : extended 151 s = 6 : 3 : 1), then ``connect``, ``welcome``
  resumed, ``reconnect`` resumed, two ``notify`` received, ``replay``, ``history_check`` context
  kept. An extended gap outlives the resume window: raw ``welcome`` and ``reconnect`` new:expired
  (with its ``disconnect`` kept as context, ``n`` = 0), then ``history_check`` expired cleanly.
* 250 **refresh** users: ``hb_rtt`` every 15 s, a ``refresh`` every ~298 s with a reply streamed
  across it, a tenth of them after a ``refresh_required``.
* 100 **zombies**: silent after ``welcome``, reaped after ~22.8 s: raw ``close`` (idle_reaped,
  reaped, latency from the last frame, ``idle_timeout_ms`` 22500) and ``disconnect`` server_close,
  then a counted resume after a full-jitter backoff.
* **One backend restart** halfway (meta.json ``backend.restarts``; down 2.4 s): every event from
  it to 60 s after the backend is ready again is a raw row (``n`` = 1), the 10 s before it are
  counted and kept raw as context (``n`` = 0), as the recorder's raw window does. Every connected
  user gets ``close`` restarting and ``disconnect`` server_close, fails to connect while the
  backend is down (backoff from users/options.py), and comes back with ``welcome`` resumed and
  ``reconnect`` through a storm the backend serves at 4,000 resumes/s.
* Per worker, per minute and timed key, the slowest event kept raw (``n`` = 0), as the tally's
  exemplars. Users running per second, worker and role in ``activity/``.

Files: ``events/``, ``tallies/``, ``activity/`` (one zstd Parquet part per hour, the schemas
of harness/recorder.py), and through bench/gen_rundir.py's writers ``samples.csv`` (the backend,
the master and each worker; the backend's pid changes at the restart), ``server_stats.csv``,
Locust's CSVs (from the raw rows only: the analysis does not read them) and ``meta.json``
(format 3, the shape of a distributed run's). ``--leak-mib-per-hour`` grows the backend's
RSS under load (each backend process from its own start). ``--fault NAME`` plants a fault
for one verdict to catch (:data:`FAULTS`); faults stay clear of the restart.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.special import ndtr

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for p in (str(ROOT), str(BENCH)):
    if p not in sys.path:
        sys.path.insert(0, p)

import gen_rundir as gr  # noqa: E402

from contract.events import FORMAT, ROUTINE, CloseReason, Detail, Kind, Role, user_id  # noqa: E402
from contract.histogram import OVERFLOW, bucket_of, buckets_of, lower_edge, upper_edge  # noqa: E402
from harness.columnar import COMPRESSION, PART  # noqa: E402
from harness.recorder import ACTIVITY_SCHEMA, EVENTS_SCHEMA, RESTART_RAW_AFTER_S, TALLIES_SCHEMA  # noqa: E402
from harness.tally import EXEMPLAR_S, RING_S  # noqa: E402
from users.options import BACKOFF_BASE_MS, BACKOFF_CAP_MS  # noqa: E402

#: Users per role at ``--users-scale 1`` (issue 16's target day).
USERS = {Role.HEARTBEAT: 10_000, Role.FLAPPING: 500, Role.CONVERSATION: 250, Role.REFRESH: 250, Role.ZOMBIE: 100}
CLASS_OF = {
    Role.CONVERSATION: "ConversationUser", Role.FLAPPING: "FlappingUser", Role.HEARTBEAT: "HeartbeatUser",
    Role.REFRESH: "TokenRefreshUser", Role.ZOMBIE: "ZombieUser",
}  # fmt: skip
SPAWN_RATE = 50.0
HB_S = gr.HB_INTERVAL_MS / 1000  #: 15 s
TOKEN_TTL_S = 300.0
REFRESH_S = TOKEN_TTL_S - 2.0  #: a refresh user refreshes ahead of expiry
FLAP_S = 1.0  #: a flapping user's cycle
FLAP_AWAY_S = 0.05
CONVERSATION_S = 3 * gr.TURN_S + float(np.dot(gr.GAP_WEIGHTS, gr.GAP_S))  #: a conversation cycle: ~18.5 s
BRIEF_SHARE = gr.GAP_WEIGHTS[0] / (gr.GAP_WEIGHTS[0] + gr.GAP_WEIGHTS[1])  #: of the gaps that resume
EXTENDED_S = gr.GAP_S[2]  #: away past the 120 s window: 151 s
IDLE_MS = float(gr.IDLE_TIMEOUT_MS)  #: 22500
REAPER_MS = (20.0, 600.0)  #: the backend's reaper runs late by this much
DOWN_S = 2.4  #: the backend restart: from SIGTERM to ready
STORM_PER_S = 4000.0  #: resumes/s the new backend serves in the storm
RAW_AFTER_S = RESTART_RAW_AFTER_S  #: the raw window ends this long after the backend is ready
BYE, ABNORMAL, REAP, RESTART = "1000", "1006", "4001", "1012"


@dataclass(frozen=True)
class Dist:
    """Latency in ms: lognormal around ``median``, plus a share ``tail`` of a second, slower lognormal."""

    median: float
    sigma: float
    tail: float = 0.0
    tail_median: float = 1.0
    tail_sigma: float = 1.0

    def cdf(self, ms: np.ndarray) -> np.ndarray:
        x = np.log(np.maximum(ms, 1e-9))
        main = ndtr((x - math.log(self.median)) / self.sigma)
        if not self.tail:
            return main
        return (1 - self.tail) * main + self.tail * ndtr((x - math.log(self.tail_median)) / self.tail_sigma)

    def sample(self, rng, n: int) -> np.ndarray:
        x = self.median * rng.lognormal(0.0, self.sigma, n)
        if self.tail:
            slow = rng.random(n) < self.tail
            x[slow] = self.tail_median * rng.lognormal(0.0, self.tail_sigma, int(slow.sum()))
        return x


HB_RTT = Dist(2.0, 0.5, 0.001, 25.0, 0.6)
NEW_CONNECT = Dist(8.0, 0.5)
RESUME_CONNECT = Dist(6.0, 0.45)
RECONNECT = Dist(15.0, 0.45, 0.005, 150.0, 0.8)
SLOW_RECONNECT = Dist(15.0, 0.45, 0.03, 2200.0, 0.15)  #: --fault slow-resume: 3 % of flaps take 1.5-3 s
REFRESH = Dist(3.0, 0.4, 0.002, 30.0, 0.6)


@cache
def bucket_probs(d: Dist) -> tuple[np.ndarray, np.ndarray]:
    """The histogram buckets a latency of ``d`` lands in, and their probabilities (a value is counted in the
    bucket of its whole microseconds, rounded: contract/histogram.py)."""
    spread = max(d.sigma, d.tail_sigma if d.tail else 0.0) * 6.5
    low = min(d.median, d.tail_median if d.tail else d.median) * math.exp(-spread)
    high = max(d.median, d.tail_median if d.tail else d.median) * math.exp(spread)
    buckets = np.arange(bucket_of(low), bucket_of(high) + 1)
    p = np.diff(np.concatenate([[0.0], d.cdf(upper_edge(buckets) - 0.0005)]))
    p[-1] += 1.0 - p.sum()
    keep = p > 1e-12
    return buckets[keep].astype(np.int32), p[keep] / p[keep].sum()


# -- the text of the tables, interned -----------------------------------------------------------
class Texts:
    """Every text value of a table column, as a small integer (0 is "")."""

    def __init__(self) -> None:
        self.values: list[str] = [""]
        self.ids: dict[str, int] = {"": 0}

    def __call__(self, value) -> int:
        value = str(value)
        if value not in self.ids:
            self.ids[value] = len(self.values)
            self.values.append(value)
        return self.ids[value]


TEXT = Texts()
#: (kind, ok, detail) ids of the routine outcomes: counted, not kept row by row.
ROUTINE_IDS = [(TEXT(k), ok, TEXT(d)) for k, ok, d in sorted(ROUTINE)]  # sorted: ids the same every run


@dataclass(frozen=True)
class Key:
    """A tally key (contract.events.TALLY_KEY) and, when it is timed, its latency distribution."""

    role: str
    kind: str
    ok: int = 1
    detail: str = ""
    reason: str = ""
    gap: str = ""
    dist: Dist | None = None

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(TEXT(v) for v in (self.role, self.kind, self.detail, self.reason, self.gap))


KEYS: list[Key] = []
KEY_IDS: dict[tuple, int] = {}


def key_id(role, kind, ok, detail, reason, gap, dist=None) -> int:
    """The id of a key (registered on first use); ``dist`` only names how a rate's latencies are drawn."""
    k = (str(role), str(kind), int(ok), str(detail), str(reason), str(gap))
    if k not in KEY_IDS:
        KEY_IDS[k] = len(KEYS)
        KEYS.append(Key(*k, dist=dist))
    return KEY_IDS[k]


@dataclass(frozen=True)
class Cycle:
    """Routine outcomes counted from a rate: per user and second ``rate`` cycles of ``steps`` (key, events each)."""

    role: str
    rate: float
    steps: tuple[tuple[int, int], ...]


def cycles(flap_dist: Dist) -> list[Cycle]:
    """Every user's routine outcomes, as rates (zombies and extended gaps are modelled event by event)."""
    R, K, D = Role, Kind, Detail

    def k(role, kind, detail="", reason="", gap="", dist=None):
        return key_id(role, kind, 1, detail, reason, gap, dist)

    def resume(role, gap, dist):
        return (
            (k(role, K.DISCONNECT, gap, CloseReason.CLIENT), 1),
            (k(role, K.CONNECT, dist=RESUME_CONNECT), 1),
            (k(role, K.WELCOME, D.RESUMED), 1),
            (k(role, K.RECONNECT, D.RESUMED, gap=gap, dist=dist), 1),
        )

    conv = R.CONVERSATION
    after_gap = (k(conv, K.NOTIFY, D.RECEIVED), 2), (k(conv, K.REPLAY), 1)
    return [
        Cycle(R.HEARTBEAT, 1 / HB_S, ((k(R.HEARTBEAT, K.HB_RTT, dist=HB_RTT), 1),)),
        Cycle(
            R.HEARTBEAT,
            1 / TOKEN_TTL_S,
            (
                (k(R.HEARTBEAT, K.REFRESH_REQUIRED, D.GRACE_GIVEN), 1),
                (k(R.HEARTBEAT, K.REFRESH, D.REFRESHED, dist=REFRESH), 1),
            ),
        ),
        Cycle(R.FLAPPING, 1 / FLAP_S, (*resume(R.FLAPPING, D.FLAP_CLOSE, flap_dist), (k(R.FLAPPING, K.REPLAY), 1))),
        Cycle(conv, 1 / CONVERSATION_S, ((k(conv, K.STREAM_DONE, D.COMPLETE), 3),)),
        *(
            Cycle(
                conv,
                share * (1 - gr.GAP_WEIGHTS[2]) / CONVERSATION_S,
                (*resume(conv, gap, RECONNECT), *after_gap, (k(conv, K.HISTORY_CHECK, D.CONTEXT_KEPT, gap=gap), 1)),
            )
            for share, gap in ((BRIEF_SHARE, D.PLANNED_GAP_BRIEF), (1 - BRIEF_SHARE, D.PLANNED_GAP_MEDIUM))
        ),
        Cycle(R.REFRESH, 1 / HB_S, ((k(R.REFRESH, K.HB_RTT, dist=HB_RTT), 1),)),
        Cycle(
            R.REFRESH,
            1 / REFRESH_S,
            ((k(R.REFRESH, K.REFRESH, D.REFRESHED, dist=REFRESH), 1), (k(R.REFRESH, K.STREAM_DONE, D.COMPLETE), 1)),
        ),
        Cycle(R.REFRESH, 0.1 / REFRESH_S, ((k(R.REFRESH, K.REFRESH_REQUIRED, D.GRACE_GIVEN), 1),)),
    ]


# -- events, block by block ------------------------------------------------------------------------
_COLUMNS = {
    "ts": np.float64, "user": np.int32, "kind": np.int16, "ok": np.int8, "latency": np.float64, "seq": np.int64,
    "code": np.int16, "reason": np.int16, "detail": np.int16, "note": np.int16, "idle": np.float64,
    "gap": np.int16, "n": np.int8, "agent": np.int8,
}  # fmt: skip


class Rows:
    """Events as numpy columns, one block per step (vectorised over users or cycles); text as TEXT ids.

    ``n`` -1: decided by the raw window and whether the outcome is routine (:meth:`World.route`);
    0 or 1: a raw row kept as it is. ``agent`` 1: the row names another agent than its session's.
    """

    def __init__(self) -> None:
        self.blocks: list[dict[str, np.ndarray]] = []

    def add(self, ts, user, kind, *, ok=1, latency=np.nan, seq=-1, code="", reason="", detail="", note="",
            idle=np.nan, gap="", n=-1, agent=0) -> None:  # fmt: skip
        ts = np.asarray(ts, dtype=np.float64)
        values = dict(ts=ts, user=user, kind=TEXT(kind), ok=ok, latency=latency, seq=seq, code=TEXT(code),
                      reason=TEXT(reason), detail=TEXT(detail), note=TEXT(note), idle=idle, gap=TEXT(gap), n=n,
                      agent=agent)  # fmt: skip
        self.blocks.append({c: np.broadcast_to(np.asarray(v, dtype=_COLUMNS[c]), ts.shape) for c, v in values.items()})

    def columns(self) -> dict[str, np.ndarray]:
        if not self.blocks:
            return {c: np.empty(0, dtype=t) for c, t in _COLUMNS.items()}
        return {c: np.concatenate([b[c] for b in self.blocks]) for c in _COLUMNS}


def take(cols: dict[str, np.ndarray], which: np.ndarray) -> dict[str, np.ndarray]:
    return {c: v[which] for c, v in cols.items()}


def joined(*parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {c: np.concatenate([p[c] for p in parts]) for c in _COLUMNS}


def periodic(rng, since: np.ndarray, until: np.ndarray, period: float, jitter: float = 0.0):
    """Per owner i, times ``since[i] + k * period`` (+ up to ``jitter``) before ``until[i]``: (owner, k, time)."""
    n = np.maximum(np.ceil((until - since) / period), 0).astype(np.int64)
    owner = np.repeat(np.arange(len(since)), n)
    k = gr.in_group(n)
    t = since[owner] + k * period + rng.uniform(0.0, jitter, len(owner))
    keep = t < until[owner]
    return owner[keep], k[keep], t[keep]


# -- the run ----------------------------------------------------------------------------------------
@dataclass
class World:
    """The run's fixed frame: users, their workers, the restart, and the event-by-event timelines."""

    rng: np.random.Generator
    t_start: float
    t_stop: float
    roles: np.ndarray  #: role name per user, in spawn order
    worker: np.ndarray  #: worker index per user
    spawned: np.ndarray  #: each user's first connect
    at: float  #: the restart: SIGTERM
    ready: float  #: ... the new backend ready
    faults: tuple[str, ...]
    #: set as the timelines are built: zombie rounds, extended gaps, the restart's raw window
    zombie: dict = field(default_factory=dict)
    extended: dict = field(default_factory=dict)
    window: dict = field(default_factory=dict)
    storm: dict = field(default_factory=dict)

    @property
    def win_end(self) -> float:
        return self.ready + RAW_AFTER_S

    @property
    def quiet(self) -> tuple[float, float]:
        """Seconds whose events are modelled one by one around the restart (not from rates)."""
        return math.floor(self.at - RING_S), math.ceil(self.win_end)

    def of(self, role: str) -> np.ndarray:
        return np.flatnonzero(self.roles == role)

    def route(self, cols: dict[str, np.ndarray]) -> tuple[dict, dict]:
        """(counted, raw): routine outcomes outside the raw window are counted (and kept as context, ``n`` 0,
        in the ring before it); everything else is a raw row (``n`` 1)."""
        ts, decided = cols["ts"], cols["n"] >= 0
        routine = np.zeros(len(ts), dtype=bool)
        for k, ok, d in ROUTINE_IDS:
            routine |= (cols["kind"] == k) & (cols["ok"] == ok) & (cols["detail"] == d)
        in_window = (ts >= self.at) & (ts <= self.win_end)
        counted = routine & ~in_window & ~decided
        ring = counted & (ts >= self.at - RING_S) & (ts < self.at)
        raw = take(cols, ~counted | ring)
        raw["n"] = np.where(raw["n"] >= 0, raw["n"], np.where(ring[~counted | ring], 0, 1)).astype(np.int8)
        return take(cols, counted), raw


def plan(args) -> World:
    rng = np.random.default_rng(args.seed)
    t_start = args.start + 0.25
    t_stop = t_start + args.hours * 3600.0
    counts = {role: max(1, round(n * args.users_scale)) for role, n in USERS.items()}
    roles = rng.permutation(np.concatenate([np.full(n, str(r), dtype=object) for r, n in counts.items()]))
    n = len(roles)
    spawned = t_start + 0.015 + np.arange(n) / SPAWN_RATE + rng.uniform(0, 0.01, n)
    at = t_start + args.hours * 1800.0 + rng.uniform(0.0, 1.0)
    w = World(rng, t_start, t_stop, roles, np.arange(n) % args.workers, spawned, at, at + DOWN_S, tuple(args.fault))
    if spawned[-1] + 60 > at:
        raise SystemExit(f"gen_soak: --hours {args.hours:g} is too short to spawn {n:,} users before the restart")
    return w


def restart_storm(w: World) -> None:
    """Who the restart cuts off (every connected user), their failed attempts while it is down, when each is back."""
    rng = w.rng
    ext = w.extended
    away = np.zeros(len(w.roles), dtype=bool)
    inside = (ext["disc"] < w.at) & (ext["back"] > w.at)
    away[ext["user"][inside]] = True
    users = np.flatnonzero(~away)
    cut = w.at + rng.uniform(0.003, 0.06, len(users))
    attempts = 8
    cap = np.minimum(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2.0 ** np.arange(attempts)) / 1000.0
    tries = cut[:, None] + np.cumsum(rng.uniform(0.0, 1.0, (len(users), attempts)) * cap, axis=1)
    up = tries >= w.ready
    up[:, -1] = True
    first_up = up.argmax(axis=1)
    attempt = np.maximum(tries[np.arange(len(users)), first_up], w.ready)
    order = np.argsort(attempt, kind="stable")
    i = np.arange(len(users)) / STORM_PER_S
    served = np.empty(len(users))
    served[order] = i + np.maximum.accumulate(attempt[order] - i)  # the new backend serves them one by one
    w.storm = dict(users=users, cut=cut, tries=tries, first_up=first_up, attempt=attempt, served=served)


def zombie_rounds(w: World) -> None:
    """Every zombie round: silent from its welcome, reaped after the idle timeout (or cut by the restart)."""
    rng, users = w.rng, w.of(Role.ZOMBIE)
    reap_mean = (90_000.0 if "no-reap" in w.faults else IDLE_MS) + sum(REAPER_MS) / 2
    storm = w.storm
    back = np.full(len(w.roles), np.nan)
    back[storm["users"]] = storm["served"]
    parts = []
    for since, until in (
        (w.spawned[users] + 0.002, np.full(len(users), w.at)),
        (back[users], np.full(len(users), w.t_stop)),
    ):
        per = int(np.ceil((until - since).max() / (reap_mean / 1000))) + 2
        reap_ms = rng.uniform(*REAPER_MS, (len(users), per)) + reap_mean - sum(REAPER_MS) / 2
        backoff = rng.uniform(0.0, BACKOFF_BASE_MS / 1000, (len(users), per))
        latency = RESUME_CONNECT.sample(rng, len(users) * per).reshape(len(users), per) * 1.6
        span = reap_ms / 1000 + backoff + latency / 1000
        silent = since[:, None] + np.cumsum(span, axis=1) - span
        close = silent + reap_ms / 1000
        keep = (close + backoff + 0.1 < until[:, None] - 0.5).ravel()
        parts.append({
            "user": np.repeat(users, per)[keep], "close": close.ravel()[keep], "reap_ms": reap_ms.ravel()[keep],
            "backoff": backoff.ravel()[keep], "latency": latency.ravel()[keep],
        })  # fmt: skip
    w.zombie = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(w.zombie["close"], kind="stable")
    w.zombie = {k: v[order] for k, v in w.zombie.items()}


def extended_gaps(w: World) -> None:
    """Conversation gaps past the resume window: each user now and then (a tenth of its cycles), never overlapping,
    never begun while the restart's events are modelled one by one."""
    rng, users = w.rng, w.of(Role.CONVERSATION)
    mean_s = CONVERSATION_S / gr.GAP_WEIGHTS[2]
    per = int((w.t_stop - w.t_start) / (mean_s + EXTENDED_S) * 1.5) + 4
    span = rng.exponential(mean_s, (len(users), per)) + EXTENDED_S
    disc = w.spawned[users][:, None] + 5.0 + np.cumsum(span, axis=1) - EXTENDED_S
    back = disc + EXTENDED_S + rng.uniform(0.001, 0.004, disc.shape)
    q0, q1 = w.quiet
    keep = (back < w.t_stop - 2.0) & ~((disc >= q0 - 1) & (disc < q1))
    user, disc, back = np.repeat(users, per)[keep.ravel()], disc[keep], back[keep]
    down = (back >= w.at - 0.5) & (back < w.ready + 3.0)  # back while the backend is down: comes back after it
    back[down] = w.ready + rng.uniform(3.0, 6.0, int(down.sum()))
    order = np.argsort(disc, kind="stable")
    w.extended = {"user": user[order], "disc": disc[order], "back": back[order]}


def renewals(w: World):
    """A conversation user's session generation at a time: how many extended gaps it came back from by then."""
    ext = w.extended
    order = np.lexsort((ext["back"], ext["user"]))
    users, backs = ext["user"][order], ext["back"][order]
    first = np.searchsorted(users, np.arange(len(w.roles)))

    def generation(user: np.ndarray, ts: np.ndarray) -> np.ndarray:
        lo, hi = first[user], np.searchsorted(users, user, side="right")
        # backs of one user are sorted: count those <= ts inside the user's slice (times from the start: exact
        # to ~10 us beside the user number)
        key = user.astype(np.float64) * 1e7 + (ts - w.t_start)
        flat = users.astype(np.float64) * 1e7 + (backs - w.t_start)
        return np.clip(np.searchsorted(flat, key, side="right") - lo, 0, hi - lo)

    return generation


# -- event-by-event models ---------------------------------------------------------------------------
def zombie_rows(w: World, which: np.ndarray, rows: Rows) -> None:
    z = take(w.zombie, which) if which is not None else w.zombie
    user, close = z["user"], z["close"]
    rows.add(close, user, Kind.CLOSE, latency=z["reap_ms"] + 0.3, code=REAP, reason=CloseReason.IDLE_REAPED,
             detail=Detail.REAPED, idle=IDLE_MS)  # fmt: skip
    rows.add(close + 5e-6, user, Kind.DISCONNECT, code=REAP, reason=CloseReason.IDLE_REAPED, detail=Detail.SERVER_CLOSE)
    attempt = close + z["backoff"]
    resume(rows, user, attempt, z["latency"], since=close, gap=Detail.SERVER_CLOSE)


def resume(rows: Rows, user, attempt, latency, *, since, gap, detail=Detail.RESUMED, replay=True) -> None:
    """connect, welcome, reconnect (timed from ``since``), replay: an attempt ``latency`` ms long."""
    rows.add(attempt + latency * 0.6e-3, user, Kind.CONNECT, latency=latency * 0.6)
    done = attempt + latency * 1e-3
    rows.add(done - latency * 0.03e-3, user, Kind.WELCOME, detail=detail)
    rows.add(done, user, Kind.RECONNECT, latency=(done - since) * 1000, detail=detail, gap=gap)
    if replay:
        rows.add(done + 2e-5, user, Kind.REPLAY, seq=0)


def extended_rows(w: World, which, rows: Rows) -> None:
    e = take(w.extended, which)
    user, disc, back = e["user"], e["disc"], e["back"]
    gap = Detail.PLANNED_GAP_EXTENDED
    rows.add(disc, user, Kind.DISCONNECT, code=ABNORMAL, reason=CloseReason.CLIENT, detail=gap)
    q0, q1 = w.quiet
    context = (disc < q0) | (disc >= q1)  # the recorder keeps it raw as the expiry's context
    rows.add(disc[context], user[context], Kind.DISCONNECT, code=ABNORMAL, reason=CloseReason.CLIENT, detail=gap, n=0)
    latency = RECONNECT.sample(w.rng, len(user))
    resume(rows, user, back, latency, since=back, gap=gap, detail=Detail.NEW_EXPIRED, replay=False)
    rows.add(back + latency * 1e-3 + 0.001, user, Kind.HISTORY_CHECK, detail=Detail.EXPIRED_CLEANLY, gap=gap)


def spawn_rows(w: World, which, rows: Rows) -> None:
    user = np.flatnonzero(which)
    latency = NEW_CONNECT.sample(w.rng, len(user))
    t = w.spawned[user]
    rows.add(t + latency * 1e-3, user, Kind.CONNECT, latency=latency)
    rows.add(t + latency * 1e-3 + 0.0005, user, Kind.WELCOME, detail=Detail.NEW)


def normal_rows(w: World, users: np.ndarray, since: np.ndarray, until: np.ndarray, flap_dist: Dist) -> Rows:
    """What each user does, event by event, from ``since`` to ``until`` (the rates' model, row by row)."""
    rng, rows, roles = w.rng, Rows(), w.roles[users]

    def every(role, period, jitter=0.0):
        mine = np.flatnonzero(roles == role)
        phase = rng.uniform(0.0, period, len(mine))
        owner, k, t = periodic(rng, since[mine] + phase, until[mine], period, jitter)
        return users[mine][owner], k, t

    for role in (Role.HEARTBEAT, Role.REFRESH):
        u, _, t = every(role, HB_S, 0.01)
        rows.add(t, u, Kind.HB_RTT, latency=HB_RTT.sample(rng, len(t)))
        period = TOKEN_TTL_S if role == Role.HEARTBEAT else REFRESH_S
        u, _, t = every(role, period)
        asked = np.ones(len(t), dtype=bool) if role == Role.HEARTBEAT else rng.random(len(t)) < 0.1
        rows.add(t[asked], u[asked], Kind.REFRESH_REQUIRED, detail=Detail.GRACE_GIVEN)
        latency = REFRESH.sample(rng, len(t))
        rows.add(t + 0.01 + latency * 1e-3, u, Kind.REFRESH, latency=latency, detail=Detail.REFRESHED)
        if role == Role.REFRESH:
            rows.add(t + gr.TURN_S, u, Kind.STREAM_DONE, seq=gr.FRAMES_PER_TURN, detail=Detail.COMPLETE)
    u, _, t = every(Role.FLAPPING, FLAP_S, 0.02)
    rows.add(t, u, Kind.DISCONNECT, code=BYE, reason=CloseReason.CLIENT, detail=Detail.FLAP_CLOSE)
    resume(rows, u, t + FLAP_AWAY_S, flap_dist.sample(rng, len(t)), since=t + FLAP_AWAY_S, gap=Detail.FLAP_CLOSE)
    conversation_rows(w, *every(Role.CONVERSATION, CONVERSATION_S, 0.5), rows)
    return rows


def conversation_rows(w: World, u, k, t, rows: Rows) -> None:
    """Three streamed replies, a brief or medium planned gap, the resume with the pushes made while away."""
    ext = w.extended
    # not while the user is away past the window
    if not len(t):
        return
    mine = np.isin(ext["user"], np.unique(u)) & (ext["back"] >= t.min() - 1.0) & (ext["disc"] <= t.max() + 5.0)
    inside = np.zeros(len(u), dtype=bool)
    for user, disc, back in zip(ext["user"][mine], ext["disc"][mine], ext["back"][mine], strict=True):
        inside |= (u == user) & (t + 5.0 >= disc) & (t <= back)
    u, k, t = u[~inside], k[~inside], t[~inside]
    rng, seq = w.rng, (k * (3 * gr.FRAMES_PER_TURN + gr.PUSHES_WHILE_AWAY)).astype(np.int64)
    for turn in range(3):
        rows.add(t + gr.TURN_S * (turn + 1), u, Kind.STREAM_DONE, seq=seq + gr.FRAMES_PER_TURN * (turn + 1),
                 detail=Detail.COMPLETE)  # fmt: skip
    brief = rng.random(len(t)) < BRIEF_SHARE
    disc = t + 3 * gr.TURN_S + 0.01
    for is_brief, gap, away in (
        (True, Detail.PLANNED_GAP_BRIEF, gr.GAP_S[0]),
        (False, Detail.PLANNED_GAP_MEDIUM, gr.GAP_S[1]),
    ):
        m = brief == is_brief
        user, at = u[m], disc[m]
        rows.add(at, user, Kind.DISCONNECT, code=ABNORMAL, reason=CloseReason.CLIENT, detail=gap)
        back = at + away
        latency = RECONNECT.sample(rng, len(at))
        done = back + latency * 1e-3
        resume(rows, user, back, latency, since=back, gap=gap, replay=False)
        last = seq[m] + 3 * gr.FRAMES_PER_TURN
        for push in (1, 2):
            rows.add(done + push * 5e-5, user, Kind.NOTIFY, seq=last + push, detail=Detail.RECEIVED)
        rows.add(done + 2e-4, user, Kind.REPLAY, seq=last + 2)
        rows.add(done + 0.0015, user, Kind.HISTORY_CHECK, detail=Detail.CONTEXT_KEPT, gap=gap)


def window_rows(w: World, flap_dist: Dist) -> dict[str, np.ndarray]:
    """Every event of the quiet span around the restart, one by one: the ring before it, the cut-off, the failed
    attempts, the storm, and normal life again until the raw window ends."""
    rng, storm = w.rng, w.storm
    q0, q1 = w.quiet
    users, cut = storm["users"], storm["cut"]
    live = users[w.roles[users] != Role.ZOMBIE]
    before = normal_rows(w, live, np.full(len(live), float(q0)), np.full(len(live), w.at), flap_dist).columns()
    cut_of = np.full(len(w.roles), np.inf)
    cut_of[users] = cut
    before = take(before, before["ts"] < cut_of[before["user"]])
    rows = Rows()
    rows.blocks.append(before)
    silent = np.where(w.roles[users] == Role.ZOMBIE, 5000.0, 200.0)  # ms since the user's last frame
    rows.add(cut, users, Kind.CLOSE, latency=rng.uniform(0.0, 1.0, len(users)) * silent, code=RESTART,
             reason=CloseReason.RESTARTING)  # fmt: skip
    rows.add(
        cut + 6e-6, users, Kind.DISCONNECT, code=RESTART, reason=CloseReason.RESTARTING, detail=Detail.SERVER_CLOSE
    )
    tries, first_up = storm["tries"], storm["first_up"]
    failed = np.arange(tries.shape[1])[None, :] < first_up[:, None]
    owner = np.nonzero(failed)[0]
    rows.add(tries[failed], users[owner], Kind.CONNECT, ok=0, detail=Detail.CONNECT_FAILED, note="tcp connect refused")
    served = storm["served"]
    latency = RESUME_CONNECT.sample(rng, len(users))
    lost = rng.random(len(users)) < 0.2 if "forget-on-restart" in w.faults else np.zeros(len(users), dtype=bool)
    for is_lost, detail in ((False, Detail.RESUMED), (True, Detail.NEW_NONE)):
        m = lost == is_lost
        start = served[m] - latency[m] * 1e-3
        resume(rows, users[m], start, latency[m], since=cut[m], gap=Detail.SERVER_CLOSE, detail=detail)
    # zombies go silent again (their rounds after the restart are in the zombie timeline)
    live_back = served[w.roles[users] != Role.ZOMBIE] + 0.01
    after = normal_rows(w, live, live_back, np.full(len(live), float(q1)), flap_dist)
    rows.blocks += after.blocks
    cols = rows.columns()
    return take(cols, (cols["ts"] >= q0) & (cols["ts"] < q1 + 30))


def fault_rows(w: World, rows: Rows) -> None:
    """Planted faults, as the backend's bugs show in the client's events: a few, away from the restart."""
    rng = w.rng
    q0, q1 = w.quiet
    span = w.t_stop - w.t_start

    def moments(n: int) -> np.ndarray:
        t = w.t_start + span * rng.uniform(0.15, 0.95, 4 * n)
        return np.sort(t[(t < q0 - 60) | (t > q1 + 60)][:n])

    def some(role, n):
        return rng.choice(w.of(role), n)

    if "duplicate-agent" in w.faults:
        t = w.storm.setdefault("duplicates", moments(3))
        u = some(Role.FLAPPING, len(t))
        rows.add(t - 0.06, u, Kind.DISCONNECT, code=BYE, reason=CloseReason.CLIENT, detail=Detail.FLAP_CLOSE, n=0)
        rows.add(t, u, Kind.WELCOME, detail=Detail.RESUMED_AGENT_CHANGED, n=1, agent=1)
    if "lost-pushes" in w.faults:
        t = moments(5)
        u = some(Role.CONVERSATION, len(t))
        rows.add(
            t - 0.3, u, Kind.DISCONNECT, code=ABNORMAL, reason=CloseReason.CLIENT, detail=Detail.PLANNED_GAP_BRIEF, n=0
        )
        rows.add(t, u, Kind.NOTIFY, ok=0, seq=77, detail=Detail.PUSH_MISSING, n=1)
    if "context-lost" in w.faults:
        t = moments(5)
        u = some(Role.CONVERSATION, len(t))
        gap = Detail.PLANNED_GAP_MEDIUM
        rows.add(t - 1.1, u, Kind.DISCONNECT, code=ABNORMAL, reason=CloseReason.CLIENT, detail=gap, n=0)
        rows.add(t, u, Kind.HISTORY_CHECK, ok=0, detail=Detail.TURN_MISSING, gap=gap, note="turn 2 missing", n=1)
    if "refresh-breaks" in w.faults:
        t = moments(5)
        u = some(Role.REFRESH, len(t))
        rows.add(t, u, Kind.REFRESH, ok=0, code="1011", detail=Detail.CLOSED_AFTER_REFRESH, n=1)


# -- tallies from rates -----------------------------------------------------------------------------------
def active(w: World, seconds: np.ndarray, role: str) -> np.ndarray:
    """Users of ``role`` running per second and worker (seconds x workers): spawned, load not yet stopped."""
    users = w.of(role)
    out = np.zeros((len(seconds), w.worker.max() + 1), dtype=np.int64)
    for wk in range(out.shape[1]):
        spawned = np.sort(w.spawned[users[w.worker[users] == wk]])
        out[:, wk] = np.searchsorted(spawned, seconds + 1.0, side="right")
    return out * (seconds + 1.0 <= w.t_stop)[:, None]


class Counts:
    """Tally rows held for one part: second, worker, key, bucket, count.

    Rows from rates are distinct per key already; rows of events modelled one by one are added up per second,
    worker, key and bucket (:meth:`add_events`). A key may still come twice in a second (from both), as in a
    real run, where readers add counts up.
    """

    DTYPES = (np.int64, np.int8, np.int16, np.int16, np.int32)  #: compact: an hour of a day is ~5 M rows

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, ...]] = []

    def add(self, sec, worker, key, bucket, count) -> None:
        columns = np.broadcast_arrays(sec, worker, key, bucket, count)
        self.parts.append(tuple(np.asarray(a, dtype=t) for a, t in zip(columns, self.DTYPES, strict=True)))

    def add_events(self, sec, worker, key, bucket) -> None:
        code = ((sec * 16 + worker) * 1024 + key) * (OVERFLOW + 2) + bucket + 1
        uniq, count = np.unique(code, return_counts=True)
        rest = uniq // (OVERFLOW + 2)
        self.add(rest // 1024 // 16, rest // 1024 % 16, rest % 1024, uniq % (OVERFLOW + 2) - 1, count)

    def rows(self) -> tuple[np.ndarray, ...]:
        """Every row, in time order (stable: each part is in time order already, so this merges runs)."""
        if not self.parts:
            return tuple(np.empty(0, dtype=t) for t in self.DTYPES)
        columns = [np.concatenate([p[i] for p in self.parts]) for i in range(5)]
        order = np.argsort(columns[0], kind="stable")
        return tuple(c[order] for c in columns)


def split_over_buckets(rng, total: np.ndarray, p: np.ndarray, bins: int = 2_000_000):
    """A multinomial draw per row (``total`` events over buckets of probabilities ``p``), as categorical draws
    counted per row: the same distribution as ``rng.multinomial``, faster for a thousand buckets.
    Returns (row, bucket index, count) of the non-zero cells."""
    cumulative = np.cumsum(p)
    k = len(p)
    per = max(1, bins // k)
    rows, buckets, counts = [np.empty(0, dtype=np.int64)], [np.empty(0, dtype=np.int64)], [np.empty(0, dtype=np.int64)]
    for lo in range(0, len(total), per):
        t = total[lo : lo + per]
        owner = np.repeat(np.arange(len(t)), t)
        b = np.minimum(np.searchsorted(cumulative, rng.random(len(owner)), side="right"), k - 1)
        cells = np.bincount(owner * k + b, minlength=len(t) * k)
        nz = np.flatnonzero(cells)
        rows.append(lo + nz // k)
        buckets.append(nz % k)
        counts.append(cells[nz])
    return np.concatenate(rows), np.concatenate(buckets), np.concatenate(counts)


def rate_counts(w: World, seconds: np.ndarray, specs: list[Cycle], counts: Counts) -> None:
    """Counts per second and worker from rates (Poisson), timed keys split over latency buckets (multinomial)."""
    rng = w.rng
    q0, q1 = w.quiet
    seconds = seconds[(seconds < q0) | (seconds >= q1)]
    if not len(seconds):
        return
    running = {role: active(w, seconds, role) for role in {c.role for c in specs}}
    for spec in specs:
        n = rng.poisson(spec.rate * running[spec.role])
        some = n > 0
        sec = np.broadcast_to(seconds[:, None], n.shape)[some]
        wk = np.broadcast_to(np.arange(n.shape[1])[None, :], n.shape)[some]
        n = n[some]
        for key, times in spec.steps:
            dist = KEYS[key].dist
            if dist is None:
                counts.add(sec, wk, key, -1, n * times)
                continue
            buckets, p = bucket_probs(dist)
            r, b, c = split_over_buckets(rng, n * times, p)
            counts.add(sec[r], wk[r], key, buckets[b], c)


def event_counts(w: World, cols: dict[str, np.ndarray], counts: Counts) -> None:
    """Routine events modelled one by one, counted as the tally counts them."""
    if not len(cols["ts"]):
        return
    user = cols["user"]
    keys = np.empty(len(user), dtype=np.int64)
    frame = pd.DataFrame({"role": w.roles[user], "kind": cols["kind"], "ok": cols["ok"], "detail": cols["detail"],
                          "reason": cols["reason"], "gap": cols["gap"]})  # fmt: skip
    for (role, kind, ok, detail, reason, gap), idx in frame.groupby(list(frame.columns), sort=True).indices.items():
        keys[idx] = key_id(role, TEXT.values[kind], ok, TEXT.values[detail], TEXT.values[reason], TEXT.values[gap])
    latency = cols["latency"]
    bucket = np.where(np.isnan(latency), -1, buckets_of(np.nan_to_num(latency)))
    counts.add_events(np.floor(cols["ts"]).astype(np.int64), w.worker[user].astype(np.int64), keys, bucket)


def exemplars(w: World, tallies: tuple[np.ndarray, ...], rows: Rows, generation) -> None:
    """Per worker, minute and timed key the slowest event, kept raw (``n`` 0) as the tally keeps it."""
    sec, wk, key, bucket, _ = tallies
    timed = np.flatnonzero(bucket >= 0)
    if not len(timed):
        return
    minute = (sec[timed] - math.floor(w.t_start)) // int(EXEMPLAR_S)
    group = (minute * 16 + wk[timed].astype(np.int64)) * 1024 + key[timed]
    slowest = timed[pd.Series(bucket[timed]).groupby(group, sort=True).idxmax().to_numpy()]
    sec, wk, key, bucket = sec[slowest], wk[slowest], key[slowest], bucket[slowest]
    rng = w.rng
    ts = sec + rng.uniform(0.0, 1.0, len(sec))
    latency = lower_edge(bucket) + rng.uniform(0.0, 1.0, len(sec)) * (upper_edge(bucket) - lower_edge(bucket))
    for k in np.unique(key):
        m = key == k
        spec = KEYS[k]
        user = np.empty(int(m.sum()), dtype=np.int64)
        for worker in np.unique(wk[m]):
            pool = np.flatnonzero((w.roles == spec.role) & (w.worker == worker))  # in spawn order
            at = wk[m] == worker
            running = np.maximum(np.searchsorted(w.spawned[pool], ts[m][at] - 1.0), 1)
            user[at] = pool[(rng.random(int(at.sum())) * running).astype(np.int64)]
        rows.add(ts[m], user, spec.kind, ok=spec.ok, latency=latency[m], detail=spec.detail, reason=spec.reason,
                 gap=spec.gap, n=0)  # fmt: skip


# -- writing ---------------------------------------------------------------------------------------------
def text_array(ids: np.ndarray, values) -> pa.Array:
    """A text column as a dictionary of its values: written as Parquet's dictionary-encoded text, read back as
    the schema's string (:meth:`Writer.write`)."""
    return pa.DictionaryArray.from_arrays(pa.array(ids, type=pa.int32()), pa.array(list(values), type=pa.string()))


def masked(values: np.ndarray, missing: np.ndarray, type_) -> pa.Array:
    return pa.array(values, type=type_, mask=missing)


class Writer:
    """The three tables, a Parquet part each per hour."""

    def __init__(self, out: Path, w: World, names: dict) -> None:
        self.out, self.w, self.names = out, w, names
        self.part = 0
        self.rows = {"events": 0, "tallies": 0, "activity": 0}
        for table in self.rows:
            (out / table).mkdir(parents=True, exist_ok=True)

    def write(self, table: str, schema: pa.Schema, arrays: list[pa.Array]) -> None:
        """One part of ``table``. Text goes in as dictionaries (no string per row is built) and the Arrow schema
        is not stored, so a reader sees the Parquet columns as harness/columnar.py writes them: ``schema``."""
        encoded = pa.schema(
            [pa.field(f.name, pa.dictionary(pa.int32(), f.type) if f.type == pa.string() else f.type) for f in schema]
        )
        t = pa.Table.from_arrays(arrays, schema=encoded)
        pq.write_table(t, self.out / table / PART.format(self.part), compression=COMPRESSION, store_schema=False)
        self.rows[table] += len(t)

    def tallies(self, tallies: tuple[np.ndarray, ...]) -> None:
        sec, wk, key, bucket, count = tallies
        ids = np.array([k.ids for k in KEYS] or np.empty((0, 5)), dtype=np.int32).reshape(-1, 5)[key]
        oks = np.array([k.ok for k in KEYS], dtype=np.int8)[key]
        self.write("tallies", TALLIES_SCHEMA, [
            pa.array(sec.astype(np.float64)), text_array(wk, self.names["workers"]),
            text_array(ids[:, 0], TEXT.values), text_array(ids[:, 1], TEXT.values), pa.array(oks),
            text_array(ids[:, 2], TEXT.values), text_array(ids[:, 3], TEXT.values), text_array(ids[:, 4], TEXT.values),
            pa.array(bucket.astype(np.int32)), pa.array(count, type=pa.int64()),
        ])  # fmt: skip

    def events(self, cols: dict[str, np.ndarray], generation) -> None:
        order = np.argsort(cols["ts"], kind="stable")
        c = take(cols, order)
        user = c["user"]
        w, names = self.w, self.names
        session = user.astype(np.int64) * 4096 + generation(user, c["ts"])
        sessions, sid = np.unique(session, return_inverse=True)
        agents = sessions * 2 + 0
        agent_of = np.where(c["agent"] == 1, len(sessions) + sid, sid)
        session_text = [names["session"](int(s)) for s in sessions]
        agent_text = [names["agent"](int(a)) for a in agents] + [names["agent"](int(a) + 1) for a in agents]
        self.write("events", EVENTS_SCHEMA, [
            pa.array(c["ts"]), text_array(w.worker[user], names["workers"]), text_array(user, names["users"]),
            text_array(np.searchsorted(names["roles"], w.roles[user]), names["roles"]),
            text_array(sid, session_text), text_array(c["kind"], TEXT.values), pa.array(c["ok"]),
            masked(c["latency"], np.isnan(c["latency"]), pa.float64()), text_array(agent_of, agent_text),
            masked(c["seq"], c["seq"] < 0, pa.int64()), text_array(c["code"], TEXT.values),
            text_array(c["reason"], TEXT.values), text_array(c["detail"], TEXT.values),
            masked(c["idle"], np.isnan(c["idle"]), pa.float64()), pa.nulls(len(user), pa.float64()),
            text_array(c["note"], TEXT.values), text_array(c["gap"], TEXT.values), pa.array(c["n"]),
        ])  # fmt: skip

    def activity(self, seconds: np.ndarray) -> None:
        roles = self.names["roles"]
        running = np.stack([active(self.w, seconds, r) for r in roles], axis=2)  # second x worker x role
        s, wk, r = np.nonzero(running)
        self.write("activity", ACTIVITY_SCHEMA, [
            pa.array(seconds[s].astype(np.float64)), text_array(wk, self.names["workers"]),
            text_array(r, roles), pa.array(running[s, wk, r].astype(np.int32)),
        ])  # fmt: skip


@dataclass
class Totals:
    """What the telemetry and meta.json need from the tables, gathered part by part."""

    per_second: dict = field(default_factory=dict)  #: second -> events counted or raw
    counted: np.ndarray = field(default_factory=lambda: np.zeros(16, dtype=np.int64))  #: per worker
    raw: np.ndarray = field(default_factory=lambda: np.zeros(16, dtype=np.int64))  #: raw rows n=1, per worker
    raw_rows: np.ndarray = field(default_factory=lambda: np.zeros(16, dtype=np.int64))  #: rows, per worker
    locust: list = field(default_factory=list)  #: raw rows as bench/gen_rundir.py's Locust exports read events

    def add(self, w: World, tallies, raw: dict[str, np.ndarray]) -> None:
        sec, wk, _, _, count = tallies
        np.add.at(self.counted, wk, count)
        np.add.at(self.raw, w.worker[raw["user"]], raw["n"].astype(np.int64))
        np.add.at(self.raw_rows, w.worker[raw["user"]], 1)
        s = np.concatenate([sec, np.floor(raw["ts"]).astype(np.int64)])
        n = np.concatenate([count, raw["n"].astype(np.int64)])
        uniq, inv = np.unique(s, return_inverse=True)
        for k, v in zip(uniq.tolist(), np.bincount(inv, weights=n).tolist(), strict=True):
            self.per_second[k] = self.per_second.get(k, 0) + v
        kind_map = np.array([gr.KIND.get(v, -1) for v in TEXT.values], dtype=np.int8)
        detail_map = np.array([gr.DETAIL.get(v, 0) for v in TEXT.values], dtype=np.int8)
        timed = np.isin(raw["kind"], [TEXT(k) for k in (Kind.CONNECT, Kind.HB_RTT, Kind.RECONNECT, Kind.REFRESH)])
        keep = (raw["n"] == 1) & (kind_map[raw["kind"]] >= 0) & ~(timed & np.isnan(raw["latency"]))
        self.locust.append({
            "ts": raw["ts"][keep], "kind": kind_map[raw["kind"][keep]], "detail": detail_map[raw["detail"][keep]],
            "session": np.zeros(int(keep.sum()), dtype=np.int32), "latency": raw["latency"][keep],
        })  # fmt: skip


def generate_tables(out: Path, w: World, names: dict, step) -> Totals:
    flap_dist = SLOW_RECONNECT if "slow-resume" in w.faults else RECONNECT
    specs = cycles(flap_dist)
    generation = renewals(w)
    window = window_rows(w, flap_dist)
    faults = Rows()
    fault_rows(w, faults)
    faults = faults.columns()
    step("model: timelines, restart window, faults")
    writer, totals = Writer(out, w, names), Totals()
    first, stop = math.floor(w.t_start), math.ceil(w.t_stop)
    for h0 in range(first, stop, 3600):
        h1 = min(h0 + 3600, stop)
        seconds = np.arange(h0, h1)
        counts = Counts()
        rate_counts(w, seconds, specs, counts)
        rows = Rows()
        spawn_rows(w, (w.spawned >= h0) & (w.spawned < h1), rows)
        zombie_rows(w, (w.zombie["close"] >= h0) & (w.zombie["close"] < h1), rows)
        extended_rows(w, (w.extended["disc"] >= h0) & (w.extended["disc"] < h1), rows)
        for cols in (window, faults):
            rows.blocks.append(take(cols, (cols["ts"] >= h0) & (cols["ts"] < h1)))
        counted, raw = w.route(rows.columns())
        event_counts(w, counted, counts)
        tallies = counts.rows()
        examples = Rows()
        exemplars(w, tallies, examples, generation)
        raw = joined(raw, examples.columns())
        writer.tallies(tallies)
        writer.events(raw, generation)
        writer.activity(seconds)
        totals.add(w, tallies, raw)
        writer.part += 1
    step(f"tables: {writer.part} parts")
    totals.rows = writer.rows
    return totals


# -- telemetry, Locust's exports, meta.json: bench/gen_rundir.py's writers ---------------------------------
def telemetry(out: Path, w: World, run: gr.Run, totals: Totals, pids: dict, leak: float, drain_from: float) -> dict:
    """samples.csv and server_stats.csv by gen_rundir's writers, then what they do not model: the backend's pid
    changing at the restart (no backend sample while it is down, its counters from 0 again), the master and
    each worker instead of one local process, and a planted duplicate in /stats."""
    rng, storm, ext = w.rng, w.storm, w.extended
    tl = gr.Timeline()
    zombie_back = w.zombie["close"] + w.zombie["backoff"] + w.zombie["latency"] / 1000
    tl.gaps = [(ext["disc"], ext["back"]), (storm["cut"], storm["served"]), (w.zombie["close"], zombie_back)]
    tl.detached = [(ext["disc"], ext["disc"] + gr.RESUME_WINDOW_S), (storm["cut"], storm["served"])]
    tl.reaped = [w.zombie["close"]]
    refreshers = len(w.of(Role.HEARTBEAT)) / TOKEN_TTL_S + len(w.of(Role.REFRESH)) / REFRESH_S
    tl.refreshed = [np.linspace(w.t_start, w.t_stop, int((w.t_stop - w.t_start) * refreshers))]
    tl.created = [w.spawned, ext["back"]]
    tl.destroyed = [ext["disc"] + gr.RESUME_WINDOW_S + rng.uniform(0, 1, len(ext["disc"]))]
    g = gr.gauges(run, tl, np.empty(0), w.t_start - 0.017, drain_from + gr.DRAIN_S)
    g.events = np.array([totals.per_second.get(int(math.floor(t)) - 1, 0) for t in g.ts], dtype=np.int64)
    old = g.ts < w.at
    rss = np.empty(len(g.ts), dtype=np.int64)
    for m, since in ((old, w.t_start), (~old, w.ready)):
        part = gr.Gauges(g.ts[m], g.connections[m], g.detached[m], g.events[m])
        rss[m] = gr.backend_rss(gr.Run(rng, since, w.t_stop, run.user_class, run.spawned), part, leak)
    pid = np.where(old, pids["backend"], pids["new_backend"])
    down = (g.ts >= w.at) & (g.ts < w.ready)

    samples = read_back(gr.write_samples, run, g, pids, rss)
    backend = (samples["source"] == "backend").to_numpy()  # one row per gauge sample, in order
    samples.loc[backend, "pid"] = pid
    gone = np.zeros(len(samples), dtype=bool)
    gone[np.flatnonzero(backend)] = down
    samples = samples[~gone]
    samples = harness_processes(samples, w, rng, pids)
    samples.to_csv(out / "samples.csv", index=False)

    stats = read_back(gr.write_server_stats, run, g, tl, pids, rss)
    stats["pid"] = pid
    new = ~old
    for c in [c for c in stats.columns if c.endswith("_total")]:
        stats.loc[new, c] -= int(stats.loc[old, c].iloc[-1]) if old.any() else 0
    stats.loc[new, "uptime_s"] = (g.ts[new] - w.ready).round(3)
    if "duplicate-agent" in w.faults:
        moments = storm["duplicates"]
        duplicates = gr.counted_by(g.ts, [moments])
        stats["duplicate_agents_total"] = duplicates - new * gr.counted_by(np.array([w.ready]), [moments])[0]
        near = np.zeros(len(g.ts), dtype=bool)
        for t in moments:
            near |= (g.ts >= t) & (g.ts < t + 5.0)
        stats.loc[near, "max_agents_per_session"] = 2
    stats = stats[~down]
    stats.to_csv(out / "server_stats.csv", index=False)
    return {"samples": len(samples), "server_stats": len(stats)}


def read_back(writer, *args) -> pd.DataFrame:
    """Adapter: one of gen_rundir's CSV writers into memory, read back as a frame to change what it does not model."""
    buffer = io.StringIO()
    writer(buffer, *args)
    buffer.seek(0)
    return pd.read_csv(buffer, dtype={"source": str, "error": str}, keep_default_na=False, na_values=[""])


def harness_processes(samples: pd.DataFrame, w: World, rng, pids: dict) -> pd.DataFrame:
    """gen_rundir's one ``local`` process becomes the master and one process per worker, each with its loop lag."""
    local = samples[samples["source"] == "local"]
    parts = [samples[samples["source"] != "local"]]
    for i, source in enumerate(["master", *(f"worker:{n}" for n in pids["workers"])]):
        p = local.copy()
        p["source"], p["pid"] = source, pids["local"] + i
        if source == "master":
            p["cpu_percent"] = (p["cpu_percent"] / 6).round(1)
        lag = np.minimum(rng.lognormal(np.log(3.0), 0.6, len(p)), 60.0).round(1)
        p["loop_lag_ms"] = lag
        p["loop_late_from"] = (p["ts"] - lag / 1000 - 0.01).round(3)
        p["loop_late_until"] = (p["ts"] - 0.01).round(3)
        parts.append(p)
    return pd.concat(parts).sort_values("ts", kind="stable")


def locust_exports(out: Path, run: gr.Run, totals: Totals) -> None:
    cols = {k: np.concatenate([p[k] for p in totals.locust]) for k in ("ts", "kind", "detail", "session", "latency")}
    gr.write_locust_exports(out, run, cols)
    (out / "backend.log").write_text("")
    (out / "locust_report.html").write_text("<!doctype html><title>synthetic run: no Locust report</title>\n")


def meta(out: Path, args, w: World, run: gr.Run, pids: dict, times: dict, totals: Totals, rows: dict) -> None:
    """gen_rundir's meta.json, then what format 3 and a distributed run with a restart add to it."""
    shim = argparse.Namespace(**vars(args), events=int(totals.counted.sum() + totals.raw.sum()), users=len(w.roles))
    gr.write_meta(out, shim, run, times, pids, rows)
    m = json.loads((out / "meta.json").read_text())
    workers = pids["workers"]
    restart = {"ts": w.at, "hard": False, "old_pid": pids["backend"], "new_pid": pids["new_backend"], "ok": True,
               "ready_ts": w.ready}  # fmt: skip
    received = totals.counted + totals.raw
    m.update(
        format=FORMAT,
        protocol={
            "name": "agentws",
            "spec": "agentws",
            "capabilities": ["heartbeat", "history", "push", "refresh", "resume", "stream"],
        },  # fmt: skip
        target="stub",
        runner="master",
        expect_workers=len(workers),
        machine={"cpus": 2},
        workers=list(workers),
        generated_by="bench/gen_soak.py",
        generator={
            "hours": args.hours,
            "seed": args.seed,
            "leak_mib_per_hour": args.leak_mib_per_hour,
            "faults": list(args.fault),
            "workers": args.workers,
            "users_scale": args.users_scale,
        },  # fmt: skip
    )
    m["backend"].update(pids=[pids["backend"], pids["new_backend"]], restarts=[restart], faults=list(args.fault),
                        retention=None, reconfigured=[])  # fmt: skip
    m["backend_notes"] = [
        {"ts": w.at + 0.3, "event": "backend gone", "pid": pids["backend"]},
        {"ts": w.ready + 0.2, "event": "backend up", "pid": pids["new_backend"]},
    ]
    m["recording"] = {
        "enabled": True,
        "events_received": int(received.sum()),
        "events_counted": int(totals.counted.sum()),
        "raw_rows": int(totals.raw_rows.sum()),
        "events_undelivered": 0,
        "per_worker": {
            name: {
                "received": int(received[i]),
                "counted": int(totals.counted[i]),
                "raw_rows": int(totals.raw_rows[i]),
                "emitted": int(received[i]),
                "undelivered": 0,
                "pid": pids["local"] + 1 + i,
                "last_batch_utc": times["drain_from"] - 0.2,
            }  # fmt: skip
            for i, name in enumerate(workers)
        },
        "workers_not_flushed": [],
        "workers_lost": [],
    }
    m["options"].update(record_interval=1.0, protocol="agentws", expect_workers=len(workers), master=True,
                        stub_restart_at=round(w.at - w.t_start, 3), stub_fault=list(args.fault),
                        num_users=len(w.roles), spawn_rate=SPAWN_RATE)  # fmt: skip
    m["spawn_rate"] = SPAWN_RATE
    (out / "meta.json").write_text(json.dumps(m, indent=2) + "\n")


# -- main ----------------------------------------------------------------------------------------------
#: --fault NAME: what it plants, and the verdict that must fail on it.
FAULTS = {
    "duplicate-agent": ("3 resumes with another agent (welcome resumed:agent_changed) and /stats duplicates",
                        "duplicate-agent"),
    "lost-pushes": ("5 pushes missing after a resume (notify ok=0)", "delivery"),
    "slow-resume": ("3 % of the flapping users' resumes take 1.5-3 s", "reconnect-latency"),
    "context-lost": ("5 history checks after a medium gap find a turn missing", "context"),
    "no-reap": ("zombies reaped after ~90 s instead of the 22.5 s idle timeout", "zombie"),
    "refresh-breaks": ("5 refreshes followed by a close (1011)", "refresh"),
    "forget-on-restart": ("a fifth of the sessions come back new after the restart (welcome new:none)", "restart"),
}  # fmt: skip


def generate(out: Path, args) -> dict:
    steps, clock = {}, time.perf_counter()

    def step(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        steps[name], clock = now - clock, now

    w = plan(args)
    extended_gaps(w)
    restart_storm(w)
    zombie_rounds(w)
    rng = w.rng
    pids = {"backend": int(rng.integers(2000, 60000)), "port": int(rng.integers(32768, 61000))}
    pids |= {"local": pids["backend"] - 10, "epoch": gr.hex_ids(rng, 1, 8)[0], "backend_started": args.start + 0.2}
    pids |= {"new_backend": pids["backend"] + 97, "workers": [f"w{i + 1}" for i in range(args.workers)]}
    tag = gr.hex_ids(rng, args.workers, 6)
    salt = int(rng.integers(1, 1 << 62))
    roles = sorted(CLASS_OF)
    names = {
        "workers": pids["workers"],
        "roles": np.array([str(r) for r in roles], dtype=object),
        "users": [
            user_id(CLASS_OF[r], tag[wk], i + 1) for i, (r, wk) in enumerate(zip(w.roles, w.worker, strict=True))
        ],
        "session": lambda s: f"{pids['epoch']}.{(s * 0x9E3779B97F4A7C15 + salt) % (1 << 64):016x}",
        "agent": lambda a: f"a-{(a * 0xC2B2AE3D27D4EB4F + salt) % (1 << 48):012x}",
    }
    step("plan")
    totals = generate_tables(out, w, names, step)
    class_index = np.array([gr.CLASSES.index(CLASS_OF[r]) for r in w.roles], dtype=np.int8)
    run = gr.Run(rng, w.t_start, w.t_stop, class_index, w.spawned)
    drain_from = w.t_stop + 0.3
    times = {"start": args.start, "drain_from": drain_from, "end": drain_from + gr.DRAIN_S + 0.4}
    rows = dict(totals.rows)
    rows |= telemetry(out, w, run, totals, pids, args.leak_mib_per_hour, drain_from)
    step("samples.csv + server_stats.csv")
    locust_exports(out, run, totals)
    step("locust exports")
    meta(out, args, w, run, pids, times, totals, rows)
    steps["events counted"] = int(totals.counted.sum())
    steps["raw rows (n=1)"] = int(totals.raw.sum())
    return steps


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="the run directory to write (created; must not exist or be empty)")
    ap.add_argument("--hours", type=float, default=24.0, help="length of the load phase")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--leak-mib-per-hour", type=float, default=0.0, help="backend RSS growth under load")
    ap.add_argument(
        "--fault",
        action="append",
        default=[],
        choices=sorted(FAULTS),
        # argparse formats help with %: a fault's text with a % in it is escaped
        help="plant a fault (repeatable): "
        + "; ".join(f"{k}: {v[0]} ({v[1]})" for k, v in FAULTS.items()).replace("%", "%%"),
    )
    ap.add_argument("--workers", type=int, default=4, help="Locust workers the users are spread over")
    ap.add_argument("--users-scale", type=float, default=1.0, help="scale every role's user count")
    ap.add_argument("--start", type=gr.parse_start, default=gr.parse_start("2026-11-20T06:00:00Z"),
                    help="start_utc (ISO 8601)")  # fmt: skip
    args = ap.parse_args(argv)
    if not 1 <= args.workers <= 15:
        ap.error("--workers: 1 to 15")
    out = gr.fresh_dir(ap, args.out)
    began = time.perf_counter()
    steps = generate(out, args)
    print(f"{out}: {args.hours:g} h, seed {args.seed}, faults {', '.join(args.fault) or 'none'}")
    gr.print_steps(out, steps, began)


if __name__ == "__main__":
    main()
