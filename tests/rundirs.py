"""Editing a recorded run directory's tables, to make bad or altered input from a real run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from analysis.export import table
from harness.recorder import ACTIVITY_SCHEMA, EVENTS_SCHEMA, TALLIES_SCHEMA

SCHEMAS = {"events": EVENTS_SCHEMA, "tallies": TALLIES_SCHEMA, "activity": ACTIVITY_SCHEMA}


def read(run_dir: Path, name: str = "events") -> pd.DataFrame:
    """A table with text columns as plain strings."""
    frame = table(run_dir, name)
    return frame.astype({c: str for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)})


def _arrow(name: str, frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame[list(SCHEMAS[name].names)], schema=SCHEMAS[name], preserve_index=False)


def rewrite(run_dir: Path, name: str, frame: pd.DataFrame) -> None:
    """Replace a table with ``frame`` (one Parquet part)."""
    directory = run_dir / name
    shutil.rmtree(directory)
    directory.mkdir()
    pq.write_table(_arrow(name, frame), directory / "part-00000.parquet")


def crash(run_dir: Path, name: str = "events", cut: int = 37) -> None:
    """As a hard crash leaves a table: its rows in a live segment of two batches, the last one cut short."""
    frame = read(run_dir, name)
    directory = run_dir / name
    shutil.rmtree(directory)
    directory.mkdir()
    live = directory / "live-00000.arrows"
    with pa.OSFile(str(live), "wb") as sink, ipc.new_stream(sink, SCHEMAS[name]) as writer:
        half = len(frame) // 2
        for part in (frame.iloc[:half], frame.iloc[half:]):
            writer.write_table(_arrow(name, part))
    data = live.read_bytes()
    live.write_bytes(data[: len(data) - cut])
