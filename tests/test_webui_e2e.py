"""The web UI's Resilience tab in a real browser: Debian's chromium driven by Playwright.

``locust`` runs as a child process with the embedded backend (never imported here);
the test starts a swarm through the start form, watches the tab's figures move, stops
the test with the Stop button, waits for the analysis's final verdicts in the tab and
follows its link to ``report.html``. Screenshots go to ``test-artifacts/``.

Playwright never downloads a browser here: it launches ``/usr/bin/chromium`` (Debian's
``chromium``, installed by ``bin/setup``). Without it the test is skipped, except in CI
(``CI`` set), where a missing browser is a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.locustfiles.harness_runs import ROOT, free_port, http_up, locust_running, meta, only_run, stop, wait_for

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts"
USERS = 20  #: four of each of the five user classes
LIVE_FIGURES = """() => Object.fromEntries(
    [...document.querySelectorAll('.MuiTableContainer-root tbody tr')]
        .map(tr => [tr.cells[0].innerText.trim(), [...tr.cells].map(c => c.innerText.trim())]))"""


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _browser_or_skip():
    """Playwright's sync API and Debian's chromium, or a skip (locally) / a failure (in CI) saying what is missing."""
    missing = []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
        missing.append("the playwright package (requirements-dev.txt; run bin/setup)")
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"{CHROMIUM} (Debian's chromium: bin/setup installs it as root, or apt-get install chromium)")
    if missing:
        why = "the browser test needs " + " and ".join(missing)
        if _in_ci():
            pytest.fail(f"{why}; CI must run this test, not skip it")
        pytest.skip(why)
    return sync_playwright


def _number(text: str) -> float:
    found = re.search(r"[-\d.,]+", text or "")
    return float(found.group().replace(",", "")) if found else 0.0


@contextlib.contextmanager
def web_ui(tmp_path, *args: str, locustfile: str = "locustfile.py"):
    """(locust process, its web UI's URL, a Chromium context, the run root): locust with the embedded backend."""
    sync_playwright = _browser_or_skip()
    ARTIFACTS.mkdir(exist_ok=True)
    root, port = tmp_path / "runs", free_port()
    web = f"http://127.0.0.1:{port}"
    with (
        locust_running(
            "--web-host",
            "127.0.0.1",
            "--web-port",
            str(port),
            "--run-dir",
            str(root),
            *args,
            log=tmp_path / "locust.log",
            locustfile=locustfile,
        ) as proc,  # fmt: skip
        sync_playwright() as pw,
        tempfile.TemporaryDirectory(prefix="chromium-") as profile,
    ):
        wait_for(lambda: http_up(web + "/"), 30, "the web UI")
        browser = pw.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield proc, web, browser, root
        finally:
            browser.close()


def start_form(browser, web: str, *, users: int, run_time: str):
    """The start form filled with users, spawn rate and run time, its custom parameters open: (page, the
    scenarios it offers)."""
    page = browser.new_page()
    page.set_default_timeout(20_000)
    page.goto(web + "/")
    page.fill("input[name=userCount]", str(users))
    page.fill("input[name=spawnRate]", str(users))
    page.get_by_text("Advanced options").click()
    page.fill("input[name=runTime]", run_time)
    page.get_by_text("Custom parameters").click()
    return page, page.locator("select[name=scenario] option").evaluate_all("os => os.map(o => o.value)")


def final_verdicts(page) -> dict[str, str]:
    """The tab's final verdicts (name -> status), once the analysis of the stopped test is done."""
    page.wait_for_selector("#resilience-analysis[data-status=done]", timeout=45_000)
    rows = page.locator("#resilience-verdicts tr[data-verdict]")
    return {
        rows.nth(i).get_attribute("data-verdict"): rows.nth(i).get_attribute("data-status") for i in range(rows.count())
    }


def verdict_summaries(root: Path) -> str:
    """Each verdict's status and summary from the run's verdicts.json: what a failed assertion shows."""
    runs = sorted(root.glob("*/verdicts.json"))
    if not runs:
        return f"no verdicts.json under {root}"
    verdicts = json.loads(runs[-1].read_text())["verdicts"]
    return "\n".join(f"{v['name']}: {v['status']}: {v['summary']}" for v in verdicts)


def test_resilience_tab_live_figures_final_verdicts_and_report(tmp_path):
    started = time.monotonic()
    log = tmp_path / "locust.log"
    with web_ui(tmp_path, "--stub-hb-interval-ms", "1000", "--stub-resume-window", "4", "--drain", "1") as (
        proc,
        web,
        browser,
        root,
    ):
        page = browser.new_page()
        page.set_default_timeout(20_000)
        page.goto(web + "/")

        # The start form: every custom option is there, secrets blank in a password field.
        run_dir = page.locator("input[name=runDir]")
        assert run_dir.input_value() == str(root)
        assert page.locator("input[name=adminToken]").get_attribute("type") == "password"
        assert page.locator("input[name=adminToken]").input_value() == ""
        for name in ("stubResumeWindow", "wsPath", "gapWeights", "drain", "zombieMaxWaitS"):
            assert page.locator(f"input[name={name}]").count() == 1, name
        assert page.locator("input[name=stubResumeWindow]").input_value() == "4"
        page.fill("input[name=userCount]", str(USERS))
        page.fill("input[name=spawnRate]", str(USERS))
        page.get_by_role("button", name="Start").click()

        # The Resilience tab, refreshed live by Locust's own polling.
        page.get_by_role("tab", name="Resilience").click()
        page.wait_for_function(
            f"""() => {{
                const rows = ({LIVE_FIGURES})();
                return rows['connections'] && parseFloat(rows['connections'][1]) > 0
                    && rows['events/s'] && parseFloat(rows['events/s'][1]) > 0;
            }}"""
        )
        first = page.evaluate(LIVE_FIGURES)
        page.wait_for_function(f"() => parseFloat(({LIVE_FIGURES})()['events/s'][4]) > {_number(first['events/s'][4])}")
        live = page.evaluate(LIVE_FIGURES)
        assert _number(live["backend RSS"][1]) > 0, live["backend RSS"]
        assert _number(live["live agents"][1]) > 0, live["live agents"]
        assert all(name in live for name in ("zombies reaped", "outbox", "reconnect p50", "reconnect p99")), live
        # The verdicts so far: the analysis itself on the open run directory, ten seconds into the test.
        page.wait_for_function(f"() => ({LIVE_FIGURES})()['duplicate-agent'][2].endsWith('(so far)')", timeout=45_000)
        so_far = page.evaluate(LIVE_FIGURES)
        assert so_far["duplicate-agent"][2] == "pass (so far)", so_far["duplicate-agent"]
        assert "(as of" in so_far["duplicate-agent"][5], so_far["duplicate-agent"]
        page.wait_for_function(f"() => ({LIVE_FIGURES})()['reconnect p99'][1] !== ''")
        page.screenshot(path=str(ARTIFACTS / "webui-resilience-live.png"), full_page=True)

        # Stop in the UI: the analysis runs on the run directory; the tab shows its verdicts and a link.
        page.get_by_role("button", name="Stop").click()
        verdicts = final_verdicts(page)
        assert "duplicate-agent" in verdicts and len(verdicts) == 9, verdict_summaries(root)
        assert verdicts["duplicate-agent"] == "pass", verdict_summaries(root)
        assert "fail" not in verdicts.values(), verdict_summaries(root)
        page.screenshot(path=str(ARTIFACTS / "webui-resilience-final.png"), full_page=True)

        # The panel lives beside Locust's React tree: it leaves with the tab and comes back with it.
        page.get_by_role("tab", name="Statistics").click()
        page.wait_for_selector("#resilience-analysis", state="detached", timeout=5_000)
        page.get_by_role("tab", name="Resilience").click()
        page.wait_for_selector("#resilience-analysis[data-status=done] #resilience-report", timeout=5_000)

        # The link opens the run's report.html, served by the web UI.
        with browser.expect_page() as opened:
            page.click("#resilience-report")
        report = opened.value
        report.wait_for_load_state()
        assert report.url == web + "/resilience/report"
        report.locator("table#verdicts").wait_for(state="visible")
        assert report.locator("table#verdicts [data-verdict='duplicate-agent']").count() >= 1
        report.screenshot(path=str(ARTIFACTS / "webui-report.png"), full_page=True)
        run = only_run(root)
        assert (run / "report.html").exists() and (run / "verdicts.json").exists()
        assert stop(proc) == 0, log.read_text()[-3000:]
    m = meta(run)
    assert m["complete"] and m["exit_reason"] == "stopped, then quit", m
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    assert time.monotonic() - started < 90


def test_a_scenario_picked_in_the_form_runs_with_its_users_and_backend_settings(tmp_path):
    """``-f locustfile.py,scenarios/shape.py``: the scenario list in the form; picking ``heartbeat`` brings its
    user mix (heartbeat and zombie clients only), its knobs, and its backend settings (the embedded backend
    restarts with them before the users start); the shape ends the test at the run time and the tab shows
    the scenario's verdicts."""
    from scenarios.catalog import SCENARIOS

    log = tmp_path / "locust.log"
    with web_ui(tmp_path, "--drain", "1", locustfile="locustfile.py,scenarios/shape.py") as (proc, web, browser, root):
        page, choices = start_form(browser, web, users=8, run_time="12s")
        assert set(SCENARIOS) <= set(choices), choices
        page.select_option("select[name=scenario]", "heartbeat")
        page.get_by_role("button", name="Start").click()
        page.get_by_role("tab", name="Resilience").click()

        verdicts = final_verdicts(page)  # nobody pressed Stop: the scenario's shape ended the test
        page.screenshot(path=str(ARTIFACTS / "webui-scenario-heartbeat.png"), full_page=True)
        assert verdicts["zombie"] == "pass" and verdicts["duplicate-agent"] == "pass", verdict_summaries(root)
        assert verdicts["delivery"] == "skipped", verdict_summaries(root)  # no ConversationUser in the heartbeat mix
        # HeartbeatUsers refresh their 6 s tokens over the socket
        assert verdicts["refresh"] == "pass", verdict_summaries(root)
        assert "fail" not in verdicts.values(), verdict_summaries(root)
        assert stop(proc) == 0, log.read_text()[-3000:]
    m = meta(only_run(root))
    assert m["scenario"] == "heartbeat", m["scenario"]
    spawned = {name: n for name, n in m["user_classes"].items() if n}
    assert spawned == {"HeartbeatUser": 6, "ZombieUser": 2}, m["user_classes"]  # the scenario's 3:1 mix of 8
    assert m["options"]["zombie_max_wait_s"] == 6, m["options"]
    backend = m["backend"]
    assert len(backend["reconfigured"]) == 1 and not backend["restarts"], backend
    args = backend["args"]
    assert args[args.index("--hb-interval-ms") + 1] == "1000", args
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def test_an_mqtt_scenario_on_the_mosquitto_target_shows_the_brokers_own_figures(tmp_path):
    """``--target mosquitto``: picking ``mqtt-keepalive`` in the form runs its MQTT users against the broker the
    harness started; the tab's backend rows are the broker's $SYS figures (connections, sessions away,
    messages stored, ...), and the final verdicts are the scenario's (zombie judged with mosquitto's grace)."""
    log = tmp_path / "locust.log"
    args = ("--drain", "1", "--target", "mosquitto")
    with web_ui(tmp_path, *args, locustfile="locustfile.py,scenarios/shape.py") as (proc, web, browser, root):
        page, _ = start_form(browser, web, users=8, run_time="14s")
        page.select_option("select[name=scenario]", "mqtt-keepalive")
        page.get_by_role("button", name="Start").click()
        page.get_by_role("tab", name="Resilience").click()
        page.wait_for_function(
            f"""() => {{
                const rows = ({LIVE_FIGURES})();
                return rows['connections'] && parseFloat(rows['connections'][1]) > 0 && rows['sessions away'];
            }}"""
        )
        live = page.evaluate(LIVE_FIGURES)
        assert "$SYS/broker/clients/connected" in live["connections"][5], live["connections"]
        assert "live agents" not in live and "messages stored" in live, live
        page.screenshot(path=str(ARTIFACTS / "webui-mqtt-keepalive.png"), full_page=True)
        verdicts = final_verdicts(page)
        assert verdicts["zombie"] == "pass" and verdicts["leak"] != "fail", verdict_summaries(root)
        assert "fail" not in verdicts.values(), verdict_summaries(root)
        assert stop(proc) == 0, log.read_text()[-3000:]
    m = meta(only_run(root))
    assert m["scenario"] == "mqtt-keepalive" and m["protocol"]["name"] == "mqtt" and m["target"] == "mosquitto", m
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
