"""duplicate-agent: one live agent per session, always."""

from __future__ import annotations

import pandas as pd

from contract.events import RESUMED_DETAILS, Detail, Kind

from ..rundir import Run
from .base import Status, Verdict, evidence_rows, inconclusive, utc

NAME = "duplicate-agent"

#: The open detail of a resume that came back with another identity.
AGENT_CHANGED = Detail.RESUMED_AGENT_CHANGED


def resumes(events: pd.DataFrame) -> pd.DataFrame:
    """Welcomes answering a resume (kept or not)."""
    return events[(events["kind"] == Kind.WELCOME) & events["detail"].isin(RESUMED_DETAILS) & (events["n"] > 0)]


def takeovers(events: pd.DataFrame) -> pd.DataFrame:
    """Takeover probes: the older connection's end (ok) or both connections left alive (ok=0)."""
    probe = events["detail"].isin([Detail.TAKEN_OVER, Detail.NOT_TAKEN_OVER])
    return events[(events["kind"] == Kind.CLOSE) & probe & (events["n"] > 0)]


def backend_duplicates(server_stats: pd.DataFrame) -> pd.DataFrame:
    """Samples where the backend reported an extra agent: a session with two, or its counter above 0."""
    s = server_stats.dropna(subset=["duplicate_agents_total"])
    return s[(s["duplicate_agents_total"] > 0) | (s["max_agents_per_session"] > 1)]


def judge(run: Run, th: dict) -> Verdict:
    """Fails if the backend ever reports more than one live agent for a session
    (``max_agents_per_session`` > 1 or ``duplicate_agents_total`` > 0 in
    ``/stats``), a client sees its agent id change on a successful resume, or a
    takeover probe (``--flap-takeover-share``: a second connection resumes a
    session whose first is still open) finds both connections alive: the form a
    duplicate takes where the identity is the client's own (an MQTT client id).

    figure: duplicates seen (backend counter + client agent changes + connections
    not taken over); threshold ``max_duplicates`` (0); n: resumes checked. Without
    ``/stats`` agent counts the backend's side is unknown: inconclusive, unless the
    clients saw a duplicate, or takeover probes checked it from the clients' side.
    """
    limit = th["duplicate_agent"]["max_duplicates"]
    resumed = resumes(run.events)
    probes = takeovers(run.events)
    n_resumed = int(resumed["n"].sum())
    both_alive = probes[probes["ok"] == 0]
    changed = pd.concat([resumed[resumed["detail"] == AGENT_CHANGED], both_alive]).sort_values("ts")
    stats = run.server_stats.dropna(subset=["duplicate_agents_total"])
    dup = backend_duplicates(run.server_stats)
    # The counter restarts at 0 with each backend process: add up the last value of each.
    backend_count = int(stats.groupby("pid")["duplicate_agents_total"].max().sum()) if len(stats) else 0
    figure = backend_count + len(changed)
    what = ["both connections alive after a takeover" if i in both_alive.index else "agent id changed on resume"
            for i in changed.index]  # fmt: skip
    evidence = evidence_rows(changed.assign(what=what), ("ts", "user", "session", "agent", "what"))
    if len(dup):
        first = dup.iloc[0]
        evidence.insert(
            0,
            {
                "time": utc(first["ts"]),
                "what": "backend reported a duplicate agent",
                "max_agents_per_session": first["max_agents_per_session"],
                "duplicate_agents_total": first["duplicate_agents_total"],
            },
        )
    figures = dict(
        figure=figure,
        unit="duplicates",
        threshold=limit,
        n=n_resumed,
        evidence=evidence,
        details={
            "backend_duplicate_agents_total": backend_count,
            "backend_max_agents_per_session": float(stats["max_agents_per_session"].max()) if len(stats) else None,
            "client_agent_changes": len(changed) - len(both_alive),
            "takeovers_checked": len(probes),
            "takeovers_both_alive": len(both_alive),
            "resumes": n_resumed,
            "stats_samples": len(stats),
        },
    )
    if figure > limit or len(dup):
        return Verdict(
            NAME,
            Status.FAIL,
            f"{figure} duplicate agent(s) (backend {backend_count}, clients {len(changed) - len(both_alive)}"
            + (f", both connections alive after {len(both_alive)} takeover(s))" if len(both_alive) else ")"),
            **figures,
        )
    # A backend that has no agent counts to give (an MQTT broker) is judged from the clients' side; one
    # whose figures went missing or broke stays unknown.
    if stats.empty and len(probes) and n_resumed and not run.problem_with("server_stats.csv"):
        return Verdict(
            NAME,
            Status.PASS,
            f"one live connection per session across {len(probes)} takeovers and {n_resumed} resumes "
            "(judged from the clients' side: the backend reports no agent counts)",
            **figures,
        )
    if stats.empty:
        why = run.problem_with("server_stats.csv") or (
            "no backend /stats samples"
            if run.server_stats.empty
            else "the backend reports no agent counts (max_agents_per_session, duplicate_agents_total)"
        )
        return inconclusive(NAME, f"the backend's side is unknown: {why}", **figures)
    if not n_resumed:
        return inconclusive(NAME, "no session was resumed: nothing could duplicate an agent", **figures)
    probed = f" and {len(probes)} takeovers" if len(probes) else ""
    return Verdict(NAME, Status.PASS, f"one agent per session across {n_resumed:,} resumes{probed}", **figures)
