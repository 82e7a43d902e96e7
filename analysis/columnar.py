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


def batches(directory: Path, columns: list[str] | None, problems: list[str]) -> Iterator[pa.RecordBatch]:
    """Every record batch of the table (only ``columns``, if given); what cannot be read is named in ``problems``."""
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
        yield from _segment(piece, columns, problems)


def _segment(piece: Path, columns: list[str] | None, problems: list[str]) -> Iterator[pa.RecordBatch]:
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
            problems.append(f"{piece.name} ends in a batch cut short (the run was cut off): read up to it")
            return
        yield batch.select(columns) if columns is not None else batch


def frame(directory: Path, columns: tuple[str, ...], problems: list[str]) -> pd.DataFrame:
    """The whole table as one frame with ``columns`` (a small table: the raw events, the activity)."""
    parts = [_to_pandas(b) for b in batches(directory, list(columns), problems)]
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype="category" if c in TEXT else "float64") for c in columns})
    return pd.concat(parts, ignore_index=True)


def _to_pandas(batch: pa.RecordBatch) -> pd.DataFrame:
    out = batch.to_pandas()
    for c in out.columns:
        if c in TEXT and not isinstance(out[c].dtype, pd.CategoricalDtype):
            out[c] = out[c].astype("category")
    return out


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[-1][:200] if text else type(e).__name__
