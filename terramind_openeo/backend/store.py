"""SQLite store for batch jobs, their logs, the logs of synchronous requests, user-defined processes and
issued bearer tokens.

One file in the data directory; every read and write is a short transaction behind one lock, so the
API threads and the job runner threads can share it. Every query names the owner: a job, log or process
of another user is simply not found.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from terramind_openeo.errors import OpenEOError

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    title TEXT, description TEXT,
    process TEXT NOT NULL,
    status TEXT NOT NULL,
    progress REAL,
    plan TEXT, budget REAL, log_level TEXT NOT NULL DEFAULT 'debug',
    created TEXT NOT NULL, updated TEXT NOT NULL, started TEXT, finished TEXT,
    usage TEXT,
    result_dir TEXT,
    stac TEXT
);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner);
CREATE TABLE IF NOT EXISTS logs (
    job_id TEXT NOT NULL, seq INTEGER NOT NULL,
    level TEXT NOT NULL, message TEXT NOT NULL, time TEXT NOT NULL, code TEXT, data TEXT,
    PRIMARY KEY (job_id, seq)
);
CREATE TABLE IF NOT EXISTS udps (
    owner TEXT NOT NULL, id TEXT NOT NULL, spec TEXT NOT NULL, updated TEXT NOT NULL,
    PRIMARY KEY (owner, id)
);
CREATE TABLE IF NOT EXISTS sync_logs (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    digest TEXT PRIMARY KEY, owner TEXT NOT NULL, name TEXT, expires REAL NOT NULL
);
"""

LOG_LEVELS = ("debug", "info", "warning", "error")
ACTIVE = ("queued", "running")


def utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sync_log_key(log_id: str) -> str:
    """Key of a synchronous request's entries in the ``logs`` table (never equal to a job id)."""
    return f"sync:{log_id}"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Job:
    """One row of ``jobs``; ``process`` is the openEO process (with ``process_graph``)."""

    id: str
    owner: str
    title: str | None
    description: str | None
    process: dict
    status: str
    progress: float | None
    plan: str | None
    budget: float | None
    log_level: str
    created: str
    updated: str
    started: str | None
    finished: str | None
    usage: dict | None
    result_dir: str | None
    stac: dict | None

    @property
    def readable(self) -> bool:
        """False when the stored process could not be read back (it can never run)."""
        return isinstance(self.process, dict) and UNREADABLE not in self.process

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        data = dict(row)
        for key in ("process", "usage", "stac"):
            data[key] = load_json(data[key]) if data[key] else None
        if not isinstance(data["process"], dict):
            data["process"] = {UNREADABLE: True, "process_graph": {}}
        for key in ("usage", "stac"):
            if isinstance(data[key], dict) and UNREADABLE in data[key]:
                data[key] = None
        return cls(**data)


UNREADABLE = "terramind_openeo:unreadable"


def load_json(text: str) -> Any:
    """A stored JSON document; one that cannot be read back (corrupt, or nested deeper than requests may
    be today, which neither the parser's nor the answer's serializer's stack would survive) becomes
    ``{UNREADABLE: True}`` instead of an exception in every request that lists it."""
    from .web import check_json_shape

    try:
        check_json_shape(text.encode() if isinstance(text, str) else bytes(text), max_nodes=10**9)
        return json.loads(text)
    except (OpenEOError, ValueError, RecursionError):
        return {UNREADABLE: True}


