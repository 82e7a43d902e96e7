"""The leak statistics on synthetic series: they must pass healthy shapes and fail leaks."""

import numpy as np
import pytest

from analysis.stats import judge_growth, min_samples_for_upper_bound, quantile, trend

MiB = 1024 * 1024
HOUR = 3600.0
THRESHOLDS = {"max_slope_per_hour": 1 * MiB, "min_growth": 8 * MiB}


def seconds(hours: float) -> np.ndarray:
    return np.arange(0, hours * HOUR, 1.0)


def gc_sawtooth(t, base=200 * MiB, amplitude=30 * MiB, period=600.0, noise=0.5 * MiB, seed=1):
    rng = np.random.default_rng(seed)
    return base + amplitude * ((t % period) / period) + rng.normal(0, noise, len(t))


def test_gc_sawtooth_without_leak_passes():
    t = seconds(6)
    assert not judge_growth(t, gc_sawtooth(t), **THRESHOLDS).growing


def test_steady_3_mb_per_hour_leak_fails():
    t = seconds(6)
    rss = gc_sawtooth(t) + 3e6 * t / HOUR
    judgement = judge_growth(t, rss, **THRESHOLDS)
    assert judgement.growing, judgement.reason
    assert judgement.overall.slope == pytest.approx(3e6, rel=0.15)


def test_bounded_cache_that_fills_and_stops_passes():
    t = seconds(6)
    cache = np.minimum(t / (2 * HOUR), 1.0) * 100 * MiB  # fills for 2 h, then full
    judgement = judge_growth(t, gc_sawtooth(t) + cache, **THRESHOLDS)
    assert not judgement.growing
    assert "stopped" in judgement.reason


def test_small_creep_below_threshold_passes_even_if_significant():
    t = seconds(6)
    rss = gc_sawtooth(t, amplitude=1 * MiB, noise=0.05 * MiB) + 0.3 * MiB * t / HOUR
    tr = trend(t, rss).per_hour()
    assert tr.low > 0  # a significance test would flag this run
    assert not judge_growth(t, rss, **THRESHOLDS).growing


def test_fast_leak_in_a_short_run_fails():
    t = np.arange(0, 150.0, 1.0)
    rss = 60 * MiB + 64 * 1024 * 300 * t + np.random.default_rng(2).normal(0, MiB, len(t))  # 300 conns/s x 64 KiB
    assert judge_growth(t, rss, **THRESHOLDS).growing


def test_noisy_flat_short_run_passes():
    t = np.arange(0, 150.0, 1.0)
    rss = 60 * MiB + np.random.default_rng(3).normal(0, 2 * MiB, len(t))
    assert not judge_growth(t, rss, **THRESHOLDS).growing


def test_quantile_is_an_observed_value_with_an_upper_bound():
    values = np.arange(1, 1001, dtype=float)
    q = quantile(values, 0.99)
    assert q.value == 990.0
    assert q.n == 1000
    assert 990.0 < q.upper <= 1000.0


def test_quantile_upper_bound_needs_enough_samples():
    need = min_samples_for_upper_bound(0.99)
    assert need == 299
    assert quantile(np.ones(need - 1), 0.99).upper is None
    assert quantile(np.ones(need), 0.99).upper == 1.0


def test_quantile_upper_bound_covers_the_true_quantile():
    rng = np.random.default_rng(4)
    true_p99 = -np.log(0.01)  # exponential(1)
    covered = sum(quantile(rng.exponential(size=400), 0.99).upper >= true_p99 for _ in range(400))
    assert covered / 400 >= 0.93


def test_a_plans_relative_memory_bound_fails_what_is_held_beyond_it(tmp_path):
    """``leak.max_held_share`` (context-cycles: TC4's "< 5 % more memory"): the RSS held after the drain
    against the pre-load baseline. 60 MiB/h for 300 s holds 5 MiB of a 50 MiB baseline (10 %)."""
    from analysis import thresholds
    from analysis.rundir import load
    from analysis.verdicts.base import Status
    from analysis.verdicts.leak import judge
    from tests.synthetic_run import write_run

    th = thresholds.load()
    th["leak"]["max_held_share"] = 0.05
    leaking = load(write_run(tmp_path / "leaking", leak_mib_per_hour=60.0))
    verdict = judge(leaking, th)
    assert verdict.status is Status.FAIL and "of the 50 MiB baseline (bound 5%)" in verdict.summary, verdict.summary
    slight = judge(load(write_run(tmp_path / "slight", leak_mib_per_hour=12.0)), th)
    assert slight.status is Status.PASS and "2.0% of the baseline, bound 5%" in slight.summary, slight.summary
    th["leak"]["max_held_share"] = 0.0  # the default: no relative bound, the 5 MiB stay under min_growth_mib
    assert judge(leaking, th).status is Status.PASS


