"""The harness under the web UI, with bad options, and its quit hook (``--verdicts``)."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request

import pytest

from tests.locustfiles.harness_runs import (
    check_events,
    check_exports,
    free_port,
    http_up,
    locust_running,
    meta,
    only_run,
    run_locust,
    secret_digest,
    stop,
    wait_for,
)


def _post(url: str, form: dict | None = None) -> bytes:
    data = urllib.parse.urlencode(form or {}).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST"), timeout=10) as r:
        return r.read()


def test_run_started_and_stopped_through_the_web_ui(tmp_path):
    root, port = tmp_path / "runs", free_port()
    log = tmp_path / "locust.log"
    web = f"http://127.0.0.1:{port}"
    with locust_running(
        "--web-host", "127.0.0.1", "--web-port", str(port), "--run-time", "20", "--run-dir", str(root),
        "--test-secret", "s3cret",
        log=log,
    ) as proc:  # fmt: skip
        wait_for(lambda: http_up(web + "/"), 20, "the web UI")
        run = only_run(root)
        host = meta(run)["host"]
        # The page shows the secret blank, so the browser's form posts it back blank: the CLI value must survive.
        _post(web + "/swarm", {"user_count": 4, "spawn_rate": 4, "host": host, "test_secret": ""})
        time.sleep(3)
        _post(web + "/stop")
        wait_for(lambda: meta(run).get("user_classes") is not None, 5, "meta")
        time.sleep(1)
        stop(proc)
    m = meta(run)
    assert m["complete"] and m["exit_reason"] == "stopped, then quit"
    assert m["user_classes"] == {"EventUser": 4} and m["host"] == host
    rows = check_events(run)
    assert {r["agent"] for r in rows if r["kind"] == "connect"} == {secret_digest("s3cret")}
    check_exports(run)


def test_a_protocol_typed_in_the_web_ui_that_cannot_load_stops_the_test_naming_it(tmp_path):
    """The form's --protocol is checked when the test starts, before a user speaks it: a bad one is named in
    the log, the test stops and is not recorded as a test of the run."""
    root, port = tmp_path / "runs", free_port()
    log = tmp_path / "locust.log"
    web = f"http://127.0.0.1:{port}"
    with locust_running(
        "--web-host", "127.0.0.1", "--web-port", str(port), "--run-dir", str(root), log=log
    ) as proc:  # fmt: skip
        wait_for(lambda: http_up(web + "/"), 20, "the web UI")
        host = meta(only_run(root))["host"]
        _post(web + "/swarm", {"user_count": 2, "spawn_rate": 2, "host": host, "protocol": "no_such_module:X"})
        wait_for(lambda: "the test is stopped before any user starts" in log.read_text(), 10, "the refusal")
        stop(proc)
    out = log.read_text()
    assert "--protocol: 'no_such_module:X': module 'no_such_module' did not load" in out, out[-3000:]
    assert not meta(only_run(root)).get("test_starts_utc"), out[-3000:]


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--sample-interval", "-1"], "--sample-interval"),
        (["--stub-fault", "no-such-fault"], "--stub-fault"),
        (["--stub-resume-window", "0"], "--stub-resume-window"),
        (["--host", "http://127.0.0.1:9", "--server-pid", "999999999"], "--server-pid"),
        (["--run-dir", "{file}/runs"], "--run-dir"),
        (["--target", "no-such-target"], "--target: 'no-such-target' is not a target"),
        (["--target", "chatline", "--host", "http://127.0.0.1:9"], "--target: starts a backend of its own"),
        (["--target", "chatline", "--stub-fault", "leak"], "--stub-fault: plants faults in the reference backend"),
        (["--protocol", "amqp"], "--protocol: 'amqp': not a built-in protocol"),
        (["--protocol", "no_such_module:Adapter"], "did not load: ModuleNotFoundError"),
    ],
)
def test_bad_option_values_are_refused_before_any_load(tmp_path, args, option):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    args = [a.replace("{file}", str(a_file)) for a in args]
    root = tmp_path / "runs"
    if "--run-dir" not in args:
        args += ["--run-dir", str(root)]
    log = tmp_path / "locust.log"
    code = run_locust("--headless", "-u", "1", "-r", "1", "--run-time", "5", *args, log=log, timeout=30)
    out = log.read_text()
    assert code != 0, out
    assert option in out, out
    assert "Ramping to" not in out and "All users spawned" not in out
    assert not root.exists() or not any(root.iterdir())


@pytest.mark.parametrize("verdict", [0, 1, 3])
def test_verdicts_hook_sets_the_exit_code(tmp_path, verdict):
    root = tmp_path / "runs"
    log = tmp_path / "locust.log"
    code = run_locust(
        "--headless", "-u", "1", "-r", "1", "--run-time", "2", "--run-dir", str(root),
        "--run-id", f"verdict-{verdict}", "--verdicts", "--analyser", "tests.locustfiles.fake_analyser",
        log=log,
    )  # fmt: skip
    assert code == verdict, log.read_text()[-3000:]
    run = only_run(root)
    assert (run / "verdicts.json").exists()
    assert meta(run)["verdicts_exit_code"] == verdict


def test_verdicts_with_a_missing_analyser_fail_the_run(tmp_path):
    log = tmp_path / "locust.log"
    code = run_locust(
        "--headless", "-u", "1", "-r", "1", "--run-time", "1", "--run-dir", str(tmp_path / "runs"),
        "--verdicts", "--analyser", "no_such_analysis_module",
        log=log,
    )  # fmt: skip
    assert code == 2 and "not found" in log.read_text()


def _web_ui_options(argv: list[str]) -> dict:
    """Every harness and users option meant for the web UI, with the value the command line ``argv`` gives it,
    from the same add_argument calls Locust makes."""
    from locust import argument_parser

    from harness import options as harness_options
    from users import options as users_options

    parser = argument_parser.get_empty_argument_parser()
    before = {a.dest for a in parser._actions}
    harness_options.add_arguments(parser)
    users_options._add_arguments(parser)
    added = [a for a in parser._actions if a.dest not in before]
    assert "record_buffer_max" in {a.dest for a in added}  # a real option, just not in the UI
    values = vars(parser.parse_known_args(argv)[0])
    return {a.dest: values[a.dest] for a in added if a.include_in_web_ui}


def test_web_ui_lists_every_option_and_hides_secrets(tmp_path):
    root, port = tmp_path / "runs", free_port()
    log = tmp_path / "locust.log"
    secret = "not-for-the-page-9c1f"
    web = f"http://127.0.0.1:{port}"
    argv = ["--run-time", "20", "--run-dir", str(root), "--admin-token", secret, "--drain", "3", "--max-retries", "2"]
    with locust_running(
        "--web-host", "127.0.0.1", "--web-port", str(port), *argv, log=log, locustfile="locustfile.py"
    ) as proc:  # fmt: skip
        wait_for(lambda: http_up(web + "/"), 20, "the web UI")
        with urllib.request.urlopen(web + "/", timeout=10) as r:
            page = r.read().decode()
        stop(proc)
    # Locust 2.47 puts its template data into the page as `window.templateArgs = {...}` (webui/dist/index.html).
    found = re.search(r"window\.templateArgs\s*=\s*(\{.*?\})\s*(?:;|\n|</script>)", page, re.S)
    assert found, page[:2000]
    extra = json.loads(found.group(1))["extra_options"]
    expected = _web_ui_options(argv)
    assert set(expected) <= set(extra), sorted(set(expected) - set(extra))
    assert {"run_dir", "stub_fault", "ws_path", "gap_weights"} <= set(expected) and "record_buffer_max" not in extra
    assert extra["admin_token"]["is_secret"] and extra["admin_token"]["default_value"] == ""
    # Each field starts at the value the command line gave (or the option's default): what this run uses.
    shown = {k: extra[k]["default_value"] for k in expected if not extra[k]["is_secret"]}
    assert shown == {k: v for k, v in expected.items() if k in shown}
    assert shown["run_dir"] == str(root) and shown["drain"] == 3.0 and shown["max_retries"] == 2
    assert secret not in page
    run = only_run(root)
    m = meta(run)
    assert m["complete"] and m["exit_reason"] == "stopped, then quit"
    assert secret not in (run / "meta.json").read_text()


def test_scenario_settings_picked_in_the_web_ui_parse_as_their_options():
    """A scenario's settings (config-file text) take each option's own type: "false" stays false."""
    from harness import options as harness_options
    from scenarios.catalog import SCENARIOS

    _web_ui_options([])  # builds the parser the harness keeps
    assert harness_options.parse_value("flap_final_turn", "false") is False
    assert harness_options.parse_value("flap_final_turn", "true") is True
    assert harness_options.parse_value("drain", 3) == 3.0
    assert harness_options.parse_value("gap_weights", "6,3,1") == "6,3,1"
    for scenario in SCENARIOS.values():
        for key, value in scenario.options.items():
            harness_options.parse_value(key.replace("-", "_"), value)  # every setting is a real option


def test_backend_settings_from_the_web_ui_form_parse_or_keep_the_start_up_value():
    """The form posts backend settings as text, "" when blank: parsed as the command line would; a bad
    one is named and the start-up value is kept (the backend is never started with it)."""
    from types import SimpleNamespace

    from harness import options as harness_options

    _web_ui_options([])
    form = SimpleNamespace(
        stub_hb_interval_ms="1000", stub_resume_window="", stub_chunk_delay_ms="-5", stub_restart_at="12",
        stub_rate_limit="many", stub_token_ttl=6.0, stub_fault=[],
    )  # fmt: skip
    problems = harness_options.settle_form_values(form, {"stub_chunk_delay_ms": 20})
    assert (form.stub_hb_interval_ms, form.stub_resume_window, form.stub_restart_at) == (1000, None, 12.0)
    assert (form.stub_chunk_delay_ms, form.stub_rate_limit, form.stub_token_ttl) == (20, None, 6.0)
    assert len(problems) == 2 and problems[0].startswith("--stub-chunk-delay-ms: '-5'"), problems
    assert problems[1].startswith("--stub-rate-limit: "), problems
    assert harness_options.stub_args(form)[:4] == ["--hb-interval-ms", "1000", "--token-ttl", "6.0"]


def _swarm(web: str, form: list[tuple[str, str]]) -> dict:
    data = urllib.parse.urlencode(form).encode()
    with urllib.request.urlopen(web + "/swarm", data=data, timeout=15) as r:
        return json.loads(r.read())


def test_backend_settings_and_faults_picked_in_the_form_restart_the_embedded_backend(tmp_path):
    """Faults (a multiple select) and backend settings posted by the form: the embedded backend restarts
    with them before the users start; a value that does not parse is named in the log and not used."""
    root, port = tmp_path / "runs", free_port()
    log = tmp_path / "locust.log"
    web = f"http://127.0.0.1:{port}"
    with locust_running(
        "--web-host", "127.0.0.1", "--web-port", str(port), "--run-dir", str(root), "--stub-hb-interval-ms", "700",
        "--drain", "0", log=log, locustfile="locustfile.py",
    ) as proc:  # fmt: skip
        wait_for(lambda: http_up(web + "/"), 20, "the web UI")
        form = [("user_count", "2"), ("spawn_rate", "2"), ("stub_fault", "leak"), ("stub_fault", "no-reap"),
                ("stub_resume_window", "7"), ("stub_chunk_delay_ms", "soon")]  # fmt: skip
        assert _swarm(web, form)["success"], log.read_text()[-2000:]
        backend = wait_for(
            lambda: (b := meta(only_run(root))["backend"])["reconfigured"] and b,
            20,
            "the restart",
        )
        assert stop(proc) == 0, log.read_text()[-3000:]
    args = backend["args"]
    assert backend["faults"] == ["leak", "no-reap"] and args.count("--fault") == 2, backend
    assert args[args.index("--resume-window") + 1] == "7.0" and args[args.index("--hb-interval-ms") + 1] == "700"
    assert "--chunk-delay-ms" not in args, args
    text = log.read_text()
    assert "--stub-chunk-delay-ms: 'soon' is not a number; the start-up value is kept" in text, text[-3000:]
    # no web request answered 500 (a pid or a run id may well contain the digits)
    assert "Traceback" not in text and not re.search(r"\b500 Internal|HTTP/1\.[01]\" 500\b", text), text[-3000:]
