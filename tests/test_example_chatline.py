"""docs/ADAPTERS.md's worked example: a backend speaking its own JSON dialect, judged through its adapter.

The adapter on its own (frames in, observations out, milliseconds), then real
runs: ``locust --target chatline`` (the harness starts ``examples/chatline/server.py``
and speaks its protocol through ``examples.chatline.adapter:Chatline``) with every
user class, and the analysis's verdicts. The clean server passes what the run exercises; with its
planted bug (pushes to an absent client dropped) delivery fails, naming them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contract.events import FORMAT, CloseReason, Detail, Kind
from examples.chatline.adapter import Chatline
from tests.locustfiles.harness_runs import ROOT, only_run, start_locust
from tests.locustfiles.verdict_runs import assert_generator_fit
from users.protocols import load
from users.protocols.base import Credentials, Opened, Send

USERS = ("ConversationUser", "FlappingUser", "HeartbeatUser", "ZombieUser", "TokenRefreshUser")


def test_the_adapter_loads_by_module_and_class():
    assert load("examples.chatline.adapter:Chatline", str(ROOT)) is Chatline


def test_chatline_frames_become_observations():
    a = Chatline("u-1")
    assert json.loads(a.open(Credentials("tok"), resume=True)[0]) == {"op": "auth", "bearer": "tok"}
    (opened,) = a.receive(json.dumps({"op": "ready", "sid": "s1", "agent": "g", "restored": False, "turns": 0,
                                      "ping_every_ms": 100, "idle_after_ms": 250, "keep_s": 3}))  # fmt: skip
    assert isinstance(opened, Opened) and opened.observation.detail == Detail.NEW
    assert (a.heartbeat_interval_ms, a.idle_timeout_ms, a.session.resume_window_s) == (100, 250, 3.0)
    (ping,) = a.receive('{"op":"ping","n":4}')
    assert ping == Send(('{"op":"pong","n":4}',), server_ping=True)
    say = json.loads(a.send_turn("u-1-1", "hi")[0])
    parts = [{"op": "part", "no": i + 1, "ref": say["ref"], "turn": 1, "idx": i, "text": t} for i, t in enumerate("ab")]
    assert [a.receive(json.dumps(p)) for p in parts] == [[], []]
    import hashlib

    end = {"op": "end", "no": 3, "ref": say["ref"], "turn": 1, "parts": 2, "digest": hashlib.sha256(b"ab").hexdigest()}
    (done,) = a.receive(json.dumps(end))
    assert (done.kind, done.ok, done.detail) == (Kind.STREAM_DONE, True, Detail.COMPLETE)
    (dup,) = a.receive(json.dumps(parts[0]))
    assert (dup.kind, dup.detail) == (Kind.DUP_FRAME, Detail.PIECE)
    gap = a.receive(json.dumps({"op": "push", "no": 5, "id": 1, "body": {}}))
    assert [(o.kind, o.detail) for o in gap] == [(Kind.CHUNK_GAP, Detail.SEQ_GAP), (Kind.NOTIFY, Detail.RECEIVED)]
    assert json.loads(a.acknowledge()[0]) == {"op": "seen", "upto": 5}
    assert json.loads(a.ask_history(9)[0]) == {"op": "history", "ref": 9}
    (log,) = a.receive(json.dumps({"op": "log", "ref": 9, "turns": [{"turn": 1, "ref": say["ref"], "text": "hi",
                                                                     "digest": end["digest"]}]}))  # fmt: skip
    assert (log.request, log.request_id) == ("history", 9)
    assert log.body["turns"] == [{"turn": 1, "cid": "u-1-1", "text": "hi", "reply_sha256": end["digest"]}]
    assert a.session.compare_history(log.body["turns"]) == ""  # the session's own comparison: it matches
    assert json.loads(a.open(Credentials("tok"), resume=True)[0]) == {"op": "auth", "bearer": "tok", "sid": "s1",
                                                                      "after": 5}  # fmt: skip
    assert (a.closed(4000, "idle"), a.closed(4002, ""), a.closed(None, "")) == (
        CloseReason.IDLE_REAPED, CloseReason.TAKEN_OVER, CloseReason.LOST,
    )  # fmt: skip


# -- real runs ---------------------------------------------------------------------------------
def judged_run(tmp_path: Path, *server_args: str) -> tuple[Path, dict[str, dict]]:
    """``--target chatline``: the harness starts the example server itself, its protocol the target's adapter."""
    log = tmp_path / "locust.log"
    proc = start_locust(
        "--headless", "-u", "10", "-r", "10", "--run-time", "25", "--target", "chatline",
        "--target-args", " ".join(["--resume-window-s", "3", *server_args]),
        "--token-ttl-s", "6", "--refresh-ahead-s", "2", "--zombie-max-wait-s", "8", "--drain", "3",
        "--run-dir", str(tmp_path / "runs"), "--verdicts", *USERS,
        log=log, locustfile="locustfile.py",
    )  # fmt: skip
    try:
        code = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code in (0, 1, 3), log.read_text()[-3000:]
    run = only_run(tmp_path / "runs")
    meta = json.loads((run / "meta.json").read_text())
    assert meta["protocol"]["name"] == "chatline" and meta["target"] == "chatline", meta.get("protocol")
    assert meta["format"] == FORMAT and meta["backend"]["target"] == "chatline", meta["backend"]
    return run, {v["name"]: v for v in json.loads((run / "verdicts.json").read_text())["verdicts"]}


def story(verdicts: dict[str, dict]) -> str:
    return "\n".join(f"{n}: {v['status']}: {v['summary']}" for n, v in verdicts.items())


@pytest.mark.timeout(240)
def test_the_clean_chatline_server_passes_what_the_run_exercises(tmp_path):
    run, verdicts = judged_run(tmp_path)
    assert_generator_fit(run)
    for name in ("delivery", "context", "zombie", "refresh"):
        assert verdicts[name]["status"] == "pass", story(verdicts)
    # chatline's /stats has no agent counters: the backend's side of duplicate-agent is unknown, and said so
    assert verdicts["duplicate-agent"]["status"] == "inconclusive", story(verdicts)
    assert "fail" not in {v["status"] for v in verdicts.values()}, story(verdicts)
    assert "pushes once each in order" in verdicts["delivery"]["summary"], story(verdicts)


@pytest.mark.timeout(240)
def test_a_push_lost_while_the_client_is_away_fails_delivery(tmp_path):
    _, verdicts = judged_run(tmp_path, "--lose-while-away")
    delivery = verdicts["delivery"]
    assert delivery["status"] == "fail", story(verdicts)
    assert any("push missing after resume" in str(e) for e in delivery["evidence"]), delivery["evidence"]
