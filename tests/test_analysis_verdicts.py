"""Every verdict on real runs: a clean run passes them all, each planted fault fails the verdict it targets.

The runs are real ``locust --headless`` processes of the root locustfile against
the embedded reference backend on loopback (tests/locustfiles/verdict_runs.py),
as many at once as the machine has cores (tests/capacity.py). The analysis runs
as users run it: ``python -m analysis RUN_DIR``.
Bad input is made from a copy of the clean run directory.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests import rundirs
from tests.locustfiles.verdict_runs import MAY_ALSO_FAIL, SPECS, TARGET, analyse, assert_generator_fit, run_all

pytestmark = pytest.mark.timeout(600)

EXIT_PASS, EXIT_FAIL, EXIT_CANNOT, EXIT_INCONCLUSIVE = 0, 1, 2, 3


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, int | None]]:
    root = tmp_path_factory.mktemp("verdict-runs")
    done = run_all(list(SPECS), root)
    for name, (run_dir, _) in done.items():
        assert (run_dir / "meta.json").exists(), (
            f"run {name} left no run directory; log:\n" + (root / f"{name}.log").read_text()[-3000:]
        )
    return done


def verdicts_of(run_dir: Path) -> dict[str, dict]:
    document = json.loads((run_dir / "verdicts.json").read_text())
    return {v["name"]: v for v in document["verdicts"]}


def judged(run_dir: Path, *extra: str) -> tuple[int, dict[str, dict], str]:
    done = analyse(run_dir, *extra)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, verdicts_of(run_dir), done.stdout + done.stderr


def copy_of(runs, name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(runs[name][0], target)
    for produced in ("verdicts.json", "report.html"):
        (target / produced).unlink(missing_ok=True)
    return target


# -- the clean run and the faults ------------------------------------------------------------


def test_clean_run_passes_every_verdict(runs):
    code, verdicts, out = judged(runs["clean"][0])
    assert_generator_fit(runs["clean"][0])
    statuses = {name: v["status"] for name, v in verdicts.items()}
    assert statuses == dict.fromkeys(statuses, "pass"), out
    assert code == EXIT_PASS
    assert len(verdicts) == 9
    for v in verdicts.values():
        assert v["n"] > 0 and v["summary"], v
    latency = verdicts["reconnect-latency"]
    assert latency["bound"] is not None and latency["bound"] >= latency["figure"]
    assert (runs["clean"][0] / "report.html").stat().st_size > 0


@pytest.mark.parametrize("fault", sorted(TARGET))
def test_planted_fault_fails_its_verdict(runs, fault):
    code, verdicts, out = judged(runs[fault][0])
    target = verdicts[TARGET[fault]]
    assert target["status"] == "fail", out
    assert code == EXIT_FAIL
    assert target["evidence"], f"{fault}: a failed verdict must show its evidence"
    # A fault aimed at one verdict fails no other (but what a restart forgot is missed by conversations too).
    collateral = {n for n, v in verdicts.items() if v["status"] == "fail"} - {
        TARGET[fault],
        *MAY_ALSO_FAIL.get(fault, ()),
    }
    assert not collateral, out


def test_quit_hook_makes_the_verdict_locusts_exit_code(runs):
    run_dir, locust_code = runs["duplicate-agent"]
    assert locust_code == EXIT_FAIL
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["verdicts_exit_code"] == EXIT_FAIL and meta["complete"] is True


def test_evidence_names_sessions_and_times(runs):
    _, verdicts, _ = judged(runs["duplicate-agent"][0])
    rows = [r for r in verdicts["duplicate-agent"]["evidence"] if "session" in r]
    assert rows and all(r["time"].endswith("Z") and r["session"] for r in rows)


def test_baseline_comparison_in_table_and_report(runs):
    code, _, out = judged(runs["leak"][0], "--baseline", str(runs["clean"][0]))
    assert code == EXIT_FAIL
    assert "(base " in out
    assert "clean" in (runs["leak"][0] / "report.html").read_text()


# -- bad input --------------------------------------------------------------------------------


def test_missing_events_make_event_verdicts_inconclusive(runs, tmp_path):
    run_dir = copy_of(runs, "clean", tmp_path)
    for table in ("events", "tallies"):
        shutil.rmtree(run_dir / table)
    code, verdicts, out = judged(run_dir)
    assert code == EXIT_INCONCLUSIVE
    assert "events: missing" in out and "tallies: missing" in out
    assert verdicts["reconnect-latency"]["status"] == "inconclusive"
    assert verdicts["harness-health"]["status"] == "inconclusive"
    assert "events: missing" in verdicts["harness-health"]["summary"]


def test_empty_samples_make_leak_inconclusive(runs, tmp_path):
    run_dir = copy_of(runs, "clean", tmp_path)
    (run_dir / "samples.csv").write_text("")
    code, verdicts, _ = judged(run_dir)
    assert code == EXIT_INCONCLUSIVE
    assert verdicts["leak"]["status"] == "inconclusive"
    assert "samples.csv: empty" in verdicts["leak"]["summary"]


def test_a_crash_mid_batch_loses_only_that_batch_and_is_reported(runs, tmp_path):
    run_dir = copy_of(runs, "clean", tmp_path)
    rundirs.crash(run_dir, "tallies")  # a live segment whose last batch a crash cut short
    code, verdicts, out = judged(run_dir)
    assert code == EXIT_INCONCLUSIVE  # harness health says the input was bad: never a pass
    assert "tallies: live-00000.arrows ends in a batch cut short" in out
    assert verdicts["delivery"]["status"] == "pass"  # what could be read was still judged


def test_corrupt_events_and_meta_never_crash(runs, tmp_path):
    run_dir = copy_of(runs, "clean", tmp_path)
    for part in (run_dir / "events").iterdir():
        part.write_bytes(b"\x00\xff\xfe garbage \x00\n" * 50)
    (run_dir / "meta.json").write_text('{"run_id": "x", ')
    code, verdicts, out = judged(run_dir)
    assert code in (EXIT_INCONCLUSIVE, EXIT_FAIL)
    assert "meta.json: not valid JSON" in out
    assert "events: part-00000.parquet cannot be read" in out
    assert all(v["status"] != "pass" for n, v in verdicts.items() if n in ("reconnect-latency", "harness-health"))


def test_remote_backend_without_stats(runs, tmp_path):
    run_dir = copy_of(runs, "clean", tmp_path)
    (run_dir / "server_stats.csv").unlink()
    code, verdicts, _ = judged(run_dir)
    assert code == EXIT_INCONCLUSIVE
    assert verdicts["duplicate-agent"]["status"] == "inconclusive"
    assert "server_stats.csv: missing" in verdicts["duplicate-agent"]["summary"]


def test_run_with_no_reconnects(runs, tmp_path):
    run_dir = copy_of(runs, "no-reap", tmp_path)
    for table in ("events", "tallies"):
        rows = rundirs.read(run_dir, table)
        rundirs.rewrite(run_dir, table, rows[rows["kind"] != "reconnect"])
    _, verdicts, _ = judged(run_dir)
    assert verdicts["reconnect-latency"]["status"] == "inconclusive"
    assert verdicts["reconnect-latency"]["summary"] == "no reconnects in this run"


def test_a_restart_the_backend_did_not_come_back_from_fails_restart_naming_its_error(runs, tmp_path):
    run_dir = copy_of(runs, "clean", tmp_path)
    meta = json.loads((run_dir / "meta.json").read_text())
    restart = meta["backend"]["restarts"][0]
    restart.update(ok=False, new_pid=None, error="server_stub exited with 1; log backend.log: ... KeyError: 3")
    restart.pop("ready_ts", None)
    (run_dir / "meta.json").write_text(json.dumps(meta))
    code, verdicts, _ = judged(run_dir)
    assert code == EXIT_FAIL
    assert verdicts["restart"]["status"] == "fail"
    assert "did not come back after the restart" in verdicts["restart"]["summary"]
    assert "KeyError: 3" in verdicts["restart"]["summary"]


def add_event_like_first_raw_row(run_dir: Path, user_class: str, **fields) -> None:
    """Add to the raw events a copy of ``user_class``'s first raw row with ``fields`` changed (one event)."""
    events = rundirs.read(run_dir)
    row = events[events["user"].str.startswith(user_class)].iloc[[0]].assign(n=1, **fields)
    rundirs.rewrite(run_dir, "events", pd.concat([events, row], ignore_index=True))


