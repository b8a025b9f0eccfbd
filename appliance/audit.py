"""The audit log: every action that changes data, with who did it. Never patient identifiers."""

from __future__ import annotations

import json
import time
from typing import Any

import sqlite_utils


def record(db: sqlite_utils.Database, *, actor: str, action: str, object_kind: str,
           object_id: str, detail: dict[str, Any] | None = None) -> None:
    """Append one audit event; call inside the transaction that makes the change."""
    db["audit_events"].insert({
        "at": time.time(), "actor": actor, "action": action, "object_kind": object_kind,
        "object_id": object_id, "detail": json.dumps(detail or {}, sort_keys=True),
    })


def events(db: sqlite_utils.Database, action: str | None = None) -> list[dict[str, Any]]:
    where, params = ("action = ?", [action]) if action else (None, None)
    rows = db["audit_events"].rows_where(where, params, order_by="id")
    return [{**row, "detail": json.loads(row["detail"])} for row in rows]
