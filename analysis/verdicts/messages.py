"""delivery and context: nothing lost, doubled or reordered; a resumed session is the same session."""

from __future__ import annotations

import pandas as pd

from contract.events import Detail, Kind, Role

from ..rundir import Run
from .base import Status, Verdict, evidence_rows, inconclusive, skipped

DELIVERY = "delivery"
CONTEXT = "context"
#: Open details of a resume that kept the identity but not its context.
CONTEXT_CHANGED = (Detail.RESUMED_TURNS_DIFFER, Detail.RESUMED_CTX_HASH_CHANGED)
EXPIRED_CLEANLY = Detail.EXPIRED_CLEANLY


def ran(run: Run, role: Role) -> bool:
    """Did any user in ``role`` take part (by meta.json, or by its events)?"""
    return bool((run.meta.get("roles") or {}).get(role)) or bool((run.events["role"] == role).any())


def delivery_failures(events: pd.DataFrame) -> pd.DataFrame:
    """Every sequenced frame lost (a gap), delivered twice, out of order, or a stream with a bad sha256."""
    kind = events["kind"]
    failed = (kind.isin([Kind.CHUNK_GAP, Kind.DUP_FRAME])) | (
        kind.isin([Kind.STREAM_DONE, Kind.NOTIFY]) & (events["ok"] == 0)
    )
    return events[failed & (events["n"] > 0)]


def judge_delivery(run: Run, th: dict) -> Verdict:
    """Fails on any sequenced frame lost (``chunk_gap``: a seq or chunk index
    skipped), delivered twice (``dup_frame``, ``notify`` duplicate), out of order
    (``notify`` out_of_order), a push missing after a resume, or a streamed reply
    that is incomplete or whose sha256 does not match (``stream_done`` ok=0).

    The definition has two parts, and a run may exercise only one: streamed
    replies (a ``stream_done``) and pushes to a detached session (a ``notify``:
    the offline queue; the users push only with an admin token). A part not
    exercised is named in the summary; when the thresholds require it
    (``require_streams``, ``require_pushes``: 1) and no failure was found, the
    verdict is inconclusive, never a pass that says nothing about that part.
    Pushes are required only of a run with ConversationUsers (the users that
    have the backend push while they are away).

    figure: failures; threshold ``max_failures`` (0); n: streams completed plus
    pushes received.
    """
    limit = th["delivery"]["max_failures"]
    ev = run.events
    checked = ev[ev["kind"].isin([Kind.STREAM_DONE, Kind.NOTIFY]) & (ev["n"] > 0)]
    failures = delivery_failures(ev)
    figures = dict(
        figure=len(failures),
        unit="frames",
        threshold=limit,
        n=int(checked["n"].sum()),
        evidence=evidence_rows(failures, ("ts", "user", "session", "kind", "seq", "detail")),
        details={
            "by_kind": {
                f"{k}:{d}": int(c) for (k, d), c in failures.groupby(["kind", "detail"], observed=True).size().items()
            },
            "streams_complete": count(ev, (ev["kind"] == Kind.STREAM_DONE) & (ev["ok"] == 1)),
            "pushes_received": count(ev, (ev["kind"] == Kind.NOTIFY) & (ev["ok"] == 1)),
            "replays": count(ev, ev["kind"] == Kind.REPLAY),
        },
    )
    if len(failures) > limit:
        kinds = ", ".join(f"{c} {k}" for k, c in figures["details"]["by_kind"].items())
        return Verdict(DELIVERY, Status.FAIL, f"{len(failures)} delivery failure(s): {kinds}", **figures)
    if checked.empty:
        if not ran(run, Role.CONVERSATION):
            return skipped(DELIVERY, "no conversation user in this run: no streams or pushes to check")
        return inconclusive(DELIVERY, "no stream finished and no push arrived: nothing was checked", **figures)
    d = figures["details"]
    kinds = checked["kind"]
    pushing = ran(run, Role.CONVERSATION)
    no_streams = run.lacks("stream")
    unexercised = {
        "streams": ""
        if (kinds == Kind.STREAM_DONE).any()
        else "streams (the protocol has no streamed replies)"
        if no_streams
        else "no streamed reply finished: replies cut off mid-stream were never checked",
        "pushes": (
            "no push was sent to a detached session: the offline queue was never exercised "
            "(the users push only with an admin token: --admin-token)"
            if pushing
            else "pushes (no conversation user: the offline queue is not part of this run)"
        )
        if not (kinds == Kind.NOTIFY).any()
        else "",
    }
    d["not_exercised"] = [part for part, why in unexercised.items() if why]
    required = [
        p
        for p in d["not_exercised"]
        if th["delivery"][f"require_{p}"] and (p != "pushes" or pushing) and (p != "streams" or not no_streams)
    ]
    gaps = "; ".join(unexercised[p] for p in d["not_exercised"])
    pushes_text = f"{d['pushes_received']} pushes once each in order"
    checked_text = (
        pushes_text if no_streams else f"{d['streams_complete']} streams complete with matching sha256, {pushes_text}"
    )
    if required:
        return inconclusive(DELIVERY, f"{checked_text}, but {gaps}", **figures)
    return Verdict(DELIVERY, Status.PASS, checked_text + (f"; not exercised: {gaps}" if gaps else ""), **figures)