class Store:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _exec(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def _rows(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ---------------------------------------------------------------- jobs
    def create_job(self, owner: str, process: dict, title: str | None = None, description: str | None = None,
                   plan: str | None = None, budget: float | None = None, log_level: str = "debug") -> Job:
        job_id = uuid.uuid4().hex[:20]
        now = utcnow()
        self._exec(
            "INSERT INTO jobs (id, owner, title, description, process, status, progress, plan, budget, log_level,"
            " created, updated) VALUES (?, ?, ?, ?, ?, 'created', 0, ?, ?, ?, ?, ?)",
            (job_id, owner, title, description, json.dumps(process), plan, budget, log_level, now, now))
        return cast(Job, self.get_job(owner, job_id))  # just inserted

    def get_job(self, owner: str, job_id: str) -> Job | None:
        rows = self._rows("SELECT * FROM jobs WHERE id = ? AND owner = ?", (job_id, owner))
        return Job.from_row(rows[0]) if rows else None

    def get_job_any_owner(self, job_id: str) -> Job | None:
        rows = self._rows("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return Job.from_row(rows[0]) if rows else None

    def list_jobs(self, owner: str, limit: int | None = None) -> list[Job]:
        sql = "SELECT * FROM jobs WHERE owner = ? ORDER BY created DESC, rowid DESC"
        args: tuple = (owner,)
        if limit:
            sql += " LIMIT ?"
            args += (limit,)
        return [Job.from_row(r) for r in self._rows(sql, args)]

    def job_ids_with_status(self, *statuses: str) -> list[str]:
        marks = ",".join("?" * len(statuses))
        return [r["id"] for r in self._rows(f"SELECT id FROM jobs WHERE status IN ({marks}) ORDER BY updated, rowid",
                                            statuses)]

    def jobs_with_status(self, *statuses: str) -> list[Job]:
        marks = ",".join("?" * len(statuses))
        rows = self._rows(f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY updated, rowid", statuses)
        return [Job.from_row(r) for r in rows]

    def update_job(self, job_id: str, **fields: Any) -> None:
        for key in ("process", "usage", "stac"):
            if key in fields and fields[key] is not None:
                fields[key] = json.dumps(fields[key])
        fields["updated"] = utcnow()
        sets = ", ".join(f"{k} = ?" for k in fields)
        self._exec(f"UPDATE jobs SET {sets} WHERE id = ?", (*fields.values(), job_id))

    def set_status(self, job_id: str, status: str, expected: tuple[str, ...] | None = None, **fields: Any) -> bool:
        """Change the status (only from one of ``expected`` if given); True when the row changed."""
        fields = {"status": status, **fields}
        for key in ("usage", "stac"):
            if key in fields and fields[key] is not None:
                fields[key] = json.dumps(fields[key])
        fields["updated"] = utcnow()
        sets = ", ".join(f"{k} = ?" for k in fields)
        sql = f"UPDATE jobs SET {sets} WHERE id = ?"
        args: tuple = (*fields.values(), job_id)
        if expected:
            sql += f" AND status IN ({','.join('?' * len(expected))})"
            args += tuple(expected)
        return self._exec(sql, args).rowcount > 0

    def delete_job(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM logs WHERE job_id = ?", (job_id,))
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    # ---------------------------------------------------------------- logs
    def add_log(self, job_id: str, level: str, message: str, code: str | None = None,
                data: Any = None) -> None:
        level = level if level in LOG_LEVELS else "info"
        with self._lock:
            row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM logs WHERE job_id = ?", (job_id,)).fetchone()
            self._db.execute(
                "INSERT INTO logs (job_id, seq, level, message, time, code, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (job_id, row[0] + 1, level, message, utcnow(), code,
                 json.dumps(data, default=str) if data is not None else None))

    def logs(self, job_id: str, after: int = 0, min_level: str = "debug", limit: int | None = None) -> list[dict]:
        levels = LOG_LEVELS[LOG_LEVELS.index(min_level):] if min_level in LOG_LEVELS else LOG_LEVELS
        marks = ",".join("?" * len(levels))
        sql = f"SELECT * FROM logs WHERE job_id = ? AND seq > ? AND level IN ({marks}) ORDER BY seq"
        args: tuple = (job_id, after, *levels)
        if limit:
            sql += " LIMIT ?"
            args += (limit,)
        out = []
        for row in self._rows(sql, args):
            entry = {"id": str(row["seq"]), "level": row["level"], "message": row["message"], "time": row["time"],
                     "links": []}
            if row["code"]:
                entry["code"] = row["code"]
            if row["data"] is not None:
                entry["data"] = json.loads(row["data"])
            out.append(entry)
        return out

    # ---------------------------------------------------------------- logs of synchronous requests
    # Their entries live in ``logs`` under the key ``sync_log_key(id)``; ``sync_logs`` says whose they are.
    def create_sync_log(self, owner: str, ttl_s: float) -> str:
        """A new log id for one ``POST /result`` of ``owner``; logs older than ``ttl_s`` are dropped."""
        log_id = uuid.uuid4().hex[:20]
        now = time.time()
        with self._lock:
            expired = [r[0] for r in self._db.execute("SELECT id FROM sync_logs WHERE created < ?", (now - ttl_s,))]
            for old in expired:
                self._db.execute("DELETE FROM logs WHERE job_id = ?", (sync_log_key(old),))
                self._db.execute("DELETE FROM sync_logs WHERE id = ?", (old,))
            self._db.execute("INSERT INTO sync_logs (id, owner, created) VALUES (?, ?, ?)", (log_id, owner, now))
        return log_id

    def has_sync_log(self, owner: str, log_id: str) -> bool:
        return bool(self._rows("SELECT 1 FROM sync_logs WHERE id = ? AND owner = ?", (log_id, owner)))

    # ---------------------------------------------------------------- user-defined processes
    def put_udp(self, owner: str, udp_id: str, spec: dict) -> None:
        self._exec("INSERT OR REPLACE INTO udps (owner, id, spec, updated) VALUES (?, ?, ?, ?)",
                   (owner, udp_id, json.dumps(spec), utcnow()))

    def get_udp(self, owner: str, udp_id: str) -> dict | None:
        rows = self._rows("SELECT spec FROM udps WHERE owner = ? AND id = ?", (owner, udp_id))
        spec = load_json(rows[0]["spec"]) if rows else None
        return spec if isinstance(spec, dict) and UNREADABLE not in spec else None

    def list_udps(self, owner: str) -> list[dict]:
        specs = [load_json(r["spec"]) for r in self._rows("SELECT spec FROM udps WHERE owner = ? ORDER BY id",
                                                          (owner,))]
        return [s for s in specs if isinstance(s, dict) and UNREADABLE not in s and isinstance(s.get("id"), str)]

    def delete_udp(self, owner: str, udp_id: str) -> bool:
        return self._exec("DELETE FROM udps WHERE owner = ? AND id = ?", (owner, udp_id)).rowcount > 0

    # ---------------------------------------------------------------- tokens
    def add_token(self, token: str, owner: str, name: str, ttl_s: float) -> None:
        now = time.time()
        with self._lock:
            self._db.execute("DELETE FROM tokens WHERE expires < ?", (now,))
            self._db.execute("INSERT INTO tokens (digest, owner, name, expires) VALUES (?, ?, ?, ?)",
                             (token_digest(token), owner, name, now + ttl_s))

    def revoke_tokens(self, owner: str) -> int:
        """Delete every bearer token of ``owner``; returns how many there were."""
        return self._exec("DELETE FROM tokens WHERE owner = ?", (owner,)).rowcount

    def token_owner(self, token: str) -> tuple[str, str] | None:
        rows = self._rows("SELECT owner, name, expires FROM tokens WHERE digest = ?", (token_digest(token),))
        if not rows or rows[0]["expires"] < time.time():
            return None
        return rows[0]["owner"], rows[0]["name"]

    def iter_all_jobs(self) -> Iterator[Job]:
        for row in self._rows("SELECT * FROM jobs"):
            yield Job.from_row(row)
