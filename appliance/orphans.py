"""Objects no row refers to: what a crash between "file in the store" and "row committed"
leaves behind.

The SCP renames a received file into the store, then commits its row; a kill in between
leaves a file the sender was never told about (it sends again). The worker and the label API
store their objects before their transaction too. Such files are found by reference, not by
kind: every SHA-256 that any text column of any table mentions (instances, run results with
their artifacts and outputs, label versions) is in use, and an object none mentions, older
than any transaction that could still be about to commit it, is removed.
"""

from __future__ import annotations

import logging
import re
import time

import sqlite_utils

from appliance.storage import ObjectStore

log = logging.getLogger(__name__)

SHA256 = re.compile(r"[0-9a-f]{64}")


def referenced_sha256s(db: sqlite_utils.Database) -> set[str]:
    found: set[str] = set()
    for table in db.tables:
        text_columns = [c.name for c in table.columns if c.type.upper() in ("TEXT", "")]
        if not text_columns:
            continue
        columns = ", ".join(f"[{name}]" for name in text_columns)
        for row in db.execute(f"SELECT {columns} FROM [{table.name}]"):
            for value in row:
                if isinstance(value, str) and len(value) >= 64:
                    found.update(SHA256.findall(value))
    return found


def sweep_orphans(db: sqlite_utils.Database, store: ObjectStore, *,
                  older_than_seconds: float) -> int:
    """Remove objects that no row refers to and that are older than ``older_than_seconds``
    (longer than a run may take: a run's artifacts are referenced only when it finishes)."""
    cutoff = time.time() - older_than_seconds
    candidates = [path for path in store.root.glob("??/*")
                  if path.is_file() and path.stat().st_mtime <= cutoff]
    if not candidates:
        return 0
    # Read the references after listing the files: an object committed meanwhile is kept.
    in_use = referenced_sha256s(db)
    removed = 0
    for path in candidates:
        if SHA256.fullmatch(path.name) and path.name not in in_use:
            path.unlink(missing_ok=True)
            removed += 1
    return removed
