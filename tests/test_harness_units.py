"""Small pieces of the harness, in-process: run directory, CSV sink, telemetry parsing, options."""

from __future__ import annotations

import json
import os

import pytest

from harness import options
from harness.embedded import first_and_last_line
from harness.rundir import CsvSink, RunDir
from harness.telemetry import http_base, parse_metrics


def test_run_directory_meta_is_atomic_and_latest_moves(tmp_path):
    first = RunDir(tmp_path, "a")
    assert json.loads((first.path / "meta.json").read_text())["complete"] is False
    second = RunDir(tmp_path)
    assert os.readlink(tmp_path / "latest") == second.run_id
    second.close(exit_reason="test")
    m = json.loads((second.path / "meta.json").read_text())
    assert m["complete"] and m["end_utc"] and m["exit_reason"] == "test"
    assert not list(second.path.glob(".*tmp"))
    with pytest.raises(FileExistsError):
        RunDir(tmp_path, "a")


def test_csv_sink_streams_whole_lines(tmp_path):
    sink = CsvSink(tmp_path / "x.csv", ("a", "b"))
    sink.write((1, None))
    sink.write_many([(2, "x,y"), (3, "")])
    sink.close()
    assert (tmp_path / "x.csv").read_text().splitlines() == ["a,b", "1,", '2,"x,y"', "3,"]
    assert sink.rows == 3


def test_metrics_and_hosts():
    text = '# HELP x\nprocess_open_fds 12.0\nprocess_cpu_seconds_total 3.5\nhttp_x{a="b"} 1\n'
    assert parse_metrics(text) == {"process_open_fds": 12.0, "process_cpu_seconds_total": 3.5}
    assert http_base("ws://127.0.0.1:8765/ws") == "http://127.0.0.1:8765"
    assert http_base("https://h:1/x") == "https://h:1"


def test_secret_options_never_reach_meta():
    assert options.is_secret("admin_token") and options.is_secret("jwt_secret") and options.is_secret("web_login")
    assert not options.is_secret("run_dir")


def test_a_failure_is_summed_up_by_its_first_and_last_line():
    text = "server_stub exited with 1; log x/backend.log:\nTraceback (most recent call last):\n  File\nKeyError: 3\n"
    assert first_and_last_line(text) == "server_stub exited with 1; log x/backend.log: ... KeyError: 3"
    assert first_and_last_line("refused") == "refused"
    assert first_and_last_line("") == "no message"
