"""Why a client was away: planned gaps, unplanned losses, backend restarts."""

from __future__ import annotations

import numpy as np

from contract.events import BRIEF_GAPS, UNPLANNED, CloseReason, Kind  # noqa: F401  (BRIEF_GAPS, UNPLANNED: here)

from ..rundir import Run

#: Closes for a restart further apart than this belong to different restarts.
STORM_SEPARATION_S = 30.0
#: A restart's storm is over this long after the backend is back (or after it went down, if unknown).
STORM_TAIL_S = 5.0


def restart_windows(run: Run) -> list[tuple[float, float]]:
    """(down, settled) of each backend restart: the harness's record, else each storm of "restarting" closes.

    ``settled`` is :data:`STORM_TAIL_S` after the backend was ready again (or after
    it went down, for a restart seen only through the clients).
    """
    recorded = [r for r in (run.meta.get("backend") or {}).get("restarts") or [] if "ts" in r]
    if recorded:
        return [(float(r["ts"]), float(r.get("ready_ts") or r["ts"]) + STORM_TAIL_S) for r in recorded]
    ev = run.events
    closes = np.sort(ev.loc[(ev["kind"] == Kind.CLOSE) & (ev["reason"] == CloseReason.RESTARTING), "ts"].to_numpy())
    starts = closes[np.r_[True, np.diff(closes) > STORM_SEPARATION_S]] if len(closes) else closes
    return [(float(t), float(t) + STORM_TAIL_S) for t in starts]
