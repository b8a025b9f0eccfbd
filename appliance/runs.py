"""Runs: one processing of a case under one manifest, and the state machine it moves through.

QUEUED → RUNNING → SUCCEEDED | FAILED. The run id is derived from the manifest, so submitting
the same case with the same configuration again returns the existing run. SQLite is the record
of truth; the queue only triggers work (see ``appliance.reconciler``).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import sqlite_utils

from appliance import audit
from appliance.database import write_transaction
from appliance.exceptions import Conflict, InvalidInput, NotFound
from appliance.run_result import RunResult
from appliance.version import pipeline_version

QUEUED, RUNNING, SUCCEEDED, FAILED = "QUEUED", "RUNNING", "SUCCEEDED", "FAILED"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED)
FINISHED = (SUCCEEDED, FAILED)
# A run's arm (appliance.routing): production and canary results go to the PACS; a shadow
# run's never leave the appliance. Runs from before routing have none: production.
PRODUCTION_ARM, CANARY_ARM, SHADOW_ARM = "production", "canary", "shadow"
ARMS = (PRODUCTION_ARM, CANARY_ARM, SHADOW_ARM)


def input_checksum(db: sqlite_utils.Database, series_instance_uid: str) -> str:
    """SHA-256 over the series' instances (UID and content hash), independent of arrival order."""
    rows = db.execute(
        "SELECT sop_instance_uid, sha256 FROM instances WHERE series_instance_uid = ? "
        "ORDER BY sop_instance_uid", [series_instance_uid]).fetchall()
    digest = hashlib.sha256()
    for sop_instance_uid, sha256 in rows:
        digest.update(f"{sop_instance_uid}:{sha256}\n".encode())
    return digest.hexdigest()


def build_manifest(db: sqlite_utils.Database, case_id: int, *, seed: int, model: dict,
                   parameters: dict[str, Any] | None = None,
                   arm: str = PRODUCTION_ARM) -> dict[str, Any]:
    case = db["cases"].get(case_id)
    return {
        "arm": arm,
        "case_id": case_id,
        "input_sha256": input_checksum(db, case["series_instance_uid"]),
        "pipeline": pipeline_version(),
        "model": model,
        "parameters": parameters or {},
        "seed": seed,
    }


def derive_run_id(manifest: dict[str, Any]) -> str:
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def submit(db: sqlite_utils.Database, case_id: int, *, seed: int, model: dict,
           parameters: dict[str, Any] | None = None,
           arm: str = PRODUCTION_ARM) -> tuple[str, bool]:
    """Create the run for this case, configuration and arm, or find it; return (run_id,
    created).

    Call inside a write transaction. Older runs of the same case are marked superseded (a
    shadow run only by a shadow run, the others only by a production or canary run); one
    still waiting in the queue is failed, so that stale data is never processed after new data.
    """
    if arm not in ARMS:
        raise InvalidInput(f"arm must be one of {', '.join(ARMS)}")
    manifest = build_manifest(db, case_id, seed=seed, model=model, parameters=parameters,
                              arm=arm)
    run_id = derive_run_id(manifest)
    if db["runs"].count_where("run_id = ?", [run_id]):
        return run_id, False
    now = time.time()
    db["runs"].insert({
        "run_id": run_id, "case_id": case_id, "state": QUEUED,
        "manifest": json.dumps(manifest, sort_keys=True), "input_sha256": manifest["input_sha256"],
        "attempts": 0, "not_before": now, "queued_at": now, "arm": arm,
        "model_id": model.get("id"),
    })
    shadow = int(arm == SHADOW_ARM)
    for older in db["runs"].rows_where(
            "case_id = ? AND run_id != ? AND superseded_by IS NULL "
            "AND (COALESCE(arm, ?) = ?) = ?",
            [case_id, run_id, PRODUCTION_ARM, SHADOW_ARM, shadow]):
        change: dict[str, Any] = {"superseded_by": run_id}
        if older["state"] == QUEUED:
            change.update(state=FAILED, finished_at=now,
                          reason=f"superseded by run {run_id}: more instances of the series "
                                 "arrived before this run started")
        db["runs"].update(older["run_id"], change)
    return run_id, True


# Each run with what names its study and series to a person (never the patient's name or ID).
STUDY_FIELDS = ("study_instance_uid", "series_instance_uid", "accession_number", "modality",
                "acquisition_date")
_WITH_STUDY = ("SELECT runs.*, " + ", ".join(f"series.{name} AS study_{name}"
                                              for name in STUDY_FIELDS)
               + " FROM runs LEFT JOIN cases USING (case_id)"
               " LEFT JOIN series USING (series_instance_uid)")


def get(db: sqlite_utils.Database, run_id: str) -> dict[str, Any] | None:
    rows = db.query(f"{_WITH_STUDY} WHERE run_id = ?", [run_id])
    return next((_decode(row) for row in rows), None)


def require(db: sqlite_utils.Database, run_id: str) -> dict[str, Any]:
    """The run, or NotFound (for callers that answer a person who named it)."""
    run = get(db, run_id)
    if run is None:
        raise NotFound(f"no run {run_id}")
    return run


