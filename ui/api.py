"""The JSON API under /api/v1: the same actions as the pages, for scripts and the editor.

Errors are JSON ``{"error": "..."}`` with 400 (malformed), 401 (no session), 403 (role),
404 (no such thing), 409 (stale version, reused key, wrong state) or 422 (well-formed but
unusable, e.g. a mask of the wrong size). The document is ``/api/v1/openapi.json``.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np
from flask import Blueprint, current_app, g, jsonify, request
from flask_wtf.csrf import generate_csrf
from PIL import Image

from appliance import audit, labels, outbox, runs, tiles
from appliance.database import write_transaction
from appliance.exceptions import InvalidInput, NotFound
from appliance.models import model_record
from ui import auth
from ui.openapi import document
from ui.security import csrf, public, requires

blueprint = Blueprint("api", __name__, url_prefix="/api/v1")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # what SQLite stores


def _services() -> dict[str, Any]:
    return current_app.extensions["aomas"]


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidInput("send a JSON object with Content-Type: application/json")
    return body


def _field(body: dict, name: str, kind: type, *, required: bool = True, default=None):
    if name not in body:
        if required:
            raise InvalidInput(f"'{name}' is missing")
        return default
    value = body[name]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)
                        or not INT64_MIN <= value <= INT64_MAX):
        raise InvalidInput(f"'{name}' must be an integer (64-bit)")
    if kind in (str, list) and not isinstance(value, kind):
        raise InvalidInput(f"'{name}' must be a {'string' if kind is str else 'list'}")
    if kind is str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # JSON can carry lone surrogates; the database cannot
            raise InvalidInput(f"'{name}' is not valid Unicode text") from None
    return value


def _query_number(name: str, kind: type, default):
    text = request.args.get(name)
    if text is None:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise InvalidInput(f"query parameter '{name}' must be a number") from None
    if not (INT64_MIN <= value <= INT64_MAX if kind is int else math.isfinite(value)):
        raise InvalidInput(f"query parameter '{name}' is out of range")
    return value


# -- session ---------------------------------------------------------------------------------

@blueprint.post("/session")
@public
@csrf.exempt  # JSON only: a cross-site form cannot send it; there is no session yet anyway
def login():
    body = _body()
    account = auth.log_in(_field(body, "username", str), _field(body, "password", str))
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
    state = request.args.get("state") or None
    limit = _query_number("limit", int, 50)
    return jsonify([run_summary(r) for r in runs.list_runs(g.db, state=state,
                                                           limit=max(1, min(limit, 500)))])


@blueprint.get("/runs/<run_id>")
@requires("view_runs")
def get_run(run_id: str):
    return jsonify(runs.require(g.db, run_id))


@blueprint.post("/runs")
@requires("create_runs")
def create_run():
    """Process a case with the current configuration; the same case and configuration again
    answer with the existing run (200), a new one with 201."""
    case_id = _field(_body(), "case_id", int)
    config = _services()["config"]
    with write_transaction(g.db):
        if not g.db["cases"].count_where("case_id = ?", [case_id]):
            raise NotFound(f"no case {case_id}")
        run_id, created = runs.submit(
            g.db, case_id, seed=config.pipeline.seed,
            model=model_record(config.pipeline.model_dir).manifest_entry())
        if created:
            audit.record(g.db, actor=g.user["username"], action="run.create",
                         object_kind="run", object_id=run_id, detail={"case_id": case_id})
    if created:
        enqueue_run(run_id)
    return jsonify(run_summary(runs.get(g.db, run_id))), 201 if created else 200


@blueprint.post("/runs/<run_id>/retry")
@requires("create_runs")
def retry_run(run_id: str):
    run = runs.retry(g.db, run_id, actor=g.user["username"])
    enqueue_run(run_id)
    return jsonify(run_summary(run))


def enqueue_run(run_id: str) -> None:
    # The reconciler re-queues a QUEUED run whose doorbell was lost, so a queue hiccup here
    # delays the run without losing it.
    queue = _services()["queue"]
    if queue is not None:
        queue.enqueue(run_id)


def run_summary(run: dict) -> dict:
    """What a worklist row needs; the full result is at /api/v1/runs/<id>."""
    result = run.get("result") or {}
    return {key: run[key] for key in ("run_id", "case_id", "state", "attempts", "queued_at",
                                      "started_at", "finished_at", "reason", "superseded_by")
            } | {"stage_seconds": result.get("stage_seconds", {}),
                 "cone_density_per_mm2": (result.get("cones") or {}).get("cone_density_per_mm2")}


# -- active learning, tiles, labels ------------------------------------------------------------

@blueprint.get("/active-learning/queue")
@requires("view_tiles")
def review_queue():
    threshold = _query_number("uncertainty_threshold", float,
                              tiles.DEFAULT_UNCERTAINTY_THRESHOLD)
    limit = _query_number("limit", int, tiles.DEFAULT_QUEUE_LIMIT)
    if not 1 <= limit <= tiles.MAX_QUEUE_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {tiles.MAX_QUEUE_LIMIT}")
    include = request.args.get("include_labelled", "false").lower() in ("1", "true", "yes")
    return jsonify({"uncertainty_threshold": threshold, "limit": limit,
                    "tiles": tiles.review_queue(g.db, uncertainty_threshold=threshold,
                                                limit=limit, include_labelled=include)})


@blueprint.get("/tiles/<int:tile_id>")
@requires("view_tiles")
def get_tile(tile_id: int):
    """The tile with the three images the editor shows, as base64 PNGs."""
    tile = tiles.get(g.db, tile_id)
    store = _services()["store"]
    images = tiles.images(g.db, store, tile)
    mask = labels.mask_of(g.db, store, tile, tile["head_version"])
    return jsonify({**tile, "images": {
        "enface_png": _png(images.enface),
        "mask_png": _png(mask.astype(np.float32)),
        "uncertainty_png": _png(images.uncertainty / tiles.UNCERTAINTY_DISPLAY_MAX),
    }})


@blueprint.get("/tiles/<int:tile_id>/labels")
@requires("view_tiles")
def tile_history(tile_id: int):
    return jsonify(labels.history(g.db, tile_id))


@blueprint.post("/labels")
@requires("edit_labels")
def create_label():
    body = _body()
    try:
        mask_png = base64.b64decode(_field(body, "mask_png", str), validate=True)
    except ValueError:  # binascii.Error, or characters outside ASCII
        raise InvalidInput("mask_png must be base64 (a PNG file's bytes)") from None
    version, created = labels.save(
        g.db, _services()["store"], _field(body, "tile_id", int), mask_png,
        author=g.user["username"], base_version=_field(body, "base_version", int),
        comment=_field(body, "comment", str, required=False, default=""),
        idempotency_key=request.headers.get("Idempotency-Key"))
    return _version_answer(version, created)


@blueprint.post("/labels/rollback")
@requires("edit_labels")
def rollback_label():
    body = _body()
    version, created = labels.rollback(
        g.db, _services()["store"], _field(body, "tile_id", int),
        _field(body, "target_version", int), author=g.user["username"],
        comment=_field(body, "comment", str, required=False, default=""),
        idempotency_key=request.headers.get("Idempotency-Key"))
    return _version_answer(version, created)


def _version_answer(version: dict, created: bool):
    # 201 for a new version; 200 when an Idempotency-Key found the one made the first time.
    return jsonify(labels.shown(version)), 201 if created else 200


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
    body = _body()
    ids = _field(body, "ids", list, required=False, default=[])
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise InvalidInput("'ids' must be a list of outbox row ids")
    count = outbox.retry(g.db, actor=g.user["username"], ids=ids,
                         run_id=_field(body, "run_id", str, required=False),
                         destination=_field(body, "destination", str, required=False))
    return jsonify({"requeued": count})


@blueprint.get("/audit")
@requires("view_audit")
def audit_log():
    return jsonify(audit.search(
        g.db, actor=request.args.get("actor", ""), action=request.args.get("action", ""),
        object_kind=request.args.get("object_kind", ""),
        object_id=request.args.get("object_id", ""), limit=_query_number("limit", int, 200),
        before_id=_query_number("before_id", int, None)))


def _png(values: np.ndarray) -> str:
    """A 0..1 array as a base64 8-bit grey PNG."""
    pixels = (np.clip(np.nan_to_num(values), 0, 1) * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, "PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode()
