"""The JSON API under /api/v1: sessions, runs, outbox and audit (tiles, labels and
adjudication are in ``ui.api_labels``); the same actions as the pages, for scripts and the
editor.

Errors are JSON ``{"error": "..."}`` with 400 (malformed), 401 (no session), 403 (role),
404 (no such thing), 409 (stale version, reused key, wrong state) or 422 (well-formed but
unusable, e.g. a mask of the wrong size). The document is ``/api/v1/openapi.json``.
"""

from __future__ import annotations

from flask import Blueprint, g, jsonify, request
from flask_wtf.csrf import generate_csrf

from appliance import audit, outbox, routing, runs, uploads
from appliance.database import write_transaction
from appliance.exceptions import InvalidInput, NotFound, TransientError
from appliance.limits import MAX_RUNS_LISTED
from appliance.review import acceptance
from ui import auth, payload
from ui.openapi import document
from ui.request import spooled_path
from ui.security import csrf, public, requires, takes_large_bodies

blueprint = Blueprint("api", __name__, url_prefix="/api/v1")


# -- session ---------------------------------------------------------------------------------

@blueprint.post("/session")
@public
@csrf.exempt  # JSON only: a cross-site form cannot send it; there is no session yet anyway
def login():
    body = payload.body()
    account = auth.log_in(payload.field(body, "username", str),
                          payload.field(body, "password", str))
    return jsonify({**account, "csrf_token": generate_csrf()}), 201


@blueprint.delete("/session")
@requires("own_account")
def logout():
    auth.log_out()
    return "", 204


@blueprint.get("/me")
@requires("own_account")
def me():
    return jsonify({**g.user, "csrf_token": generate_csrf()})


@blueprint.get("/openapi.json")
@requires("own_account")
def openapi():
    return jsonify(document())


# -- runs ------------------------------------------------------------------------------------

@blueprint.get("/runs")
@requires("view_runs")
def list_runs():
    limit = payload.query_number("limit", int, 50)
    found = runs.list_runs(g.db, state=request.args.get("state") or None,
                           limit=max(1, min(limit, MAX_RUNS_LISTED)),
                           study_instance_uid=request.args.get("study_instance_uid") or None,
                           accession_number=request.args.get("accession_number") or None)
    return jsonify([run_summary(r) for r in found])


@blueprint.get("/runs/<run_id>")
@requires("view_runs")
def get_run(run_id: str):
    return jsonify(runs.as_json(runs.require(g.db, run_id)))


@blueprint.post("/runs")
@requires("create_runs")
def create_run():
    """Process a case with the current configuration and the model versions the registry
    routes it to now (a re-run after a rollback); the same case and configuration again answer
    with the existing run (200), a new one with 201. The answer is the production or canary
    run; a shadow run, if any, is queued beside it."""
    run_id, created = dispatch_case(payload.field(payload.body(), "case_id", int))
    return jsonify(run_summary(runs.get(g.db, run_id))), 201 if created else 200


def dispatch_case(case_id: int) -> tuple[str, bool]:
    """The one way the API and the pages start a case's runs: routed now, audited, queued;
    returns the production or canary run as (run_id, created)."""
    parts = payload.appliance()
    with write_transaction(g.db):
        if not g.db["cases"].count_where("case_id = ?", [case_id]):
            raise NotFound(f"no case {case_id}")
        dispatched = routing.dispatch(g.db, case_id, seed=parts.config.pipeline.seed,
                                      fallback=parts.model.manifest_entry())
        for run_id, created in dispatched:
            if created:
                audit.record(g.db, actor=g.user["username"], action="run.create",
                             object_kind="run", object_id=run_id, detail={"case_id": case_id})
    for run_id, created in dispatched:
        if created:
            enqueue_run(run_id)
    return dispatched[0]


@blueprint.post("/runs/<run_id>/retry")
@requires("create_runs")
def retry_run(run_id: str):
    run = runs.retry(g.db, run_id, actor=g.user["username"])
    enqueue_run(run_id)
    return jsonify(run_summary(run))


@blueprint.post("/runs/<run_id>/review")
@requires("accept_reviews")
def accept_review(run_id: str):
    """Accept the run's review: measurements from the reviewed masks, a reviewed SEG/SR in
    the outbox. 201 for a new review; 200 when no label changed since the last one."""
    review, created = accept_run_review(
        run_id, payload.field(payload.body(), "comment", str, required=False, default=""))
    return jsonify(review), 201 if created else 200


