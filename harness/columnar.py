"""A table written as the run goes: Arrow IPC segments each second, Parquet parts every few minutes.

Layout of one table, e.g. ``events/`` in the run directory::

    events/part-00000.parquet    closed parts (zstd Parquet), in order
    events/part-00001.parquet
    events/live-00002.arrows     the part being written: an Arrow IPC stream, one record batch per flush

Rows are held in memory only until the next :meth:`ChunkedTable.flush` (every
:data:`FLUSH_INTERVAL_S`): a flush appends them to the live segment as one record
batch and hands it to the OS, so a hard crash loses at most the last second. Every
:data:`ROLL_S` (and at :meth:`~ChunkedTable.close`) the live segment is rewritten as
a Parquet part, written under a temporary name and renamed, and removed: a reader
sees a part whole or not at all, and a segment left by a crash is read batch by
batch up to its last whole batch (analysis/columnar.py).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import gevent
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0  #: rows reach the OS at least this often
ROLL_S = 600.0  #: a live segment becomes a Parquet part after this long
PART = "part-{:05d}.parquet"
LIVE = "live-{:05d}.arrows"
COMPRESSION = "zstd"

# pyarrow's first array costs a third of a second (its lazy start-up): paid at import, before any user runs,
# not in the first flush under load, where it would stall the event loop (and read as the generator's lateness).
pa.array([0.0])


class ChunkedTable:
    """An append-only table in ``directory`` with a fixed ``schema``; rows are tuples in the schema's order."""

    def __init__(self, directory: Path, schema: pa.Schema, roll_s: float = ROLL_S) -> None:
        self.path = Path(directory)
        self.path.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        self.roll_s = roll_s
        self.rows = 0
        self.parts = 0
        self._pending: list[tuple] = []
        self._writer: ipc.RecordBatchStreamWriter | None = None
        self._sink = None
        self._segment = 0
        self._opened_at = 0.0
        self._closed = False
        self._flusher = gevent.spawn(self._flush_loop)

    # -- writing ------------------------------------------------------------------------
    def write(self, row) -> None:
        self._pending.append(row)
        self.rows += 1

    def write_many(self, rows: list) -> None:
        self._pending.extend(rows)
        self.rows += len(rows)

    def flush(self) -> None:
        """Append what is pending to the live segment as one record batch, and hand it to the OS."""
        if self._closed or not self._pending:
            return
        rows, self._pending = self._pending, []
        columns = zip(*rows, strict=True)  # rows -> columns: every row has every field
        batch = pa.RecordBatch.from_arrays(
            [pa.array(column, type=field.type) for column, field in zip(columns, self.schema, strict=True)],
            schema=self.schema,
        )
        if self._writer is None:
            self._open_segment()
        self._writer.write_batch(batch)
        self._sink.flush()
        if time.monotonic() - self._opened_at >= self.roll_s:
            self._roll()

    def _open_segment(self) -> None:
        self._sink = open(self.path / LIVE.format(self._segment), "wb")
        self._writer = ipc.new_stream(self._sink, self.schema)
        self._opened_at = time.monotonic()

    def _roll(self) -> None:
        """The live segment becomes the next Parquet part (written beside it, renamed, then the segment goes)."""
        if self._writer is None:
            return
        self._writer.close()
        self._sink.close()
        self._writer = self._sink = None
        live = self.path / LIVE.format(self._segment)
        part = self.path / PART.format(self._segment)
        self._segment += 1
        try:
            # pyarrow lets go of the GIL: in gevent's thread pool the master's loop goes on meanwhile
            gevent.get_hub().threadpool.apply(_to_parquet, (live, part))
            self.parts += 1
        except Exception:  # the segment stays: the analysis reads it as it is
            logger.exception("could not turn %s into a Parquet part; it is kept as it is", live)

    def _flush_loop(self) -> None:
        while not self._closed:
            gevent.sleep(FLUSH_INTERVAL_S)
            try:
                self.flush()
            except Exception:
                logger.exception("could not write %d rows to %s", len(self._pending), self.path)

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._roll()
        self._closed = True
        self._flusher.kill(block=False)


def _to_parquet(live: Path, part: Path) -> None:
    with pa.OSFile(str(live), "rb") as source:
        table = ipc.open_stream(source).read_all()
    tmp = part.with_name(f".{part.name}.tmp")
    pq.write_table(table, tmp, compression=COMPRESSION)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, part)
    live.unlink()


def schema(columns: tuple[str, ...], types: dict[str, pa.DataType]) -> pa.Schema:
    """A schema of ``columns`` in order, each of ``types``' type (text when not named)."""
    return pa.schema([pa.field(c, types.get(c, pa.string())) for c in columns])
