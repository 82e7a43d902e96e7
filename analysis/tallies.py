"""The tallies of a run of any length as rows of counted events, in bounded memory and time.

A day of 10,000 users is about a hundred million tally rows (every second, worker,
key and latency bucket). The verdicts need them second by second only where they
look closely: around a backend restart and where a Locust process was late. So
:func:`bins_for` lays at most :data:`MAX_BINS` bins over the run, keeps each
interval (and its worker) on its own inside those *fine* windows, and
:func:`counted_events` reduces the table into them batch by batch.

Each batch is reduced on one integer per row: its bin, worker, key and bucket
packed into 63 bits (:class:`_Codes`), summed with ``pd.factorize`` (a hash)
and ``np.bincount``. The text of the keys is looked up once per batch in the Parquet
dictionaries, never per row. What is held is bounded by the bins times the
distinct keys and buckets, whatever the number of rows read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from contract.events import TALLY_COLUMNS, CloseReason, Kind
from contract.histogram import midpoint

from . import columnar

#: A long run's tallies are read in at most this many bins (a day: 5-minute bins, as fine as the report's
#: charts draw), except where the verdicts look second by second: memory bounded whatever the length.
MAX_BINS = 288
#: Around a restart or a late stretch the tallies keep their own interval (and worker) this far on either side.
FINE_MARGIN_S = 30.0
#: A Locust process this late (or later) has its tallies kept fine around it (below any sane lateness threshold).
FINE_LAG_MS = 100.0
#: Reduced rows held before they are reduced together again.
_REDUCE_AT = 4_000_000
#: The text columns of a tally, as packed: the worker, then the key.
_TEXT = ("worker", "role", "kind", "detail", "reason", "gap")


class Binning:
    """Which bin a tally interval goes in: ``step`` seconds from ``t0``, or its own inside ``fine`` windows."""

    def __init__(self, t0: float, step: float, fine: np.ndarray, interval: float = 1.0) -> None:
        self.t0, self.step, self.fine = t0, step, fine  #: fine: (k, 2) sorted, merged [start, end] windows
        self.interval = interval  #: the tallies' own interval (``--record-interval``)

    def inside(self, ts: np.ndarray) -> np.ndarray:
        """Which of ``ts`` fall in a fine window."""
        if not len(self.fine):
            return np.zeros(len(ts), dtype=bool)
        i = np.searchsorted(self.fine[:, 0], ts, side="right") - 1
        return (i >= 0) & (ts <= self.fine[np.maximum(i, 0), 1])

    def of(self, interval: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(bin start, bin length) of each interval start: its own inside a fine window, else its step's."""
        coarse = self.t0 + np.floor((interval - self.t0) / self.step) * self.step
        fine = self.inside(interval)
        return np.where(fine, interval, coarse), np.where(fine, self.interval, self.step)


def bins_for(meta: dict, samples: pd.DataFrame, raw: pd.DataFrame, last_write: float | None = None) -> Binning:
    """Bins for the run's length (at most :data:`MAX_BINS`), fine around restarts and late stretches.

    The run spans its first test start to its last stop and drain; a run cut off (or still going) ends at
    ``last_write``, when its tables were last written. Without a test start, a run has no length to bin by:
    every interval is its own bin."""
    interval = float((meta.get("options") or {}).get("record_interval") or 1.0)
    starts = meta.get("test_starts_utc") or []
    stops = meta.get("test_stops_utc") or []
    drain = float((meta.get("drain") or {}).get("seconds") or 0)
    t0 = float(min(starts)) if starts else float("nan")
    end = float(max(stops)) + drain if stops and max(stops) >= t0 else (last_write or float("nan"))
    length = end - t0 if np.isfinite(end - t0) else 0.0
    t0 = t0 if np.isfinite(t0) else 0.0
    step = max(interval, float(np.ceil(max(length, 0.0) / MAX_BINS / interval)) * interval)
    windows = [
        (float(r["ts"]), float(r.get("ready_ts") or r["ts"]))
        for r in (meta.get("backend") or {}).get("restarts") or []
        if "ts" in r
    ]
    closes = raw.loc[(raw["kind"] == Kind.CLOSE) & (raw["reason"] == CloseReason.RESTARTING), "ts"]
    windows += [(t, t) for t in closes.to_numpy(dtype=float)]
    if "loop_lag_ms" in samples:
        late = samples[samples["loop_lag_ms"] >= FINE_LAG_MS]
        since = late["loop_late_from"].fillna(late["ts"] - late["loop_lag_ms"] / 1000.0 - 1.0)
        windows += list(zip(since.to_numpy(dtype=float), late["ts"].to_numpy(dtype=float), strict=True))
    return Binning(t0, step, _merged(windows, FINE_MARGIN_S + step), interval)