@blueprint.get("/runs/<run_id>/reviews")
@requires("view_runs")
def list_reviews(run_id: str):
    runs.require(g.db, run_id)
    return jsonify(acceptance.of_run(g.db, run_id))


def accept_run_review(run_id: str, comment: str) -> tuple[dict, bool]:
    """The one way the API and the run page accept a review."""
    parts = payload.appliance()
    return acceptance.accept(
        g.db, parts.store, run_id, reviewer=g.user["username"],
        destinations=parts.config.destinations,
        device_serial_number=parts.config.appliance.device_serial_number,
        comment=comment)


@blueprint.post("/cases")
@requires("upload_cases")
@takes_large_bodies
def upload_case():
    """DICOM Part 10 files as multipart ``files``, stored like C-STOREs; 201 when every file
    is stored. A refused file answers with the reason and the files stored before it."""
    files = request.files.getlist("files")
    if not files:
        raise InvalidInput("send the DICOM files as multipart/form-data fields named 'files'")
    ingest, stored, refusal = payload.appliance().ingest, [], None
    for number, upload in enumerate(files, start=1):
        try:
            stored.append(uploads.store_upload(
                ingest, spooled_path(upload.stream), uploader=g.user["username"],
                peer_address=request.remote_addr or "", label=f"file {number}"))
        except (InvalidInput, TransientError) as error:
            refusal = error
            break
    if stored:
        with write_transaction(g.db):
            audit.record(g.db, actor=g.user["username"], action="case.upload",
                         object_kind="series", object_id=stored[0]["series_instance_uid"],
                         detail={"instances": len(stored), "of_files": len(files),
                                 "series": len({s["series_instance_uid"] for s in stored})})
    if refusal is not None:
        # What got in stays in; the client resends from the refused file on.
        return jsonify(error=str(refusal), stored=stored), \
            422 if isinstance(refusal, InvalidInput) else 503
    return jsonify({"stored": stored}), 201


def enqueue_run(run_id: str) -> None:
    # The reconciler re-queues a QUEUED run whose doorbell was lost, so a queue hiccup here
    # delays the run without losing it.
    payload.appliance().queue.enqueue(run_id, arm=g.db["runs"].get(run_id)["arm"])


def run_summary(run: dict) -> dict:
    """What a worklist row needs; the full result is at /api/v1/runs/<id>."""
    result = run.get("result")
    return {key: run.get(key) for key in ("run_id", "case_id", "state", "attempts", "queued_at",
                                          "started_at", "finished_at", "reason", "superseded_by",
                                          "stage", "stage_started_at", "study", "arm",
                                          "model_id")
            } | {"stage_seconds": result.stage_seconds if result else {},
                 "cone_density_per_mm2": result.cones.get("cone_density_per_mm2")
                 if result else None,
                 "needs_review": list(result.needs_review.reasons) if result else None}


# -- outbox and audit --------------------------------------------------------------------------

@blueprint.get("/outbox")
@requires("manage_outbox")
def list_outbox():
    state = request.args.get("state") or None
    if state and state not in outbox.STATES:
        raise InvalidInput(f"state must be one of {', '.join(outbox.STATES)}")
    return jsonify(outbox.rows(g.db, state))


@blueprint.post("/outbox/retry")
@requires("manage_outbox")
def retry_outbox():
    body = payload.body()
    ids = payload.field(body, "ids", list, required=False, default=[])
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise InvalidInput("'ids' must be a list of outbox row ids")
    count = outbox.retry(g.db, actor=g.user["username"], ids=ids,
                         run_id=payload.field(body, "run_id", str, required=False),
                         destination=payload.field(body, "destination", str, required=False))
    return jsonify({"requeued": count})


@blueprint.get("/audit")
@requires("view_audit")
def audit_log():
    return jsonify(audit.search(
        g.db, actor=request.args.get("actor", ""), action=request.args.get("action", ""),
        object_kind=request.args.get("object_kind", ""),
        object_id=request.args.get("object_id", ""), limit=payload.query_number("limit", int, 200),
        before_id=payload.query_number("before_id", int, None)))
