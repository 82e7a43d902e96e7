"""Reading a run directory: every file the verdicts need, with what was wrong with it.

The run directory is the one seam between a run and its analysis (DESIGN.md).
Nothing here raises on bad input: a missing, empty, truncated or corrupt file
gives an empty frame with the expected columns and a :class:`Problem` naming
the file and what is wrong, so each verdict can say *inconclusive because ...*
instead of crashing or passing silently.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals

from contract.events import (
    ACTIVITY_COLUMNS,
    EVENT_COLUMNS,
    EVENT_COLUMNS_V1,
    FORMAT,
    FORMATS_READ,
    GAP_KINDS,
    SAMPLE_COLUMNS,
    SAMPLE_COLUMNS_ADDED,
    STORED_EVENT_COLUMNS,
    Kind,
)

from . import columnar
from .tallies import bins_for, counted_events

#: Event columns read as categories: few distinct values, millions of rows.
_EVENT_DTYPES = {
    "ts": "float64",
    "worker": "category",
    "user": "category",
    "role": "category",
    "session": "category",
    "kind": "category",
    "ok": "float64",  # float first: a truncated last row leaves a blank
    "latency_ms": "float64",
    "agent": "category",
    "seq": "float64",
    "code": "category",
    "reason": "category",
    "detail": "category",
    "idle_timeout_ms": "float64",
    "retry_after_ms": "float64",
    "note": "category",
}
#: Text columns of the events: categories without NaN ("" where blank).
_EVENT_TEXT = ("worker", "user", "role", "session", "kind", "agent", "code", "reason", "detail", "note", "gap")
#: The events frame the verdicts read: every stored column, and ``span_s``: how long a row of counted
#: events covers from its ``ts`` (0 for a raw row, the bin's length for counts read from the tallies).
FRAME_COLUMNS = (*STORED_EVENT_COLUMNS, "span_s")

_SAMPLE_DTYPES = {"source": "category"} | {c: "float64" for c in SAMPLE_COLUMNS if c != "source"}

#: The samples.csv source of the machine's own rows.
MACHINE = "machine"

#: server_stats.csv columns the verdicts read (the file has every field of the backend's /stats).
SERVER_STATS_USED = (
    "ts",
    "pid",
    "connections",
    "max_agents_per_session",
    "duplicate_agents_total",
    "zombies_reaped_total",
)


@dataclass(frozen=True)
class Problem:
    """Something wrong with one input file: names the file and what is wrong."""

    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


@dataclass
class Run:
    """One run directory, loaded."""

    path: Path
    meta: dict
    events: pd.DataFrame
    samples: pd.DataFrame
    server_stats: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)
    #: users running per interval and role (``interval, role, users``; all workers added up)
    activity: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["interval", "role", "users"]))
    #: where the events come from, as problems name it: ``events.csv`` (format 2) or ``events`` (format 3)
    events_file: str = "events.csv"

    @property
    def counted(self) -> int:
        """How many events the run's rows stand for (counted routine outcomes and raw rows)."""
        return int(self.events["n"].sum())

    @property
    def run_id(self) -> str:
        return str(self.meta.get("run_id") or self.path.name)

    def problem_with(self, file: str) -> Problem | None:
        """The first problem of ``file``, if any."""
        return next((p for p in self.problems if p.file == file), None)

    @property
    def faults(self) -> list[str]:
        return list((self.meta.get("backend") or {}).get("faults") or [])

    @property
    def load_window(self) -> tuple[float, float]:
        """(start, end) of the load in UNIX seconds: first test start to the last test stop (or last event)."""
        starts = self.meta.get("test_starts_utc") or []
        stops = self.meta.get("test_stops_utc") or []
        ts = self.events["ts"]
        start = min(starts) if starts else (float(ts.min()) if len(ts) else float("nan"))
        if stops and (not starts or max(stops) >= max(starts)):
            end = max(stops)
        elif drain := self.meta.get("drain"):
            end = float(drain.get("from_utc", "nan"))
        else:
            end = float(ts.max()) if len(ts) else float("nan")
        return start, end

    @property
    def drain_seconds(self) -> float:
        return float((self.meta.get("drain") or {}).get("seconds") or 0.0)

    @property
    def capabilities(self) -> frozenset[str] | None:
        """What the run's protocol can do (users/protocols/base.py ``Capability``), None when meta.json
        does not say (a run directory written before it did)."""
        listed = (self.meta.get("protocol") or {}).get("capabilities")
        return frozenset(listed) if isinstance(listed, list) else None

    def lacks(self, capability: str) -> bool:
        """True only when the protocol is known not to have ``capability``."""
        caps = self.capabilities
        return caps is not None and capability not in caps

    def backend_samples(self) -> pd.DataFrame:
        """samples.csv rows of the backend, in time order."""
        s = self.samples
        return s[s["source"] == "backend"].sort_values("ts", kind="stable").reset_index(drop=True)

    def harness_samples(self) -> pd.DataFrame:
        """samples.csv rows of the Locust processes (local, master, worker:<id>)."""
        s = self.samples
        return s[~s["source"].isin(["backend", MACHINE])].reset_index(drop=True)

    def machine_samples(self) -> pd.DataFrame:
        """samples.csv rows of the machine the master ran on (CPU % of all cores, run queue)."""
        s = self.samples
        return s[s["source"] == MACHINE].reset_index(drop=True)


