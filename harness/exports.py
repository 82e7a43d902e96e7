"""Locust's own CSV and HTML exports, placed in the run directory.

Locust creates its CSV writer from ``--csv`` *before* the ``init`` event, and it
writes ``--html`` only when its main greenlet ends normally (not on SIGTERM).
So when the user gave neither, the harness runs Locust's own
:class:`~locust.stats.StatsCSVFileWriter` itself (full history, prefix
``<run dir>/locust``) and writes the HTML report when the run closes, on every
path out. A user's own ``--csv`` / ``--html`` wins: the harness then leaves that
export to Locust.
"""

from __future__ import annotations

import csv
import time

import gevent
from locust import stats
from locust.html import get_html_report

PREFIX = "locust"
HTML = "locust_report.html"


class CsvExport(stats.StatsCSVFileWriter):
    """Locust's CSV writer, plus a last complete write when the run closes."""

    def __init__(self, environment, prefix: str) -> None:
        super().__init__(environment, stats.PERCENTILES_TO_REPORT, prefix, full_history=True)
        self.greenlet = gevent.spawn(self.stats_writer)

    def finish(self) -> None:
        self.greenlet.kill(block=True)
        # The writer's loop may be up to a second stale: write the final figures whole.
        self._stats_history_data_rows(self.stats_history_csv_writer, time.time())
        self.close_files()
        for name, write in (
            ("_stats.csv", self.requests_csv),
            ("_failures.csv", self.failures_csv),
            ("_exceptions.csv", self.exceptions_csv),
        ):
            with open(self.base_filepath + name, "w", newline="") as f:
                write(csv.writer(f))


def write_html(environment, path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(get_html_report(environment, show_download_link=False))