def test_a_live_client_reaped_fails_zombie_even_without_zombie_users(runs, tmp_path):
    run_dir = copy_of(runs, "refresh-breaks", tmp_path)  # TokenRefreshUsers only: zombie is skipped
    reaped = {"kind": "close", "ok": 1, "code": "4001", "reason": "idle_reaped", "detail": "reaped"}
    add_event_like_first_raw_row(run_dir, "TokenRefreshUser", **reaped)
    _, verdicts, _ = judged(run_dir)
    assert verdicts["zombie"]["status"] == "fail"
    assert "1 live (heartbeating) client(s) reaped" in verdicts["zombie"]["summary"]


def test_an_unanswered_refresh_of_any_user_fails_refresh(runs, tmp_path):
    run_dir = copy_of(runs, "clean", tmp_path)
    add_event_like_first_raw_row(run_dir, "HeartbeatUser", kind="refresh", ok=0, detail="no answer")
    _, verdicts, _ = judged(run_dir)
    assert verdicts["refresh"]["status"] == "fail"
    assert any("HeartbeatUser" in e["user"] for e in verdicts["refresh"]["evidence"])


def test_too_few_reconnects_for_the_bound_is_inconclusive(runs):
    _, verdicts, _ = judged(runs["refresh-breaks"][0])
    latency = verdicts["reconnect-latency"]
    assert latency["status"] == "inconclusive" and latency["n"] < 299
    assert "needs 299" in latency["summary"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[leak]\nmin_growth_mib = 'big'\n", "leak.min_growth_mib must be a number"),
        ("[leak]\nmin_grwoth_mib = 3\n", "unknown key leak.min_grwoth_mib"),
        ("[leek]\n", "unknown section [leek]"),
        ("[leak\n", "not valid TOML"),
    ],
)
def test_bad_thresholds_file(runs, tmp_path, content, message):
    file = tmp_path / "thresholds.toml"
    file.write_text(content)
    done = analyse(runs["clean"][0], "--thresholds", str(file))
    assert done.returncode == EXIT_CANNOT
    assert message in done.stderr and str(file) in done.stderr