def _merged(windows: list[tuple[float, float]], margin: float) -> np.ndarray:
    if not windows:
        return np.empty((0, 2))
    w = np.array(sorted((a - margin, b + margin) for a, b in windows))
    merged = [w[0]]
    for a, b in w[1:]:
        if a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return np.array(merged, dtype=float)


class _Codes:
    """Texts as small integers (one table per column, shared by every batch), and a row packed in 63 bits:

    fine (1) | bin (26) | worker (10) | key (12) | bucket + 1 (14)

    ``bin`` counts intervals from ``t0`` (2**26 s: two years); a key is a (role, kind, ok, detail, reason,
    gap) seen in the run (4,096 of them at most); buckets are contract/histogram.py's (below 2**14).
    """

    BUCKET, KEY, WORKER, BIN = 14, 12, 10, 26

    def __init__(self) -> None:
        self.text: dict[str, dict[str, int]] = {c: {"": 0} for c in _TEXT}
        self.keys: dict[tuple, int] = {}

    def column(self, name: str, array: pa.Array) -> np.ndarray:
        """The codes of a text column (a Parquet dictionary, or plain strings from a live segment)."""
        if not pa.types.is_dictionary(array.type):
            array = array.dictionary_encode()
        table = self.text[name]
        lut = np.array([table.setdefault(s, len(table)) for s in array.dictionary.to_pylist()], dtype=np.int64)
        return lut[array.indices.to_numpy(zero_copy_only=False)] if len(lut) else np.zeros(len(array), np.int64)

    def key_ids(self, parts: list[np.ndarray]) -> np.ndarray:
        """One id per distinct (role, kind, ok, detail, reason, gap) of the batch: its codes combined into one
        integer first (mixed radix), so finding the distinct ones is a sort of one column."""
        radix = [int(p.max(initial=0)) + 1 for p in parts]
        combined = np.zeros(len(parts[0]), dtype=np.int64)
        for part, r in zip(parts, radix, strict=True):
            combined = combined * r + part
        inverse, unique = pd.factorize(combined)  # a hash, not a sort: the distinct keys are few
        fields = []
        rest = unique
        for r in reversed(radix):
            fields.append(rest % r)
            rest = rest // r
        rows = np.stack(fields[::-1], axis=1).tolist() if len(unique) else []
        ids = np.array([self.keys.setdefault(tuple(row), len(self.keys)) for row in rows], dtype=np.int64)
        if len(self.keys) >= 1 << self.KEY:
            raise ValueError(f"more than {1 << self.KEY} distinct tally keys: not a tally table this analysis reads")
        return ids[inverse]

    def pack(self, fine, bin_index, worker, key, bucket) -> np.ndarray:
        if worker.max(initial=0) >= 1 << self.WORKER:
            raise ValueError(f"more than {1 << self.WORKER} workers: not a tally table this analysis reads")
        packed = fine.astype(np.int64) << self.BIN
        packed = (packed | bin_index) << self.WORKER
        packed = (packed | worker) << self.KEY
        return ((packed | key) << self.BUCKET) | (bucket + 1)

    def unpack(self, packed: np.ndarray) -> dict[str, np.ndarray]:
        def field(shift: int, bits: int) -> np.ndarray:
            return (packed >> shift) & ((1 << bits) - 1)

        at = self.BUCKET
        out = {"bucket": field(0, self.BUCKET) - 1, "key": field(at, self.KEY)}
        at += self.KEY
        out["worker"] = field(at, self.WORKER)
        at += self.WORKER
        out["bin"] = field(at, self.BIN)
        out["fine"] = field(at + self.BIN, 1).astype(bool)
        return out

    def categories(self, name: str) -> list[str]:
        table = self.text[name]
        return sorted(table, key=table.__getitem__)


