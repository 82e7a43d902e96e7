"""Reading format 3: the tallies of a long run in bounded memory, second by second where the verdicts look."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from analysis.rundir import load
from analysis.tallies import MAX_BINS
from contract.events import FORMAT, TALLY_COLUMNS
from contract.histogram import bucket_of, midpoint
from tests import rundirs

T0 = 1_800_000_000.0


def write_day(path, hours: float, restart_at: float | None = None) -> int:
    """A format-3 run of ``hours``: two workers count reconnects every second in two latency buckets; no raw row.
    Returns the reconnects counted."""
    path.mkdir()
    seconds = np.arange(0, int(hours * 3600), dtype=float)
    rows = []
    for worker in ("w1", "w2"):
        for ms, count in ((12.0, 3), (900.0, 1)):
            rows.append(
                pd.DataFrame(
                    {
                        "interval": T0 + seconds,
                        "worker": worker,
                        "role": "flapping",
                        "kind": "reconnect",
                        "ok": 1,
                        "detail": "resumed",
                        "reason": "",
                        "gap": "flap_close",
                        "bucket": bucket_of(ms),
                        "count": count,
                    }
                )
            )
    tallies = pd.concat(rows, ignore_index=True)[list(TALLY_COLUMNS)]
    for table in ("events", "tallies", "activity"):
        (path / table).mkdir()
    rundirs.rewrite(path, "tallies", tallies)
    rundirs.rewrite(path, "events", pd.DataFrame(columns=list(rundirs.SCHEMAS["events"].names)))
    rundirs.rewrite(path, "activity", pd.DataFrame({"interval": [T0], "worker": "w1", "role": "flapping", "users": 5}))
    restarts = [{"ts": T0 + restart_at, "ready_ts": T0 + restart_at + 2, "ok": True}] if restart_at else []
    meta = {
        "format": FORMAT,
        "complete": True,
        "test_starts_utc": [T0],
        "test_stops_utc": [T0 + seconds[-1] + 1],
        "drain": {"seconds": 0, "from_utc": T0 + seconds[-1] + 1},
        "backend": {"restarts": restarts},
        "options": {"record_interval": 1.0},
    }
    (path / "meta.json").write_text(json.dumps(meta))
    return int(tallies["count"].sum())


def test_a_long_run_is_read_in_a_bounded_number_of_bins_and_keeps_every_count(tmp_path):
    for hours in (6, 12):
        total = write_day(tmp_path / f"h{hours}", hours)
        ev = load(tmp_path / f"h{hours}").events
        assert ev["n"].sum() == total  # nothing lost in the binning
        assert len(ev) <= (MAX_BINS + 1) * 2  # bins x buckets (a bin adds its workers up), whatever the length
        assert ev["span_s"].max() == hours * 3600 / MAX_BINS
        assert set(ev["latency_ms"]) == {float(midpoint(bucket_of(12.0))), float(midpoint(bucket_of(900.0)))}


def test_seconds_around_a_restart_stay_seconds(tmp_path):
    write_day(tmp_path / "day", 6, restart_at=3 * 3600)
    ev = load(tmp_path / "day").events
    at = T0 + 3 * 3600
    near = ev[(ev["ts"] >= at - 60) & (ev["ts"] <= at + 60)]
    assert (near["span_s"] == 1.0).all() and near["ts"].nunique() == 121  # the restart verdict's resolution
    assert (ev.loc[ev["ts"] < at - 200, "span_s"] == 6 * 3600 / MAX_BINS).all()  # the rest binned


def test_percentiles_of_counted_reconnects_are_the_buckets_within_their_error(tmp_path):
    from analysis.verdicts.latency import percentiles

    write_day(tmp_path / "day", 1)
    rec = load(tmp_path / "day").events
    p = percentiles(rec, 0.95)
    assert p["p50"].value == float(midpoint(bucket_of(12.0))) and p["p99"].value == float(midpoint(bucket_of(900.0)))
    assert p["p99"].error > 0 and p["p99"].n == 4 * 2 * 3600
