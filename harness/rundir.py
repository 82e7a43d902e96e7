"""The run directory: ``<root>/<run-id>/``, its ``meta.json`` and the ``latest`` link.

``meta.json`` is always whole on disk: every write goes to a temporary file that
is renamed over the old one, and it says ``"complete": false`` until the run
has closed it, so a reader can tell a finished run from one that was cut short.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path

import gevent

FLUSH_INTERVAL_S = 0.5  #: CSV sinks reach the OS at least this often: a crash loses at most this much


def utc(ts: float | None = None) -> str:
    """ISO 8601 UTC with milliseconds, e.g. ``2025-01-31T12:00:00.123Z``."""
    moment = datetime.fromtimestamp(time.time() if ts is None else ts, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


class RunDir:
    """One run's directory. ``meta`` is the dict behind ``meta.json``; :meth:`save` writes it."""

    def __init__(self, root: str | os.PathLike, run_id: str = "") -> None:
        self.root = Path(root)
        self.run_id = run_id or new_run_id()
        self.path = self.root / self.run_id
        self.path.mkdir(parents=True, exist_ok=False)
        self.meta: dict = {"run_id": self.run_id, "complete": False, "start_utc": utc()}
        self.save()
        self._link_latest()

    def file(self, name: str) -> Path:
        return self.path / name

    def save(self) -> None:
        """Write ``meta.json`` atomically (tmp + rename)."""
        tmp = self.path / ".meta.json.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.meta, f, indent=2, sort_keys=False, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path / "meta.json")

    def close(self, **final) -> None:
        self.meta.update(final)
        self.meta["end_utc"] = utc()
        self.meta["complete"] = True
        self.save()

    def _link_latest(self) -> None:
        # A relative link survives copying the whole root elsewhere; rename replaces it atomically.
        tmp = self.root / f".latest.{os.getpid()}"
        try:
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(self.run_id, target_is_directory=True)
            os.replace(tmp, self.root / "latest")
        except OSError:  # e.g. a filesystem without symlinks: the run itself is unaffected
            tmp.unlink(missing_ok=True)


class CsvSink:
    """An append-only CSV file that streams rows to disk and flushes every :data:`FLUSH_INTERVAL_S`.

    Rows are never kept in memory beyond the file object's buffer. The header is
    written by :meth:`header` (immediately, or once the columns are known).
    """

    def __init__(self, path: Path, columns: tuple[str, ...] | list[str] | None = None) -> None:
        self.path = path
        self.file = open(path, "w", newline="", encoding="utf-8", buffering=1 << 16)
        self.writer = csv.writer(self.file)
        self.columns: list[str] | None = None
        self.rows = 0
        self._closed = False
        if columns is not None:
            self.header(columns)
        self._flusher = gevent.spawn(self._flush_loop)

    def header(self, columns) -> None:
        self.columns = list(columns)
        self.writer.writerow(self.columns)

    def write(self, row) -> None:
        self.writer.writerow(row)
        self.rows += 1

    def write_many(self, rows: list) -> None:
        self.writer.writerows(rows)
        self.rows += len(rows)

    def flush(self) -> None:
        if not self._closed:
            self.file.flush()

    def _flush_loop(self) -> None:
        while not self._closed:
            gevent.sleep(FLUSH_INTERVAL_S)
            self.flush()

    def close(self) -> None:
        if self._closed:
            return
        self.file.flush()
        os.fsync(self.file.fileno())
        self._closed = True
        self._flusher.kill(block=False)
        self.file.close()