def test_thresholds_file_moves_a_verdict(runs, tmp_path):
    run_dir = copy_of(runs, "clean", tmp_path)
    file = tmp_path / "strict.toml"
    file.write_text("[reconnect_latency]\np99_max_ms = 0.001\nbrief_p99_max_ms = 0.001\n")
    code, verdicts, _ = judged(run_dir, "--thresholds", str(file))
    assert verdicts["reconnect-latency"]["status"] == "fail" and code == EXIT_FAIL
    document = json.loads((run_dir / "verdicts.json").read_text())
    assert document["thresholds"]["reconnect_latency"]["p99_max_ms"] == 0.001


def test_not_a_run_directory(tmp_path):
    done = analyse(tmp_path / "nowhere")
    assert done.returncode == EXIT_CANNOT
    assert "no such directory" in done.stderr
    done = analyse(tmp_path, "--baseline", str(tmp_path / "nowhere"))
    assert done.returncode == EXIT_CANNOT and "nowhere" in done.stderr


def test_empty_directory_is_judged_inconclusive_not_passed(tmp_path):
    code, verdicts, out = judged(tmp_path)
    assert code == EXIT_INCONCLUSIVE
    assert all(v["status"] in ("inconclusive", "skipped") for v in verdicts.values())
    for file in ("meta.json", "events.csv", "samples.csv", "server_stats.csv"):
        assert f"{file}: missing" in out


def test_a_run_directory_of_format_1_is_refused_naming_its_version(tmp_path):
    """events.csv of format 1 (agentws close codes and class names, no role or reason): refused, not misjudged."""
    import pandas as pd

    from contract.events import EVENT_COLUMNS_V1
    from tests.synthetic_run import write_run

    run_dir = write_run(tmp_path / "old", seconds=60)
    events = pd.read_csv(run_dir / "events.csv")
    events[list(EVENT_COLUMNS_V1)].to_csv(run_dir / "events.csv", index=False)
    meta = json.loads((run_dir / "meta.json").read_text())
    del meta["format"]
    (run_dir / "meta.json").write_text(json.dumps(meta))
    result = analyse(run_dir)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "run directory format 1; this analysis reads formats 2, 3" in result.stderr
    assert not (run_dir / "verdicts.json").exists()


def test_context_is_inconclusive_when_the_protocol_has_no_history_to_compare(tmp_path):
    """Resumes that kept identity and turns, with no history to ask for (detail "identity and turns kept"):
    half the evidence, never a pass."""
    import pandas as pd

    from analysis import thresholds
    from analysis.rundir import load
    from analysis.verdicts.messages import judge_context
    from tests.synthetic_run import write_run

    run_dir = write_run(tmp_path / "no-history", seconds=60)
    events = pd.read_csv(run_dir / "events.csv")
    check = events.iloc[[0]].assign(kind="history_check", ok=1, detail="identity and turns kept", ts=events["ts"].max())
    pd.concat([events, check]).to_csv(run_dir / "events.csv", index=False)
    verdict = judge_context(load(run_dir), thresholds.load())
    assert verdict.status == "inconclusive" and "no history was compared" in verdict.summary, verdict.summary
