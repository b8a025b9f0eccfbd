"""The audit log: every action that changes data, with who did it. Never patient identifiers.

The log is a hash chain: each event carries the SHA-256 of the one before it and its own,
computed over its content and that previous hash. Triggers refuse UPDATE and DELETE, but anyone
holding the database file can drop them; the chain is what makes such an edit, deletion or
insertion visible (``verify``). Rewriting the whole chain from the edit onwards would still
verify, so the head (last id and hash) is written to the system log each day (``log_head``) and
appended to ``audit-heads.log``; ``verify`` checks the table against every head it is given.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from appliance.database import write_transaction
from appliance.limits import MAX_ROWS_LISTED

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
HEADS_FILE = "audit-heads.log"
HEAD_LINE = "audit chain head: event {id} sha256 {hash}"
_HEAD_PATTERN = re.compile(r"audit chain head: event (\d+) sha256 ([0-9a-f]{64})")
# What an event's hash covers, in order.
CONTENT = ("id", "at", "actor", "action", "object_kind", "object_id", "detail")


def event_hash(event: dict[str, Any], previous_hash: str) -> str:
    """The SHA-256 that chains ``event`` (its id and content) to the event before it."""
    content = json.dumps([event[column] for column in CONTENT], separators=(",", ":"))
    return hashlib.sha256(f"{previous_hash}\n{content}".encode()).hexdigest()


def record(db: sqlite_utils.Database, *, actor: str, action: str, object_kind: str,
           object_id: str, detail: dict[str, Any] | None = None) -> None:
    """Append one audit event; call inside the transaction that makes the change (outside one,
    it takes its own, so that reading the chain's head and appending to it cannot interleave
    with another writer)."""
    if not db.conn.in_transaction:
        with write_transaction(db):
            return record(db, actor=actor, action=action, object_kind=object_kind,
                          object_id=object_id, detail=detail)
    head = _head(db)
    previous_id, previous_hash = (head[0], head[1] or GENESIS_HASH) if head else (0, GENESIS_HASH)
    event = {"id": previous_id + 1, "at": time.time(), "actor": actor, "action": action,
             "object_kind": object_kind, "object_id": object_id,
             "detail": json.dumps(detail or {}, sort_keys=True)}
    db["audit_events"].insert({**event, "previous_hash": previous_hash,
                               "event_hash": event_hash(event, previous_hash)})


def _head(db: sqlite_utils.Database) -> tuple[int, str | None] | None:
    """The newest event's id and hash."""
    return db.execute("SELECT id, event_hash FROM audit_events ORDER BY id DESC LIMIT 1"
                      ).fetchone()


@dataclass(frozen=True)
class Verification:
    events: int
    head_id: int
    head_hash: str
    heads_checked: int
    broken: str | None      # the first broken link, said for an admin; None = intact

    @property
    def intact(self) -> bool:
        return self.broken is None


def verify(db: sqlite_utils.Database, heads: Iterable[tuple[int, str]] = ()) -> Verification:
    """Walk the chain from the first event; report the first link that does not hold, then
    check that each logged head ``(id, hash)`` is still the hash of that event."""
    hashes: dict[int, str] = {}
    previous_id, previous_hash, count, broken = 0, GENESIS_HASH, 0, None
    for row in db.execute("SELECT id, at, actor, action, object_kind, object_id, detail, "
                          "previous_hash, event_hash FROM audit_events ORDER BY id"):
        event = dict(zip((*CONTENT, "previous_hash", "event_hash"), row, strict=True))
        count += 1
        if event["id"] != previous_id + 1:
            broken = (f"event {previous_id + 1} is missing (the chain goes from {previous_id} "
                      f"to {event['id']}): deleted")
        elif event["previous_hash"] != previous_hash:
            broken = (f"event {event['id']} does not follow event {previous_id}: its previous "
                      "hash differs (an event before it was rewritten, or it was inserted)")
        elif event["event_hash"] != event_hash(event, previous_hash):
            broken = f"event {event['id']} was edited: its content no longer matches its hash"
        if broken:
            break
        hashes[event["id"]] = event["event_hash"]
        previous_id, previous_hash = event["id"], event["event_hash"]
    heads = list(heads)
    if broken is None:
        for head_id, head_hash in heads:
            if head_id > previous_id:
                broken = (f"a logged head names event {head_id}, but the log ends at "
                          f"{previous_id}: events were deleted from the end")
            elif hashes[head_id] != head_hash:
                broken = (f"event {head_id} differs from the head logged for it: the chain "
                          "was rewritten from that point or earlier")
            if broken:
                break
    return Verification(events=count, head_id=previous_id, head_hash=previous_hash,
                        heads_checked=len(heads), broken=broken)


def read_heads(path: Path) -> list[tuple[int, str]]:
    """Every logged head in a text file: ``audit-heads.log`` or an export of the system log
    (``journalctl -u aomas-worker -o cat``); other lines are ignored, no file is no heads."""
    if not path.is_file():
        return []
    return [(int(match[1]), match[2]) for match in _HEAD_PATTERN.finditer(path.read_text())]


def log_head(db: sqlite_utils.Database, data_dir: Path) -> tuple[int, str] | None:
    """Write the chain's head to the system log and to ``audit-heads.log`` (the worker does
    this daily); None while the log is empty."""
    head = _head(db)
    if head is None:
        return None
    line = HEAD_LINE.format(id=head[0], hash=head[1])
    log.warning(line)   # WARNING: kept by every log level, so the journal always has it
    with open(data_dir / HEADS_FILE, "a") as heads:
        heads.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {line}\n")
    return head[0], head[1]


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