def list_runs(db: sqlite_utils.Database, state: str | None = None, limit: int = 50, *,
              study_instance_uid: str | None = None,
              accession_number: str | None = None) -> list[dict[str, Any]]:
    """The newest runs first, of one state, study or accession number if given."""
    if state and state not in STATES:
        raise InvalidInput(f"state must be one of {', '.join(STATES)}")
    conditions = [(column, value) for column, value in (
        ("runs.state", state), ("series.study_instance_uid", study_instance_uid),
        ("series.accession_number", accession_number)) if value]
    where = " AND ".join(f"{column} = ?" for column, _ in conditions) or "1"
    rows = db.query(f"{_WITH_STUDY} WHERE {where} ORDER BY queued_at DESC LIMIT ?",
                    [value for _, value in conditions] + [limit])
    return [_decode(row) for row in rows]


def claim(db: sqlite_utils.Database, run_id: str, worker: str, lease_seconds: float) -> bool:
    """QUEUED → RUNNING for this worker, if nobody else has it. Safe against duplicate tasks."""
    now = time.time()
    cursor = db.execute(
        "UPDATE runs SET state = ?, worker = ?, started_at = ?, lease_expires_at = ?, "
        "attempts = attempts + 1 WHERE run_id = ? AND state = ? AND not_before <= ?",
        [RUNNING, worker, now, now + lease_seconds, run_id, QUEUED, now + 0.001])
    return cursor.rowcount == 1


def renew_lease(db: sqlite_utils.Database, run_id: str, worker: str,
                lease_seconds: float) -> bool:
    cursor = db.execute(
        "UPDATE runs SET lease_expires_at = ? WHERE run_id = ? AND state = ? AND worker = ?",
        [time.time() + lease_seconds, run_id, RUNNING, worker])
    return cursor.rowcount == 1


def record_stage(db: sqlite_utils.Database, run_id: str, worker: str, stage: str) -> None:
    """Note the stage a running run has reached (advisory: the worklist shows it)."""
    db.execute("UPDATE runs SET stage = ?, stage_started_at = ? WHERE run_id = ? AND state = ? "
               "AND worker = ?", [stage, time.time(), run_id, RUNNING, worker])


def succeed(db: sqlite_utils.Database, run_id: str, worker: str, result: RunResult) -> bool:
    cursor = db.execute(
        "UPDATE runs SET state = ?, finished_at = ?, result = ?, reason = NULL, "
        "lease_expires_at = NULL WHERE run_id = ? AND state = ? AND worker = ?",
        [SUCCEEDED, time.time(), json.dumps(result.to_json(), sort_keys=True), run_id, RUNNING,
         worker])
    return cursor.rowcount == 1


def readable(reason: str, limit: int = 500) -> str:
    """``reason`` as one line of printable text: control characters (NUL, escape, line
    breaks from a damaged value) become "?", and it is cut at ``limit`` characters."""
    text = "".join(c if c.isprintable() else "?" for c in reason)
    return text if len(text) <= limit else text[:limit] + "…"


def fail(db: sqlite_utils.Database, run_id: str, reason: str) -> bool:
    # A reason may quote what a broken input held: shown on pages, it must be plain text.
    reason = readable(reason)
    cursor = db.execute(
        "UPDATE runs SET state = ?, finished_at = ?, reason = ?, lease_expires_at = NULL "
        "WHERE run_id = ? AND state IN (?, ?)", [FAILED, time.time(), reason, run_id, QUEUED,
                                                 RUNNING])
    return cursor.rowcount == 1


def requeue(db: sqlite_utils.Database, run_id: str, *, delay_seconds: float,
            reason: str) -> bool:
    """RUNNING → QUEUED, not to start before the delay (retries and lost workers)."""
    cursor = db.execute(
        "UPDATE runs SET state = ?, not_before = ?, reason = ?, worker = NULL, "
        "lease_expires_at = NULL WHERE run_id = ? AND state = ?",
        [QUEUED, time.time() + delay_seconds, reason, run_id, RUNNING])
    return cursor.rowcount == 1


def is_shadow(run: dict[str, Any]) -> bool:
    return run.get("arm") == SHADOW_ARM


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    run = {key: value for key, value in row.items() if not key.startswith("study_")}
    run["arm"] = run.get("arm") or PRODUCTION_ARM
    return {**run, "manifest": json.loads(row["manifest"]),
            "result": RunResult.from_json(json.loads(row["result"])) if row["result"] else None,
            "study": {name: row[f"study_{name}"] for name in STUDY_FIELDS}}


def as_json(run: dict[str, Any]) -> dict[str, Any]:
    """A run as the API and ``--json`` show it: the result as it is stored."""
    return {**run, "result": run["result"].to_json() if run["result"] else None}


def retry(db: sqlite_utils.Database, run_id: str, *, actor: str) -> dict[str, Any]:
    """A FAILED run back to QUEUED (attempts counted afresh), audited; the caller enqueues it.

    A superseded run is not retried: its case has newer data, and that run is the one to use.
    """
    with write_transaction(db):
        run = require(db, run_id)
        if run["state"] != FAILED or run["superseded_by"]:
            raise Conflict(f"run {run_id} is {run['state']}"
                           f"{' and superseded' if run['superseded_by'] else ''}; only a failed "
                           "current run can be retried")
        now = time.time()
        db["runs"].update(run_id, {"state": QUEUED, "attempts": 0, "not_before": now,
                                   "queued_at": now, "finished_at": None,
                                   "reason": f"retried by {actor}; failed before: "
                                             f"{run['reason']}"})
        audit.record(db, actor=actor, action="run.retry", object_kind="run", object_id=run_id,
                     detail={"reason_before": run["reason"]})
    return get(db, run_id)