def load(path: str | Path, in_progress: bool = False) -> Run:
    """Read a run directory. Raises :class:`NotARunDirectory` if ``path`` is no directory at all (or one of
    another format). ``in_progress``: the run is still going (the web UI's live verdicts): a directory not
    closed yet is expected, not a problem."""
    path = Path(path)
    if not path.is_dir():
        raise NotARunDirectory(f"{path}: not a directory" if path.exists() else f"{path}: no such directory")
    problems: list[Problem] = []
    meta = _read_meta(path / "meta.json", problems, in_progress)
    version = _check_format(path, meta)
    samples = _read_csv(path / "samples.csv", SAMPLE_COLUMNS, _SAMPLE_DTYPES, problems, added=SAMPLE_COLUMNS_ADDED)
    if version == 2:
        events = _read_csv(path / "events.csv", EVENT_COLUMNS, _EVENT_DTYPES, problems)
        events = _clean_events(_as_counted(events))
        activity = _activity_of(events)
        events_file = "events.csv"
    else:
        events, activity = _read_tables(path, meta, samples, problems, in_progress)
        events_file = "events"
    # The counters the verdicts read are agentws/1's /stats (PROTOCOL.md): another protocol's backend (an MQTT
    # broker's $SYS figures) lacking them is no input problem, only evidence its verdicts do not have.
    protocol = (meta.get("protocol") or {}).get("name") or "agentws"
    foreign = SERVER_STATS_USED[1:] if protocol != "agentws" else ()
    server_stats = _read_csv(
        path / "server_stats.csv", SERVER_STATS_USED, None, problems, optional_columns=True, added=foreign
    )
    return Run(path, meta, events, samples, server_stats, problems, activity, events_file)


class NotARunDirectory(Exception):
    """The path given is not a directory (or a run directory of a format this analysis does not read)."""


def _check_format(path: Path, meta: dict) -> int:
    """The run directory's format (meta.json's ``format``); refuse one this analysis does not read, naming its
    version. Without a ``format``: 1 when events.csv lacks the role and reason columns (written before protocols
    had adapters), else 2 when there is an events.csv, else this analysis's own."""
    version = meta.get("format")
    if version is None:
        header = _header(path / "events.csv")
        if header is None:
            return FORMAT if columnar.exists(path / "events") else 2
        if "role" in header or not set(EVENT_COLUMNS_V1) <= set(header):
            return 2  # no format to tell by (corrupt) or the new columns: read it, report what is wrong
        version = 1
    if version not in FORMATS_READ:
        raise NotARunDirectory(
            f"{path}: run directory format {version}; this analysis reads formats "
            f"{', '.join(map(str, FORMATS_READ))} "
            + (
                "(format 1: events.csv judged by agentws/1 close codes and Locust class names; analyse it "
                "with the harness version that wrote it)"
                if version == 1
                else "(a newer harness wrote it: analyse it with that version)"
            )
        )
    return int(version)


# -- format 3: raw rows and tallies ---------------------------------------------------------


