"""Schema changes as ordered migrations (sqlite-utils ``Migrations``).

Append new ones at the end; never edit one that has shipped. They apply in the order written.
"""

from __future__ import annotations

import sqlite_utils
from sqlite_utils.migrations import Migrations

migrations = Migrations("aomas")


def names() -> list[str]:
    """Every migration this release knows, in order (a backup from a newer one is refused)."""
    # sqlite-utils keeps the list without a public accessor.
    return [migration.name for migration in migrations._migrations]


@migrations(name="0001_core_tables")
def _core_tables(db: sqlite_utils.Database) -> None:
    db["instances"].create({
        "sop_instance_uid": str, "sop_class_uid": str, "study_instance_uid": str,
        "series_instance_uid": str, "instance_number": int, "number_of_frames": int,
        "rows": int, "columns": int, "images_in_acquisition": int, "transfer_syntax_uid": str,
        "sha256": str, "size_bytes": int, "calling_ae": str, "received_at": float,
    }, pk="sop_instance_uid", not_null={"sha256", "series_instance_uid"})
    db["instances"].create_index(["series_instance_uid"])
    db["series"].create({
        "series_instance_uid": str, "study_instance_uid": str, "sop_class_uid": str,
        "instance_count": int, "frame_count": int, "expected_instances": int,
        "first_received_at": float, "last_received_at": float,
        # receiving → complete; a late instance puts it back to receiving
        "state": str, "completed_at": float,
    }, pk="series_instance_uid")
    db["cases"].create({
        "case_id": int, "series_instance_uid": str, "created_at": float,
    }, pk="case_id", foreign_keys=[("series_instance_uid", "series")])
    db["cases"].create_index(["series_instance_uid"], unique=True)
    db["runs"].create({
        "run_id": str, "case_id": int, "state": str, "manifest": str, "input_sha256": str,
        "attempts": int, "not_before": float, "queued_at": float, "started_at": float,
        "finished_at": float, "lease_expires_at": float, "worker": str, "reason": str,
        "result": str, "superseded_by": str,
    }, pk="run_id", foreign_keys=[("case_id", "cases")])
    db["runs"].create_index(["state"])
    db["runs"].create_index(["case_id"])
    db["audit_events"].create({
        "id": int, "at": float, "actor": str, "action": str, "object_kind": str,
        "object_id": str, "detail": str,
    }, pk="id")
    db["outbox"].create({
        "id": int, "run_id": str, "destination": str, "sop_instance_uid": str,
        "object_sha256": str, "state": str, "attempts": int, "next_attempt_at": float,
        "last_status": str, "updated_at": float,
    }, pk="id", foreign_keys=[("run_id", "runs")])
    db["outbox"].create_index(["destination", "sop_instance_uid"], unique=True)


@migrations(name="0002_accounts")
def _accounts(db: sqlite_utils.Database) -> None:
    db["users"].create({
        "username": str, "password_hash": str, "role": str, "created_at": float,
        "disabled": int,
    }, pk="username", not_null={"password_hash", "role"}, defaults={"disabled": 0})



@migrations(name="0003_outbox_details")
def _outbox_details(db: sqlite_utils.Database) -> None:
    # What each row carries (kind, SOP class) and why it is where it is (detail); created_at
    # starts the clock towards the dead letter.
    for column, kind in (("kind", str), ("sop_class_uid", str), ("created_at", float),
                         ("detail", str)):
        db["outbox"].add_column(column, kind)
    db["outbox"].create_index(["state", "next_attempt_at"])


@migrations(name="0004_roles_and_logins")
def _roles_and_logins(db: sqlite_utils.Database) -> None:
    # The roles issue 5 names; the two earlier names map onto their successors.
    db.execute("UPDATE users SET role = 'researcher' WHERE role = 'viewer'")
    db.execute("UPDATE users SET role = 'ml-engineer' WHERE role = 'ml_engineer'")
    db["users"].add_column("password_changed_at", float)
    # Every login attempt, kept for rate limiting (across processes and restarts) and review.
    db["login_attempts"].create({
        "id": int, "username": str, "remote_addr": str, "at": float, "succeeded": int,
    }, pk="id")
    db["login_attempts"].create_index(["username", "at"])
    db["login_attempts"].create_index(["remote_addr", "at"])