def counted_events(
    directory: Path, binning: Binning, frame_columns: tuple[str, ...], problems: list[str], in_progress: bool = False
):
    """The tallies as event rows: one per bin, key and latency bucket (and worker, in fine windows), its ``n``
    the events counted, its ``span_s`` the bin's length, its ``latency_ms`` its bucket's midpoint."""
    codes = _Codes()
    held: list[tuple[np.ndarray, np.ndarray]] = []
    size = 0
    for batch in columnar.batches(directory, list(TALLY_COLUMNS), problems, in_progress):
        held.append(_reduce_batch(batch, binning, codes))
        size += len(held[-1][0])
        if size > _REDUCE_AT:
            held = [_sum(*map(np.concatenate, zip(*held, strict=True)))]
            size = len(held[0][0])
    if not held:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in frame_columns})
    packed, n = _sum(*map(np.concatenate, zip(*held, strict=True)))
    return _as_events(codes.unpack(packed), n, codes, binning, frame_columns)


def _reduce_batch(batch: pa.RecordBatch, binning: Binning, codes: _Codes) -> tuple[np.ndarray, np.ndarray]:
    column = dict(zip(batch.schema.names, batch.columns, strict=True))
    interval = column["interval"].to_numpy(zero_copy_only=False)
    fine = binning.inside(interval)
    # a fine row's interval is its bin (on the interval grid); a coarse row falls in its step's
    since = (interval - binning.t0) / np.where(fine, binning.interval, binning.step)
    bin_index = np.where(fine, np.rint(since), np.floor(since)).astype(np.int64)
    worker = np.where(fine, codes.column("worker", column["worker"]), 0)  # a coarse bin adds the workers up
    text = {c: codes.column(c, column[c]) for c in ("role", "kind", "detail", "reason", "gap")}
    ok = column["ok"].to_numpy(zero_copy_only=False).astype(np.int64)
    key = codes.key_ids([text["role"], text["kind"], ok, text["detail"], text["reason"], text["gap"]])
    bucket = column["bucket"].to_numpy(zero_copy_only=False).astype(np.int64)
    packed = codes.pack(fine, np.clip(bin_index, 0, (1 << codes.BIN) - 1), worker, key, bucket)
    return _sum(packed, column["count"].to_numpy(zero_copy_only=False).astype(np.int64))


def _sum(packed: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The counts of equal packed rows added up (a hash of the one column: faster than sorting it)."""
    inverse, unique = pd.factorize(packed)
    return np.asarray(unique), np.bincount(inverse, weights=n, minlength=len(unique)).astype(np.int64)


def _as_events(fields: dict, n: np.ndarray, codes: _Codes, binning: Binning, columns: tuple[str, ...]):
    fine = fields["fine"]
    span = np.where(fine, binning.interval, binning.step)
    keys = np.array(sorted(codes.keys, key=codes.keys.__getitem__), dtype=np.int64).reshape(-1, 6)[fields["key"]]
    role, kind, ok, detail, reason, gap = keys.T

    def text(name: str, values: np.ndarray) -> pd.Categorical:
        return pd.Categorical.from_codes(values, categories=pd.Index(codes.categories(name), dtype=str))

    bucket = fields["bucket"]
    empty = pd.Categorical.from_codes(np.zeros(len(n), dtype=np.int64), categories=pd.Index([""], dtype=str))
    frame = {
        "ts": binning.t0 + fields["bin"] * span,
        "worker": text("worker", fields["worker"]),
        "user": empty,
        "role": text("role", role),
        "session": empty,
        "kind": text("kind", kind),
        "ok": ok.astype("int8"),
        "latency_ms": np.where(bucket >= 0, midpoint(np.maximum(bucket, 0)), np.nan),
        "agent": empty,
        "seq": np.nan,
        "code": empty,
        "reason": text("reason", reason),
        "detail": text("detail", detail),
        "idle_timeout_ms": np.nan,
        "retry_after_ms": np.nan,
        "note": empty,
        "gap": text("gap", gap),
        "n": n,
        "span_s": span,
    }
    return pd.DataFrame({c: frame[c] for c in columns})