def judge_context(run: Run, th: dict) -> Verdict:
    """Fails when a resume inside the window came back with another turn count
    or context hash (``welcome`` resumed:turns_differ / resumed:ctx_hash_changed),
    when the history compared after a resume differs (``history_check`` ok=0),
    or when a gap past the window did not start clean with ``reason: expired``.

    figure: failures; threshold ``max_failures`` (0); n: history checks.
    """
    limit = th["context"]["max_failures"]
    ev = run.events
    counted = ev["n"] > 0
    checks = ev[(ev["kind"] == Kind.HISTORY_CHECK) & counted]
    changed = ev[(ev["kind"] == Kind.WELCOME) & ev["detail"].isin(CONTEXT_CHANGED) & counted]
    failures = pd.concat([checks[checks["ok"] == 0], changed]).sort_values("ts")
    expired = count(checks, checks["detail"] == EXPIRED_CLEANLY)
    kept = count(checks, (checks["ok"] == 1) & (checks["detail"] != EXPIRED_CLEANLY))
    uncompared = count(checks, checks["detail"] == Detail.IDENTITY_KEPT)
    figures = dict(
        figure=int(failures["n"].sum()),
        unit="sessions",
        threshold=limit,
        n=int(checks["n"].sum()),
        evidence=evidence_rows(failures, ("ts", "user", "session", "kind", "detail")),
        details={
            "context_kept": kept,
            "history_not_compared": uncompared,
            "expired_cleanly": expired,
            "welcome_context_changed": len(changed),
        },
    )
    if figures["figure"] > limit:
        why = gaps_summary(after_gaps(ev, pd.concat([checks, changed]), failures.index))
        summary = f"{figures['figure']} session(s) came back with other context: {why}"
        return Verdict(CONTEXT, Status.FAIL, summary, **figures)
    if checks.empty:
        if not ran(run, Role.CONVERSATION):
            return skipped(CONTEXT, "no conversation user in this run: no history to compare")
        return inconclusive(CONTEXT, "no session was resumed and compared", **figures)
    tail = f", {expired} expired cleanly past the window" if expired else "; no gap went past the window"
    if uncompared and run.lacks("history"):
        # Identity and turns are all such a protocol keeps (an MQTT session: its client id, subscriptions and
        # queue, the queue judged by delivery): judged on that, and said so.
        return Verdict(
            CONTEXT,
            Status.PASS,
            f"{kept} resumes kept their session (the protocol keeps no history to compare){tail}",
            **figures,
        )
    if uncompared:
        # A protocol that may have a history but gave none to compare: half the evidence, never a pass on it.
        return inconclusive(
            CONTEXT,
            f"{kept} resumes kept agent and turns, but no history was compared ({uncompared} without one: the "
            f"protocol has none){tail}",
            **figures,
        )
    return Verdict(CONTEXT, Status.PASS, f"{kept} resumes kept agent, turns and history{tail}", **figures)


def count(frame: pd.DataFrame, which: pd.Series) -> int:
    """How many events the rows picked by ``which`` stand for (their ``n``)."""
    return int(frame.loc[which, "n"].sum())


def after_gaps(events: pd.DataFrame, opens: pd.DataFrame, failed: pd.Index) -> pd.DataFrame:
    """Each compared open (``n`` events) with the gap before it (its ``gap``: the user's last disconnect's
    detail; a welcome's is its raw disconnect's), how long a failed one's user was away, and whether it failed."""
    drops = events.loc[(events["kind"] == Kind.DISCONNECT) & (events["user"] != ""), ["ts", "user", "detail"]]
    drops = drops.rename(columns={"ts": "dropped", "detail": "dropped_gap"}).sort_values("dropped")
    drops = drops.assign(user=drops["user"].astype(str), dropped_gap=drops["dropped_gap"].astype(str))
    opened = opens.assign(failed=opens.index.isin(failed))[["ts", "user", "failed", "detail", "gap", "n"]]
    opened = opened.assign(user=opened["user"].astype(str), gap=opened["gap"].astype(str)).sort_values("ts")
    joined = pd.merge_asof(opened, drops, left_on="ts", right_on="dropped", by="user", direction="backward")
    gap = joined["gap"].where(joined["gap"] != "", joined["dropped_gap"])
    return joined.assign(away_s=joined["ts"] - joined["dropped"], gap=gap.fillna("none").replace("", "none"))


def gaps_summary(opens: pd.DataFrame) -> str:
    """By the gap before them: how many failed, how long those users were away, and what was found; then
    the gaps whose every resume kept its context."""
    label = opens["gap"].str.removeprefix("planned_gap_").str.replace("_", " ")
    opens = opens.assign(label=label, failures=opens["n"].where(opens["failed"], 0))
    tally = opens.groupby("label", sort=False).agg(n=("n", "sum"), failed=("failures", "sum"))
    failed = opens[opens["failed"]]
    tally["away_s"] = failed.groupby("label")["away_s"].median()
    found = failed.groupby("label")["detail"].agg(lambda d: ", ".join(sorted(set(d))))
    failing = tally[tally["failed"] > 0].sort_values("failed", ascending=False)
    parts = [
        f"{int(t.failed)} of {int(t.n)} after {name} gaps (away {t.away_s:.1f} s median: {found[name]})"
        for name, t in failing.iterrows()
    ]
    kept = tally[tally["failed"] == 0]
    if len(kept):
        parts.append("kept after " + ", ".join(f"all {int(t.n)} {name} gaps" for name, t in kept.iterrows()))
    return "; ".join(parts)
