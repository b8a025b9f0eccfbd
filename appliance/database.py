"""The database: one SQLite file (WAL, synchronous=FULL), opened through sqlite-utils.

Writes go through ``write_transaction``, which uses ``BEGIN IMMEDIATE``: a deferred ``BEGIN``
that reads first and writes later can fail with SQLITE_BUSY without honouring the busy timeout.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import sqlite_utils

from appliance.migrations import migrations

BUSY_TIMEOUT_MS = 30_000


def connect(path: Path) -> sqlite_utils.Database:
    """Open the database with the pragmas every connection needs, and migrate it."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a committed row survives power loss, which is what 0x0000 to a scanner promises.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys=ON")
    db = sqlite_utils.Database(conn)
    # IMMEDIATE: the SCP and the worker may start together; only one of them migrates.
    with write_transaction(db):
        migrations.apply(db)
    return db


@contextlib.contextmanager
def write_transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``; rolls back on any exception."""
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.conn.execute("ROLLBACK")
        raise
    db.conn.execute("COMMIT")


class ThreadLocalDatabase:
    """One connection per thread: the SCP serves each association on its own thread."""

    def __init__(self, path: Path):
        self.path = path
        self._local = threading.local()

    def get(self) -> sqlite_utils.Database:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = connect(self.path)
        return db


def now() -> float:
    return time.time()
