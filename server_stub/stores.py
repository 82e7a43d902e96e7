"""Where sessions survive a restart: ``memory``, ``sqlite:PATH`` or ``redis://...``.

The backend keeps every session in memory and writes the changed ones behind,
every flush interval and once more on shutdown. A store also keeps the
backend's *epoch* (a new one means "state lost": resumes answer
``reason: "epoch"``) and, when none is given, the token-signing secret, so a
restarted backend still accepts the tokens it issued.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import orjson


@dataclass
class Loaded:
    epoch: str
    secret: str
    sessions: list[dict]


def _new_epoch() -> str:
    return secrets.token_hex(4)


class MemoryStore:
    """Nothing survives: every start is a new epoch."""

    name = "memory"

    async def open(self, secret: str | None) -> Loaded:
        return Loaded(_new_epoch(), secret or secrets.token_urlsafe(32), [])

    async def save(self, snapshots: list[dict], deleted: list[str]) -> None:
        pass

    async def close(self) -> None:
        pass


class SQLiteStore:
    """One SQLite file; writes happen on a single worker thread, off the event loop."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = f"sqlite:{path}"
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _open(self, secret: str | None) -> Loaded:
        db = self._db = sqlite3.connect(self.path, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, data BLOB NOT NULL)")
        meta = dict(db.execute("SELECT key, value FROM meta"))
        epoch = meta.get("epoch") or _new_epoch()
        secret = secret or meta.get("secret") or secrets.token_urlsafe(32)
        db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [("epoch", epoch), ("secret", secret)])
        db.commit()
        sessions = [orjson.loads(data) for (data,) in db.execute("SELECT data FROM sessions")]
        return Loaded(epoch, secret, sessions)

    def _save(self, rows: list[tuple[str, bytes]], deleted: list[str]) -> None:
        db = self._db
        db.executemany("INSERT OR REPLACE INTO sessions VALUES (?, ?)", rows)
        db.executemany("DELETE FROM sessions WHERE id = ?", [(sid,) for sid in deleted])
        db.commit()

    async def open(self, secret: str | None) -> Loaded:
        return await self._run(self._open, secret)

    async def save(self, snapshots: list[dict], deleted: list[str]) -> None:
        rows = [(s["id"], orjson.dumps(s)) for s in snapshots]
        await self._run(self._save, rows, deleted)

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
        self._pool.shutdown(wait=True)


class RedisStore:
    """A Redis hash of sessions plus a hash of meta, under one key prefix."""

    def __init__(self, url: str, prefix: str = "agentws") -> None:
        import redis.asyncio as redis

        self.name = url
        self._client = redis.from_url(url)
        self._sessions = f"{prefix}:sessions"
        self._meta = f"{prefix}:meta"

    async def open(self, secret: str | None) -> Loaded:
        r = self._client
        meta = {k.decode(): v.decode() for k, v in (await r.hgetall(self._meta)).items()}
        epoch = meta.get("epoch") or _new_epoch()
        secret = secret or meta.get("secret") or secrets.token_urlsafe(32)
        await r.hset(self._meta, mapping={"epoch": epoch, "secret": secret})
        sessions = [orjson.loads(v) for v in (await r.hgetall(self._sessions)).values()]
        return Loaded(epoch, secret, sessions)

    async def save(self, snapshots: list[dict], deleted: list[str]) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            if snapshots:
                pipe.hset(self._sessions, mapping={s["id"]: orjson.dumps(s) for s in snapshots})
            if deleted:
                pipe.hdel(self._sessions, *deleted)
            await pipe.execute()

    async def close(self) -> None:
        await self._client.aclose()


def open_store(spec: str):
    if spec == "memory":
        return MemoryStore()
    if spec.startswith("sqlite:"):
        return SQLiteStore(spec.removeprefix("sqlite:"))
    return RedisStore(spec)
