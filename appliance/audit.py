"""The audit log: every action that changes data, with who did it. Never patient identifiers."""

from __future__ import annotations

import json
import time
from typing import Any

import sqlite_utils

from appliance.limits import MAX_ROWS_LISTED


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


def search(db: sqlite_utils.Database, *, actor: str = "", action: str = "",
           object_kind: str = "", object_id: str = "", limit: int = 200,
           before_id: int | None = None) -> list[dict[str, Any]]:
    """Newest first, filtered by exact actor, object kind and id, and an action prefix
    (``label.`` finds every label change)."""
    where, params = [], []
    for column, value in (("actor", actor), ("object_kind", object_kind),
                          ("object_id", object_id)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    if action:
        where.append("action LIKE ? ESCAPE '\\'")
        params.append(action.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
    if before_id is not None:
        where.append("id < ?")
        params.append(before_id)
    rows = db["audit_events"].rows_where(" AND ".join(where) or None, params or None,
                                         order_by="id desc",
                                         limit=max(1, min(limit, MAX_ROWS_LISTED)))
    return [{**row, "detail": json.loads(row["detail"])} for row in rows]