def test_a_gap_planned_past_the_window_just_after_a_restart_is_not_a_session_the_restart_lost():
    """A conversation user holding a session at the restart leaves for an extended gap a moment after it:
    its next session is new by design (expired), not lost by the restart; a user cut off is still judged."""
    import pandas as pd

    from analysis.verdicts.restart import comebacks

    at = 100.0
    rows = [
        (95.0, "planner", "s1", "welcome", 1, "resumed"),
        (100.4, "planner", "s1", "disconnect", 1, "planned_gap_extended"),
        (112.0, "planner", "s2", "welcome", 1, "new:expired"),
        (112.0, "planner", "s2", "reconnect", 1, "new:expired"),
        (96.0, "cut", "s3", "welcome", 1, "resumed"),
        (100.1, "cut", "s3", "disconnect", 1, "server_close"),
        (100.9, "cut", "s4", "welcome", 1, "new:expired"),
        (100.9, "cut", "s4", "reconnect", 1, "new:expired"),
    ]
    ev = pd.DataFrame(rows, columns=["ts", "user", "session", "kind", "ok", "detail"]).assign(worker="local", n=1)
    out = comebacks(ev, at, horizon_s=30.0).set_index("user")
    assert list(out.index) == ["cut"]  # the planner is left out, the cut-off user is judged
    assert not out.loc["cut", "resumed"]


def test_fds_still_falling_at_the_end_of_the_drain_are_inconclusive_fds_that_stay_up_fail(tmp_path):
    """A backend still closing sockets when the drain ends (a busy machine, a slow runtime) is not one that
    holds them: inconclusive, naming --drain; the same count that stays up through the drain fails."""
    import pandas as pd

    from analysis import thresholds
    from analysis.rundir import load
    from analysis.verdicts.base import Status
    from analysis.verdicts.leak import judge
    from tests.synthetic_run import T0, write_run

    th = thresholds.load()
    cases = (("falling", [60, 50, 40], Status.INCONCLUSIVE), ("held", [40, 40, 40], Status.FAIL))
    for name, drain_fds, status in cases:
        path = write_run(tmp_path / name, seconds=120)
        samples = pd.read_csv(path / "samples.csv")
        drain = samples.index[(samples["source"] == "backend") & (samples["ts"] > T0 + 120)]
        fds = (drain_fds * len(drain))[: len(drain)]
        samples.loc[drain, "num_fds"] = sorted(fds, reverse=True) if name == "falling" else fds
        samples.to_csv(path / "samples.csv", index=False)
        verdict = judge(load(path), th)
        assert verdict.status is status, (name, verdict.summary)
        assert ("a longer --drain" in verdict.summary) == (name == "falling"), verdict.summary


def test_memory_held_after_a_drain_shorter_than_the_backends_retention_is_not_judged(tmp_path):
    """socket.io keeps what returning clients may recover for its window and until its sweep (meta.json
    ``backend.retention``): memory held after a shorter drain is inconclusive, naming the --drain that
    judges it; after a drain that outlasts it, the same held memory fails."""
    import json

    from analysis import thresholds
    from analysis.rundir import load
    from analysis.verdicts.base import Status
    from analysis.verdicts.leak import judge
    from tests.synthetic_run import write_run

    th = thresholds.load()
    th["leak"]["max_held_share"] = 0.05
    for retention_s, status in ((70.0, Status.INCONCLUSIVE), (5.0, Status.FAIL)):
        path = write_run(tmp_path / f"kept-{retention_s:g}", leak_mib_per_hour=60.0)
        meta = json.loads((path / "meta.json").read_text())
        meta["backend"] = {**(meta.get("backend") or {}), "retention": {"seconds": retention_s, "why": "a window"}}
        (path / "meta.json").write_text(json.dumps(meta))
        verdict = judge(load(path), th)
        assert verdict.status is status, (retention_s, verdict.summary)
        assert ("--drain 70 judges it" in verdict.summary) == (status is Status.INCONCLUSIVE), verdict.summary
