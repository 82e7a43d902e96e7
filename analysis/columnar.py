"""Reading the run directory's chunked tables (harness/columnar.py), batch by batch, whatever a crash left.

A table is a folder of closed Parquet parts and, after a crash, the live Arrow
IPC segment the run was writing: parts are read whole, a segment up to its last
whole record batch. Nothing is read all at once: :func:`batches` yields record
batches, so a caller reduces them as they come (the tallies) or keeps them (the
raw events, a few rows a second).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

#: Text columns read as dictionaries (pandas categories): few distinct values, many rows.
TEXT = ("worker", "user", "role", "session", "kind", "agent", "code", "reason", "detail", "note", "gap")
_PIECE = re.compile(r"(part|live)-(\d+)\.(parquet|arrows)$")


def exists(directory: Path) -> bool:
    """Is there a table in ``directory`` (a folder with at least one part or segment)?"""
    return directory.is_dir() and any(_PIECE.match(p.name) for p in directory.iterdir())


def pieces(directory: Path) -> list[Path]:
    """The table's parts and live segments, in the order they were written."""
    found = [(int(m.group(2)), p) for p in directory.iterdir() if (m := _PIECE.match(p.name))]
    return [p for _, p in sorted(found)]


def last_write(directory: Path) -> float | None:
    """When the table was last written to (its newest piece's modification time), None without a table."""
    times = [p.stat().st_mtime for p in pieces(directory)] if directory.is_dir() else []
    return max(times, default=None)


def batches(
    directory: Path, columns: list[str] | None, problems: list[str], in_progress: bool = False
) -> Iterator[pa.RecordBatch]:
    """Every record batch of the table (only ``columns``, if given); what cannot be read is named in ``problems``.
    ``in_progress``: the run is still writing its live segment, so a last batch cut short is no crash."""
    if not directory.is_dir():
        return
    for piece in pieces(directory):
        if piece.suffix == ".parquet":
            try:
                file = pq.ParquetFile(piece, read_dictionary=[c for c in TEXT if columns is None or c in columns])
                yield from file.iter_batches(batch_size=1 << 18, columns=columns)
            except (OSError, pa.ArrowException) as e:
                problems.append(f"{piece.name} cannot be read ({_short(e)}): its rows are missing")
            continue
        yield from _segment(piece, columns, problems, in_progress)


def _segment(
    piece: Path, columns: list[str] | None, problems: list[str], in_progress: bool
) -> Iterator[pa.RecordBatch]:
    """A live segment: its batches up to the last whole one (a crash cuts the one being written)."""
    try:
        reader = ipc.open_stream(pa.OSFile(str(piece), "rb"))
    except (OSError, pa.ArrowException) as e:
        if piece.stat().st_size:
            problems.append(f"{piece.name} cannot be read ({_short(e)}): its rows are missing")
        return
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except (OSError, pa.ArrowException):
            if not in_progress:
                problems.append(f"{piece.name} ends in a batch cut short (the run was cut off): read up to it")
            return
        yield batch.select(columns) if columns is not None else batch


def frame(directory: Path, columns: tuple[str, ...], problems: list[str], in_progress: bool = False) -> pd.DataFrame:
    """The whole table as one frame with ``columns`` (a small table: the raw events, the activity), its text
    columns pandas categories straight from Arrow dictionaries: no Python string per row."""
    parts = [_encoded(b) for b in batches(directory, list(columns), problems, in_progress)]
    parts = [b for b in parts if b.num_rows]
    if not parts:
        return pd.DataFrame({c: _empty(c) for c in columns})
    table = pa.Table.from_batches(parts).unify_dictionaries()
    out = table.to_pandas()
    for c in out.columns:
        if c in TEXT and isinstance(out[c].dtype, pd.CategoricalDtype):
            out[c] = out[c].cat.set_categories(pd.Index(out[c].cat.categories, dtype=str))
    return out


def _encoded(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Text columns as dictionaries (a live segment's are plain strings; a Parquet part's already are)."""
    arrays = [
        a.dictionary_encode() if name in TEXT and not pa.types.is_dictionary(a.type) else a
        for name, a in zip(batch.schema.names, batch.columns, strict=True)
    ]
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _empty(column: str) -> pd.Series:
    if column in TEXT:
        return pd.Series(pd.Categorical([], categories=pd.Index([], dtype=str)))
    return pd.Series(dtype="float64")


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[-1][:200] if text else type(e).__name__
