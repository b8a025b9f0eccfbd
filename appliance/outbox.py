"""The outbox: every output of a run reaches every destination, once.

One row per (destination, SOP Instance UID), unique, so enqueueing a run again adds nothing.
Delivery is C-STORE (``kind = "dimse"``) or Orthanc's REST API (``kind = "orthanc"``; HTTP
answers are mapped the same way, see dicom/orthanc.py), in the destination's transfer syntax.
A row is ``pending`` until a PACS answers: 0x0000 → ``sent``; a warning (0x0001, 0xBxxx) →
``warning`` (stored, the status kept apart from failures); out of resources (0xA7xx), a
timeout, an aborted or refused association → still ``pending``, tried again after an
exponential backoff with jitter; a refusal that will not change by waiting (no accepted
presentation context, 0xA9xx, 0xCxxx) or an age past ``outbox_dead_after_seconds`` → ``dead``,
with the reason, until ``aomas outbox retry``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable

import sqlite_utils

from appliance import audit, tls
from appliance.database import write_transaction
from appliance.exceptions import ConfigurationError, NotPermitted
from appliance.run_result import Output
from appliance.runs import SHADOW_ARM
from appliance.storage import ObjectStore
from dicom import status as dimse
from dicom.orthanc import upload_files
from dicom.segmentation import BINARY, LABELMAP
from dicom.send import SendResult, send_files
from dicom.transfer_syntax import TRANSFER_SYNTAXES

log = logging.getLogger(__name__)

PENDING, SENT, WARNING, DEAD = "pending", "sent", "warning", "dead"
STATES = (PENDING, SENT, WARNING, DEAD)
MAX_BACKOFF_SECONDS = 3600.0


def wanted(destination: dict, kind: str) -> bool:
    """Does this destination take outputs of ``kind`` (layer SEGs: of its segmentation type)?"""
    if kind == "layer_seg_labelmap":
        return "layer_seg" in destination["objects"] and destination["segmentation"] == LABELMAP
    if kind == "layer_seg" and destination["segmentation"] == LABELMAP:
        return False
    return kind in destination["objects"]


def segmentation_types(destinations: Iterable[dict]) -> tuple[str, ...]:
    """Which layer SEG types the runs must write for these destinations (BINARY at least)."""
    types = {BINARY} | {d["segmentation"] for d in destinations}
    return tuple(sorted(types))


def enqueue(db: sqlite_utils.Database, run_id: str, outputs: Iterable[Output],
            destinations: Iterable[dict], now: float | None = None) -> int:
    """Rows for the run's outputs at every destination that wants them; returns how many new.
    A shadow run's outputs are refused (NotPermitted): they never leave the appliance."""
    if _is_shadow_run(db, run_id):
        raise NotPermitted(f"run {run_id} is a shadow run; its outputs never leave the "
                           "appliance")
    now = time.time() if now is None else now
    rows = [{"run_id": run_id, "destination": destination["name"], "kind": output.kind,
             "sop_class_uid": output.sop_class_uid,
             "sop_instance_uid": output.sop_instance_uid, "object_sha256": output.sha256,
             "state": PENDING, "attempts": 0, "next_attempt_at": now, "created_at": now,
             "updated_at": now, "last_status": None, "detail": None}
            for destination in destinations for output in outputs
            if wanted(destination, output.kind)]
    if not rows:
        return 0
    columns = list(rows[0])
    # Plain SQL, not sqlite-utils' insert_all: that commits, and callers enqueue inside their
    # own transaction. (destination, SOP Instance UID) is unique: a second enqueue adds nothing.
    cursor = db.conn.executemany(
        f"INSERT OR IGNORE INTO outbox ({', '.join(columns)}) "
        f"VALUES ({', '.join('?' for _ in columns)})",
        [[row[c] for c in columns] for row in rows])
    return cursor.rowcount


def deliver_due(db: sqlite_utils.Database, store: ObjectStore, destinations: Iterable[dict], *,
                calling_ae: str, retry_base_seconds: float, dead_after_seconds: float,
                now: float | None = None) -> dict[str, int]:
    """Send every due row, one association per destination; returns counts by new state."""
    clock_given = now is not None
    now = time.time() if now is None else now
    counts: dict[str, int] = {}
    for destination in destinations:
        rows = list(db.query(
            "SELECT * FROM outbox WHERE destination = ? AND state = ? AND next_attempt_at <= ? "
            "ORDER BY id", [destination["name"], PENDING, now]))
        if not rows:
            continue
        # A second check, independent of the worker's: a row of a shadow run (put here by
        # hand or by a fault) is never sent.
        refused = [r for r in rows if _is_shadow_run(db, r["run_id"])]
        for row in refused:
            log.error("outbox row %d belongs to shadow run %s; refused, not sent", row["id"],
                      row["run_id"])
            _record(db, row, DEAD, None, now, "refused: the output of a shadow run never "
                    "leaves the appliance", attempted=False)
        expired = [r for r in rows if r not in refused
                   and now - r["created_at"] > dead_after_seconds]
        for row in expired:
            _record(db, row, DEAD, row["last_status"], now,
                    f"not delivered within {dead_after_seconds:.0f} s: {row['detail'] or ''}",
                    attempted=False)
        rows = [r for r in rows if r not in expired and r not in refused]
        if not rows:
            continue
        results = _send(destination, [store.path_for(r["object_sha256"]) for r in rows],
                        calling_ae=calling_ae)
        # When the answers came (updated_at): what the scan-to-PACS latency ends with.
        answered_at = now if clock_given else time.time()
        by_path = {str(result.path): result for result in results}
        for row in rows:
            result = by_path[str(store.path_for(row["object_sha256"]))]
            state = _outcome(db, row, result, answered_at, retry_base_seconds)
            counts[state] = counts.get(state, 0) + 1
    return counts


