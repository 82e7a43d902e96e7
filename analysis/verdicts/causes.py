"""Why a client was away: planned gaps, unplanned losses, backend restarts."""

from __future__ import annotations

import numpy as np

from agentws.events import Kind
from agentws.protocol import Close

from ..rundir import Run

#: Disconnect details of a planned brief absence (users/flapping.py, users/conversation.py).
BRIEF_GAPS = ("flap_close", "flap_abrupt", "planned_gap_brief")
#: Disconnect details of an absence the client did not choose.
UNPLANNED = ("server_close", "lost", "heartbeat_dead")
GOING_AWAY = str(int(Close.SERVICE_RESTART))
#: 1012 closes further apart than this belong to different restarts.
STORM_SEPARATION_S = 30.0
#: A restart's storm is over this long after the backend is back (or after it went down, if unknown).
STORM_TAIL_S = 5.0


def restart_windows(run: Run) -> list[tuple[float, float]]:
    """(down, settled) of each backend restart: the harness's record, else each storm of 1012 closes.

    ``settled`` is :data:`STORM_TAIL_S` after the backend was ready again (or after
    it went down, for a restart seen only through the clients).
    """
    recorded = [r for r in (run.meta.get("backend") or {}).get("restarts") or [] if "ts" in r]
    if recorded:
        return [(float(r["ts"]), float(r.get("ready_ts") or r["ts"]) + STORM_TAIL_S) for r in recorded]
    ev = run.events
    closes = np.sort(ev.loc[(ev["kind"] == Kind.CLOSE) & (ev["code"] == GOING_AWAY), "ts"].to_numpy())
    starts = closes[np.r_[True, np.diff(closes) > STORM_SEPARATION_S]] if len(closes) else closes
    return [(float(t), float(t) + STORM_TAIL_S) for t in starts]