def _read_tables(
    path: Path, meta: dict, samples: pd.DataFrame, problems: list[Problem], in_progress: bool
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The raw events, the tallies as rows of counted events (binned: :func:`bins_for`), and the activity."""
    found: dict[str, list[str]] = {}
    for name in ("events", "tallies", "activity"):
        if not columnar.exists(path / name):
            problems.append(Problem(name, "missing"))
    raw = columnar.frame(path / "events", STORED_EVENT_COLUMNS, found.setdefault("events", []), in_progress)
    raw = raw.assign(span_s=0.0)
    binning = bins_for(meta, samples, raw, time.time() if in_progress else columnar.last_write(path / "tallies"))
    counted = counted_events(path / "tallies", binning, FRAME_COLUMNS, found.setdefault("tallies", []), in_progress)
    events = _clean_events(_concat(raw.assign(n=raw["n"].astype(np.int64)), counted))
    activity = columnar.frame(path / "activity", ACTIVITY_COLUMNS, found.setdefault("activity", []), in_progress)
    activity = activity.groupby(["interval", "role"], observed=True)["users"].sum().reset_index()
    for name, messages in found.items():
        problems.extend(Problem(name, m) for m in messages)
    return events, activity


def _as_category(column: pd.Series) -> pd.Series:
    """A text column as a category of str categories (the rows untouched: only the few categories are)."""
    column = column if isinstance(column.dtype, pd.CategoricalDtype) else column.astype(str).astype("category")
    return column.cat.set_categories(pd.Index(column.cat.categories.astype(str), dtype=str))


def _concat(raw: pd.DataFrame, counted: pd.DataFrame) -> pd.DataFrame:
    """Raw and counted rows in one frame, text columns kept as categories (their categories united)."""
    out = {}
    for c in FRAME_COLUMNS:
        a, b = raw[c], counted[c]
        if c in _EVENT_TEXT:
            a, b = (_as_category(x) for x in (a, b))
            out[c] = union_categoricals([a.array, b.array], ignore_order=True)
        else:
            out[c] = np.concatenate([a.to_numpy(), b.to_numpy()])
    return pd.DataFrame(out)


# -- format 2: every event a row ---------------------------------------------------------------


def _as_counted(events: pd.DataFrame) -> pd.DataFrame:
    """events.csv of format 2 as format 3 reads: each row one event (``n`` 1, ``span_s`` 0) and the ``gap``
    before each reconnect and history check (its user's last disconnect before it)."""
    events = events.sort_values("ts", kind="stable").reset_index(drop=True)
    events["n"] = 1
    events["span_s"] = 0.0
    events["gap"] = ""
    kind = events["kind"].astype(str)
    opens = events.loc[kind.isin(GAP_KINDS), ["ts", "user"]].assign(row=lambda f: f.index)
    drops = events.loc[kind == Kind.DISCONNECT, ["ts", "user", "detail"]].rename(columns={"detail": "gap"})
    if len(opens) and len(drops):
        opens["user"], drops["user"] = opens["user"].astype(str), drops["user"].astype(str)
        joined = pd.merge_asof(opens, drops.astype({"gap": str}), on="ts", by="user", direction="backward",
                               allow_exact_matches=False)  # fmt: skip
        events.loc[joined["row"].to_numpy(), "gap"] = joined["gap"].fillna("").to_numpy()
    return events


def _activity_of(events: pd.DataFrame) -> pd.DataFrame:
    """Users running per second and role, from each user's first event to its last (format 2 has no activity)."""
    raw = events[events["user"] != ""]
    life = raw.groupby("user", observed=True).agg(first=("ts", "min"), last=("ts", "max"), role=("role", "first"))
    if life.empty:
        return pd.DataFrame({"interval": pd.Series(dtype=float), "role": pd.Series(dtype=str), "users": 0})
    born = life.assign(t=np.floor(life["first"])).groupby(["t", "role"], observed=True).size()
    gone = life.assign(t=np.floor(life["last"]) + 1).groupby(["t", "role"], observed=True).size()
    change = born.unstack(fill_value=0).sub(gone.unstack(fill_value=0), fill_value=0).sort_index()
    seconds = np.arange(change.index.min(), change.index.max() + 1)
    alive = change.reindex(seconds, fill_value=0).cumsum()
    out = alive.rename_axis("interval").stack().rename("users").reset_index()
    return out[out["users"] > 0].reset_index(drop=True)


def _header(file: Path) -> list[str] | None:
    try:
        with file.open(encoding="utf-8", errors="replace") as f:
            return f.readline().strip().split(",")
    except OSError:
        return None


def _read_meta(file: Path, problems: list[Problem], in_progress: bool = False) -> dict:
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append(Problem(file.name, "missing"))
        return {}
    except (OSError, UnicodeDecodeError) as e:
        problems.append(Problem(file.name, f"unreadable ({e})"))
        return {}
    if not text.strip():
        problems.append(Problem(file.name, "empty"))
        return {}
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        problems.append(Problem(file.name, f"not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})"))
        return {}
    if not isinstance(meta, dict):
        problems.append(Problem(file.name, "not a JSON object"))
        return {}
    if meta.get("complete") is not True and not in_progress:
        problems.append(
            Problem(file.name, "the run never closed its directory (complete is not true): files may be cut short")
        )
    return meta


def _read_csv(
    file: Path,
    columns: tuple[str, ...],
    dtypes: dict | None,
    problems: list[Problem],
    optional_columns: bool = False,
    added: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Read one CSV; on any trouble return what could be read (or nothing) and record the problem.

    ``added``: columns newer than the format's first files; a file without them reads them as blank, no problem.
    """
    empty = pd.DataFrame({c: pd.Series(dtype=(dtypes or {}).get(c, "float64")) for c in columns})
    if not file.exists():
        problems.append(Problem(file.name, "missing"))
        return empty
    if file.stat().st_size == 0:
        problems.append(Problem(file.name, "empty (not even a header)"))
        return empty
    try:
        header = pd.read_csv(file, nrows=0).columns
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as e:
        problems.append(Problem(file.name, f"cannot be parsed ({_short(e)})"))
        return empty
    missing = [c for c in columns if c not in header]
    required = ["ts"] if optional_columns else [c for c in columns if c not in added]
    if any(c in missing for c in required):
        problems.append(Problem(file.name, f"not the expected header: missing column(s) {', '.join(missing)}"))
        return empty
    if reportable := [c for c in missing if c not in added]:
        problems.append(Problem(file.name, f"missing column(s) {', '.join(reportable)}"))
    use = dtypes if dtypes is not None else {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        try:
            frame = pd.read_csv(
                file, dtype={c: t for c, t in use.items() if c in header}, on_bad_lines="warn", low_memory=False
            )
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError):
            frame = _read_leniently(file, header, use)
    skipped = sum(str(w.message).count("Skipping line") for w in caught)
    if _ends_mid_row(file) and len(frame):
        frame = frame.iloc[:-1]  # a writer stopped mid-row: the fields it did write are not to be trusted
        skipped += 1
    for c in missing:
        frame[c] = np.nan
    frame["ts"] = pd.to_numeric(frame["ts"], errors="coerce")
    unreadable = int(frame["ts"].isna().sum())
    if unreadable:
        frame = frame[frame["ts"].notna()].reset_index(drop=True)
    if skipped or unreadable:
        problems.append(Problem(file.name, f"{skipped + unreadable} malformed row(s) skipped (truncated or corrupt)"))
    return frame


def _read_leniently(file: Path, header, dtypes: dict) -> pd.DataFrame:
    """Second try for a corrupt file: everything as text, numbers coerced (bad ones become NaN)."""
    frame = pd.read_csv(
        file, dtype=str, on_bad_lines="warn", encoding="utf-8", encoding_errors="replace", low_memory=False
    )
    for c, t in dtypes.items():
        if c in frame:
            frame[c] = pd.to_numeric(frame[c], errors="coerce") if t == "float64" else frame[c].astype(t)
    return frame


def _clean_events(events: pd.DataFrame) -> pd.DataFrame:
    """Types the verdicts rely on: ok as 0/1 ints, text columns without NaN."""
    events = events.sort_values("ts", kind="stable").reset_index(drop=True)
    events["ok"] = events["ok"].fillna(0).astype("int8")
    for c in _EVENT_TEXT:
        col = events[c]
        if not isinstance(col.dtype, pd.CategoricalDtype):
            col = col.astype("category")
        # read_csv infers the categories' type: codes like 4001 come back as ints; the verdicts compare text.
        col = col.cat.rename_categories([_text(c) for c in col.cat.categories])
        if "" not in col.cat.categories:
            col = col.cat.add_categories([""])
        events[c] = col.fillna("")
    return events


def _ends_mid_row(file: Path) -> bool:
    with file.open("rb") as f:
        f.seek(-1, 2)
        return f.read(1) != b"\n"


def _text(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[-1][:200] if text else type(e).__name__