def _is_shadow_run(db: sqlite_utils.Database, run_id: str) -> bool:
    row = db.execute("SELECT arm FROM runs WHERE run_id = ?", [run_id]).fetchone()
    return bool(row) and row[0] == SHADOW_ARM


def _send(destination: dict, paths: list, *, calling_ae: str) -> list[SendResult]:
    syntax = TRANSFER_SYNTAXES[destination["transfer_syntax"]]
    if destination["kind"] == "orthanc":
        try:
            password = _password(destination)
        except OSError as error:
            return [SendResult(p, None, f"cannot read password_file: {error.strerror}")
                    for p in paths]
        return upload_files(paths, destination["url"], username=destination["username"],
                            password=password, transfer_syntax=syntax)
    try:
        tls_args = tls.destination_tls_args(destination)
    except ConfigurationError as error:
        return [SendResult(p, None, str(error)) for p in paths]
    return send_files(paths, destination["host"], int(destination["port"]),
                      called_ae=destination["ae_title"], calling_ae=calling_ae,
                      transfer_syntax=syntax, tls_args=tls_args)


def _password(destination: dict) -> str:
    if not destination["password_file"]:
        return ""
    with open(destination["password_file"], encoding="utf-8") as file:
        return file.read().strip()


def _outcome(db, row: dict, result: SendResult, now: float, retry_base_seconds: float) -> str:
    status = result.status
    shown = None if status is None else f"0x{status:04X}"
    if result.http_status is not None:
        shown = f"HTTP {result.http_status}"
    if status == dimse.SUCCESS:
        _record(db, row, SENT, shown, now, None)
        return SENT
    if status is not None and dimse.is_warning(status):
        _record(db, row, WARNING, shown, now, "stored with a warning")
        return WARNING
    if result.refused or (status is not None and not dimse.is_transient(status)):
        reason = result.error or f"refused with status {shown}"
        _record(db, row, DEAD, shown, now, reason)
        log.warning("outbox %s: %s to %s refused for good: %s", row["id"], row["kind"],
                    row["destination"], reason)
        return DEAD
    # No answer (timeout, abort, no association) is unknown, never sent: try again later.
    attempts = row["attempts"] + 1
    delay = min(retry_base_seconds * 2 ** (attempts - 1), MAX_BACKOFF_SECONDS)
    delay *= random.uniform(0.5, 1.5)  # jitter: a PACS back from an outage is not hit at once
    _record(db, row, PENDING, shown, now, result.error or f"status {shown}, will retry",
            retry_at=now + delay)
    return PENDING


def _record(db, row: dict, state: str, last_status: str | None, now: float,
            detail: str | None, retry_at: float | None = None, attempted: bool = True) -> None:
    db["outbox"].update(row["id"], {
        "state": state, "last_status": last_status, "detail": detail, "updated_at": now,
        "attempts": row["attempts"] + int(attempted),
        "next_attempt_at": retry_at if retry_at is not None else now})


def retry(db: sqlite_utils.Database, *, actor: str, ids: Iterable[int] = (),
          run_id: str | None = None, destination: str | None = None,
          now: float | None = None) -> int:
    """Dead or waiting rows (all, or those chosen) back to pending, due now, clock restarted;
    audited as the actor's."""
    now = time.time() if now is None else now
    where, params = ["state IN (?, ?)"], [DEAD, PENDING]
    ids = list(ids)
    if ids:
        where.append(f"id IN ({', '.join('?' for _ in ids)})")
        params += ids
    if run_id:
        where.append("run_id = ?")
        params.append(run_id)
    if destination:
        where.append("destination = ?")
        params.append(destination)
    with write_transaction(db):
        cursor = db.execute(
            f"UPDATE outbox SET state = ?, next_attempt_at = ?, created_at = ?, updated_at = ? "
            f"WHERE {' AND '.join(where)}", [PENDING, now, now, now, *params])
        audit.record(db, actor=actor, action="outbox.retry", object_kind="outbox",
                     object_id=",".join(map(str, ids)) or "*",
                     detail={"run_id": run_id, "destination": destination,
                             "rows": cursor.rowcount})
    return cursor.rowcount


def rows(db: sqlite_utils.Database, state: str | None = None) -> list[dict]:
    if state:
        return list(db.query("SELECT * FROM outbox WHERE state = ? ORDER BY id", [state]))
    return list(db.query("SELECT * FROM outbox ORDER BY id"))


def summary(db: sqlite_utils.Database) -> list[dict]:
    """Per destination, how many outputs are in each state (the worklist's delivery line)."""
    counts: dict[str, dict] = {}
    for destination, state, count in db.execute(
            "SELECT destination, state, count(*) FROM outbox GROUP BY destination, state"):
        counts.setdefault(destination, {"destination": destination,
                                        **dict.fromkeys(STATES, 0)})[state] = count
    return sorted(counts.values(), key=lambda row: row["destination"])
