"""Shared fixtures: real backend processes on free loopback ports."""

from __future__ import annotations

import pytest

from server_stub.process import StubProcess


@pytest.fixture
def stub_factory(tmp_path):
    """Start ``python -m server_stub`` with the given options; every one is stopped at teardown.

    The store defaults to a fresh SQLite file under the test's tmp_path.
    """
    started: list[StubProcess] = []

    def start(*args: str, store: str | None = None) -> StubProcess:
        store = store or f"sqlite:{tmp_path}/stub-{len(started)}.db"
        stub = StubProcess("--store", store, *args, log_path=tmp_path / f"stub-{len(started)}.log")
        started.append(stub)
        return stub.start()

    yield start
    for stub in started:
        stub.close()


@pytest.fixture
def stub(stub_factory):
    """A clean backend with short timings suited to tests."""
    return stub_factory("--chunk-delay-ms", "5", "--chunks-per-reply", "5")
