"""How many real runs (a ``locust`` process with its backend) the tests may have going at once on this machine.

Two per core this process may run on (``os.sched_getaffinity``, else ``os.cpu_count()``), at least 1.
Measured on a 2-core machine: a test's real run keeps a third of a core busy or less (each Locust
process at most 2-17 % sustained; four verdict runs at once: machine CPU median 7-45 %, event loops
at most 120 ms late, the clean run's reconnect p99 190 ms), while its timers, not the CPU, set
how long it takes. One per core would leave most of the machine idle and the suite at about 20
minutes on 2 cores; more than two per core starves the runs whose timings the tests judge
(reconnect latency, heartbeats, restarts: the harness-health verdict's loop lag shows it).

``TEST_REAL_RUNS=N`` overrides it (CI tuning; ``tests/shards.py`` sets it for each file it starts:
the runs that file may have at once). Used by ``tests/shards.py`` (test files at once),
``tests/locustfiles/verdict_runs.py``, ``tests/test_scenarios.py`` and ``tests/test_generator_fitness.py``
(runs at once inside). ``bin/gate`` asks ``python -m tests.capacity --cores``: its two ci-soaks
(60 users each) go at once from 4 cores up.
"""

from __future__ import annotations

import os
import sys

ENV = "TEST_REAL_RUNS"
RUNS_PER_CORE = 2


def cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one), at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, n)


def real_runs() -> int:
    """How many real runs at once: ``TEST_REAL_RUNS`` if set, else two per core; at least 1."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return RUNS_PER_CORE * cores()
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"{ENV}={value!r} is not a whole number") from None
    if n < 1:
        raise ValueError(f"{ENV}={n} must be 1 or more")
    return n


if __name__ == "__main__":
    try:
        print(cores() if sys.argv[1:] == ["--cores"] else real_runs())
    except ValueError as e:
        raise SystemExit(f"tests.capacity: {e}") from None
