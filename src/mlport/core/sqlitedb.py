"""A small thread-safe wrapper over one SQLite file, shared by the hub's stores (registry, users, deployments).

Each store creates its own tables with ``CREATE TABLE IF NOT EXISTS`` through :meth:`Database.migrate`; every
statement runs under one lock on one connection in WAL mode, so calls from the event loop and from worker
threads never interleave inside a transaction.  Statements take ``?`` parameters only: never format values
into SQL.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["Database"]

Params = Sequence[Any] | dict[str, Any]


class Database:
    """One SQLite connection guarded by a lock.  ``":memory:"`` works for unit tests."""

    def __init__(self, path: Path | str, *, timeout_s: float = 30.0) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, timeout=timeout_s, check_same_thread=False,
                                     isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        with self._lock:
            if self.path != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")

    def migrate(self, script: str) -> None:
        """Run a script of ``CREATE ... IF NOT EXISTS`` statements (idempotent)."""
        with self._lock:
            self._conn.executescript(script)

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; returns the last inserted row id (0 when none)."""
        with self._lock:
            cur = self._conn.execute(sql, params)
            return cur.lastrowid or 0

    def changes(self, sql: str, params: Params = ()) -> int:
        """Run one statement; returns how many rows it changed."""
        with self._lock:
            cur = self._conn.execute(sql, params)
            return cur.rowcount

    def one(self, sql: str, params: Params = ()) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute(sql, params).fetchone()
        return dict(row) if row is not None else None

    def all(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [dict(r) for r in rows]

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``with db.transaction() as conn:`` runs the block atomically (BEGIN IMMEDIATE ... COMMIT)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()