@migrations(name="0005_review")
def _review(db: sqlite_utils.Database) -> None:
    # Web sessions live here, not only in the cookie, so that logout, a password change or a
    # disabled account ends them for good (a copied cookie is worth nothing afterwards).
    db["web_sessions"].create({
        "session_id": str, "username": str, "created_at": float, "last_seen_at": float,
        "remote_addr": str, "ended_at": float,
    }, pk="session_id", foreign_keys=[("username", "users")])
    # The en-face tiles of each successful run, ranked by the cone network's uncertainty: the
    # active-learning queue. head_version 0 = the model's own mask, no person has edited it.
    db["tiles"].create({
        "tile_id": int, "run_id": str, "case_id": int, "row_px": int, "column_px": int,
        "height_px": int, "width_px": int, "mean_uncertainty": float, "head_version": int,
        "created_at": float,
    }, pk="tile_id", foreign_keys=[("run_id", "runs"), ("case_id", "cases")],
        defaults={"head_version": 0}, not_null={"run_id", "mean_uncertainty"})
    db["tiles"].create_index(["run_id", "row_px", "column_px"], unique=True)
    db["tiles"].create_index(["mean_uncertainty"])
    # Label versions: never updated, never deleted. A rollback is a new version whose mask is
    # the older version's (source_version says which).
    db["labels"].create({
        "label_id": int, "tile_id": int, "version": int, "mask_sha256": str, "author": str,
        "created_at": float, "kind": str, "source_version": int, "added_px": int,
        "removed_px": int, "comment": str, "idempotency_key": str,
    }, pk="label_id", foreign_keys=[("tile_id", "tiles")],
        not_null={"tile_id", "version", "mask_sha256", "author", "kind"})
    db["labels"].create_index(["tile_id", "version"], unique=True)
    # A double submit with the same key finds the first one instead of making a second version.
    db["labels"].create_index(["author", "idempotency_key"], unique=True)
    # Append-only, enforced by the database itself rather than by every caller's good manners.
    for table in ("audit_events", "labels"):
        for change in ("UPDATE", "DELETE"):
            db.execute(f"CREATE TRIGGER {table}_no_{change.lower()} BEFORE {change} ON {table} "
                       f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END")


@migrations(name="0006_adjudication")
def _adjudication(db: sqlite_utils.Database) -> None:
    # A tile flagged for a second opinion: the first rater's version (the head when flagged), a
    # blind second rating (its mask is not a label version: it competes with the head rather
    # than following it), their Dice, and the adjudicator's decision, which becomes the tile's
    # next label version and its reference. One open adjudication per tile at a time.
    db["adjudications"].create({
        "adjudication_id": int, "tile_id": int, "flagged_by": str, "flagged_at": float,
        "reason": str, "first_version": int, "first_author": str, "second_author": str,
        "second_mask_sha256": str, "second_at": float, "dice": float, "decided_by": str,
        "decided_at": float, "decision": str, "reference_version": int,
    }, pk="adjudication_id", foreign_keys=[("tile_id", "tiles")],
        not_null={"tile_id", "flagged_by", "first_version"})
    db.execute("CREATE UNIQUE INDEX adjudications_open_per_tile ON adjudications (tile_id) "
               "WHERE decided_at IS NULL")
    db["tiles"].add_column("reference_version", int)


@migrations(name="0007_reviews")
def _reviews(db: sqlite_utils.Database) -> None:
    # An accepted review of a run: which label version of each edited tile it used, the
    # measurements recomputed from them, and the reviewed SEG/SR it sent. Never changed: a
    # later acceptance is review_number + 1.
    db["reviews"].create({
        "review_id": int, "run_id": str, "review_number": int, "accepted_by": str,
        "accepted_at": float, "comment": str, "label_versions": str, "measurements": str,
        "outputs": str,
    }, pk="review_id", foreign_keys=[("run_id", "runs")],
        not_null={"run_id", "review_number", "accepted_by"})
    db["reviews"].create_index(["run_id", "review_number"], unique=True)
    for change in ("UPDATE", "DELETE"):
        db.execute(f"CREATE TRIGGER reviews_no_{change.lower()} BEFORE {change} ON reviews "
                   "BEGIN SELECT RAISE(ABORT, 'reviews is append-only'); END")


@migrations(name="0008_run_progress")
def _run_progress(db: sqlite_utils.Database) -> None:
    # The stage a RUNNING run is in and since when, for the worklist's live progress.
    db["runs"].add_column("stage", str)
    db["runs"].add_column("stage_started_at", float)


@migrations(name="0009_tile_error_probability")
def _tile_error_probability(db: sqlite_utils.Database) -> None:
    # The calibrated chance that a tile holds a false or a missed cone (gpu.calibration): the
    # review queue's ranking. Runs recorded before it keep NULL and rank by their uncertainty.
    db["tiles"].add_column("error_probability", float)
    # The queue orders by this expression (appliance.review.tiles.RANK), so index the expression.
    db.execute("CREATE INDEX idx_tiles_rank ON tiles "
               "(COALESCE(error_probability, mean_uncertainty))")


@migrations(name="0010_series_description")
def _series_description(db: sqlite_utils.Database) -> None:
    # What names a study to the person looking for its run: accession number, modality and
    # acquisition date, from the series' first instance (never the patient's name or ID).
    # Series received before this keep NULL.
    for column in ("accession_number", "modality", "acquisition_date"):
        db["series"].add_column(column, str)
    db["series"].create_index(["study_instance_uid"])
    db["series"].create_index(["accession_number"])


@migrations(name="0011_model_registry")
def _model_registry(db: sqlite_utils.Database) -> None:
    # Every model version the appliance knows: its card and the SHA-256 of its weights (the
    # weights themselves are in the object store under that hash). A version never changes;
    # its stage does, and each change is an event of its own (who, when, from, to, why).
    db["models"].create({
        "model_id": str, "version": str, "parent": str, "weights_sha256": str, "card": str,
        "stage": str, "registered_at": float, "registered_by": str,
    }, pk="model_id", not_null={"weights_sha256", "card", "stage"})
    db.execute("CREATE TRIGGER models_immutable BEFORE UPDATE OF model_id, version, parent, "
               "weights_sha256, card, registered_at, registered_by ON models BEGIN "
               "SELECT RAISE(ABORT, 'model versions are immutable'); END")
    db.execute("CREATE TRIGGER models_no_delete BEFORE DELETE ON models BEGIN "
               "SELECT RAISE(ABORT, 'model versions are never deleted'); END")
    db["model_events"].create({
        "id": int, "model_id": str, "at": float, "actor": str, "from_stage": str,
        "to_stage": str, "reason": str,
    }, pk="id", foreign_keys=[("model_id", "models")], not_null={"model_id", "to_stage"})
    db["model_events"].create_index(["model_id"])
    for change in ("UPDATE", "DELETE"):
        db.execute(f"CREATE TRIGGER model_events_no_{change.lower()} BEFORE {change} ON "
                   "model_events BEGIN SELECT RAISE(ABORT, 'model_events is append-only'); END")


@migrations(name="0012_gate_results")
def _gate_results(db: sqlite_utils.Database) -> None:
    # A model version measured on the frozen evaluation set: figures with their intervals, the
    # thresholds they were judged by, the set's hash, the code version and who asked. Never
    # changed, never deleted: a new evaluation is a new row.
    db["gate_results"].create({
        "id": int, "model_id": str, "at": float, "actor": str, "evaluation_set_sha256": str,
        "evaluation_set": str, "code_version": str, "min_f1": float, "max_ece": float,
        "f1_mean": float, "f1_low": float, "f1_high": float, "ece": float, "ece_low": float,
        "ece_high": float, "passed": int, "failures": str, "figures": str,
    }, pk="id", foreign_keys=[("model_id", "models")],
        not_null={"model_id", "evaluation_set_sha256", "passed"})
    db["gate_results"].create_index(["model_id"])
    for change in ("UPDATE", "DELETE"):
        db.execute(f"CREATE TRIGGER gate_results_no_{change.lower()} BEFORE {change} ON "
                   "gate_results BEGIN SELECT RAISE(ABORT, 'gate_results is append-only'); END")


@migrations(name="0013_model_routing")
def _model_routing(db: sqlite_utils.Database) -> None:
    # Stages as pointers: production, canary (with its share of studies) and shadow each name
    # at most one version. A change of pointer is a model_events row, now with the action
    # (register, promote, override, rollback, traffic), the canary's traffic and the gate
    # result it was judged by.
    db["model_pointers"].create({
        "pointer": str, "model_id": str, "traffic_percent": int, "since": float,
    }, pk="pointer", foreign_keys=[("model_id", "models")], not_null={"model_id"})
    for column, kind in (("action", str), ("traffic_percent", int), ("gate_result_id", int)):
        db["model_events"].add_column(column, kind)
    # The version `aomas init` registered as production before there were pointers.
    db.execute("INSERT OR IGNORE INTO model_pointers (pointer, model_id, since) "
               "SELECT 'production', model_id, registered_at FROM models "
               "WHERE stage = 'PRODUCTION'")
    # Each run's arm and model version, decided once at dispatch (appliance.routing): retries
    # and other worker boxes read them, nobody decides again. Older runs keep NULL: production.
    db["runs"].add_column("arm", str)
    db["runs"].add_column("model_id", str)
    db["runs"].create_index(["model_id"])
    # A shadow run beside the production run of the same case, compared once both finished.
    db["shadow_comparisons"].create({
        "shadow_run_id": str, "production_run_id": str, "case_id": int,
        "shadow_model_id": str, "production_model_id": str, "at": float, "figures": str,
    }, pk="shadow_run_id", foreign_keys=[("shadow_run_id", "runs"),
                                         ("production_run_id", "runs")])
    db["shadow_comparisons"].create_index(["shadow_model_id"])


@migrations(name="0014_alerts_and_drift")
def _alerts_and_drift(db: sqlite_utils.Database) -> None:
    # An alert (never patient data: names of models, figures, counts), and one delivery row
    # per channel (webhook URL or e-mail address), retried until it is taken.
    db["alerts"].create({
        "id": int, "at": float, "name": str, "severity": str, "summary": str,
        "description": str, "labels": str, "resolved_at": float, "resolved_by": str,
    }, pk="id", not_null={"name", "summary"})
    db["alert_deliveries"].create({
        "id": int, "alert_id": int, "channel": str, "target": str, "state": str,
        "attempts": int, "next_attempt_at": float, "last_error": str, "updated_at": float,
    }, pk="id", foreign_keys=[("alert_id", "alerts")])
    db["alert_deliveries"].create_index(["state", "next_attempt_at"])
    # One row per drift check: the production version's figures on the window's reviewed
    # tiles against its gate, and the label-free signals beside them.
    db["drift_reports"].create({
        "id": int, "at": float, "actor": str, "model_id": str, "window_start": float,
        "window_end": float, "reviewed_cases": int, "reviewed_tiles": int, "ece": float,
        "ece_low": float, "ece_high": float, "f1": float, "f1_low": float, "f1_high": float,
        "baseline_ece": float, "baseline_f1": float, "status": str, "signals": str,
        "alert_id": int,
    }, pk="id", not_null={"status"})


@migrations(name="0015_audit_chain")
def _audit_chain(db: sqlite_utils.Database) -> None:
    from appliance.audit import CONTENT, GENESIS_HASH, event_hash

    # Each event chains to the one before it (appliance.audit). Events already logged are
    # chained here, in id order, with the update trigger lifted for that alone.
    db["audit_events"].add_column("previous_hash", str)
    db["audit_events"].add_column("event_hash", str)
    db.execute("DROP TRIGGER audit_events_no_update")
    previous_hash = GENESIS_HASH
    for row in db.execute(f"SELECT {', '.join(CONTENT)} FROM audit_events ORDER BY id").fetchall():
        event = dict(zip(CONTENT, row, strict=True))
        chained = event_hash(event, previous_hash)
        db.execute("UPDATE audit_events SET previous_hash = ?, event_hash = ? WHERE id = ?",
                   [previous_hash, chained, event["id"]])
        previous_hash = chained
    db.execute("CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events "
               "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END")
    # Two writers appending to the same head would fork the chain; one of them fails instead.
    db["audit_events"].create_index(["previous_hash"], unique=True)
