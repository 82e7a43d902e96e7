"""``python -m analysis.export RUN_DIR [--out DIR]``: a run directory's tables as CSV files.

Writes ``events.csv`` (the raw rows: every failure and piece of evidence, with
``gap`` and ``n``), ``tallies.csv`` (routine outcomes counted per interval, worker,
key and latency bucket; contract/histogram.py reads a bucket back) and
``activity.csv`` (users running per interval and role) into DIR (default: the run
directory itself). Each file is written under a temporary name and renamed: a
reader never sees half a file. Streams: memory does not grow with the run.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from contract.events import ACTIVITY_COLUMNS, STORED_EVENT_COLUMNS, TALLY_COLUMNS

from . import columnar

TABLES = {"events": STORED_EVENT_COLUMNS, "tallies": TALLY_COLUMNS, "activity": ACTIVITY_COLUMNS}


def table(run_dir: Path, name: str) -> pd.DataFrame:
    """A whole table as a frame (for a notebook or a test; the analysis reads the tallies in bins instead)."""
    problems: list[str] = []
    frame = columnar.frame(Path(run_dir) / name, TABLES[name], problems)
    if problems:
        raise ValueError(f"{run_dir}/{name}: " + "; ".join(problems))
    return frame


def to_csv(run_dir: Path, out: Path) -> dict[str, int]:
    """Each table of ``run_dir`` as ``out/<table>.csv``; returns the rows written per table."""
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, columns in TABLES.items():
        problems: list[str] = []
        target, tmp = out / f"{name}.csv", out / f".{name}.csv.tmp"
        rows = 0
        with open(tmp, "wb") as sink:
            writer = None
            for batch in columnar.batches(Path(run_dir) / name, list(columns), problems):
                batch = pa.RecordBatch.from_arrays(
                    [c.dictionary_decode() if pa.types.is_dictionary(c.type) else c for c in batch.columns],
                    names=batch.schema.names,
                )
                if writer is None:
                    writer = pacsv.CSVWriter(sink, batch.schema)
                writer.write_batch(batch)
                rows += batch.num_rows
            if writer is None:
                sink.write((",".join(columns) + "\n").encode())
            else:
                writer.close()
        os.replace(tmp, target)
        for p in problems:
            print(f"{name}: {p}", file=sys.stderr)
        written[name] = rows
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.export", description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", metavar="RUN_DIR")
    ap.add_argument("--out", metavar="DIR", help="where to write the CSV files (default: RUN_DIR)")
    args = ap.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not (run_dir / "events").is_dir():
        print(f"{run_dir}: no events table (not a run directory of format 3?)", file=sys.stderr)
        return 2
    for name, rows in to_csv(run_dir, Path(args.out) if args.out else run_dir).items():
        print(f"{name}.csv: {rows:,} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
