"""The OpenAPI 3.1 document of /api/v1, written out by hand next to the routes it describes.

Kept as data rather than generated from docstrings: it is what clients and the schema-driven
fuzz test read, so it should say exactly what the API promises and nothing it does not.
"""

from __future__ import annotations

from typing import Any

from appliance import outbox, runs
from appliance.lifecycle import DEFAULT_CANARY_PERCENT, POINTER_OF
from appliance.limits import (
    MAX_IDEMPOTENCY_KEY_CHARS,
    MAX_ROWS_LISTED,
    MAX_RUNS_LISTED,
    MAX_TEXT_CHARS,
    MAX_TRAINING_ITERATIONS,
    MAX_UID_CHARS,
)
from appliance.review import adjudication, tiles
from appliance.version import pipeline_version
from ui.openapi_schemas import object_schema as _object
from ui.openapi_schemas import ref, schemas

ERROR = ref("Error")
ALERT = ref("Alert")
DRIFT = ref("DriftReport")
TRAINING = _object({"model_id": {"type": "string"}, "started": {"type": "boolean"}},
                   ["model_id", "started"])


def _answer(description: str, schema: dict | None = None) -> dict:
    answer: dict[str, Any] = {"description": description}
    if schema is not None:
        answer["content"] = {"application/json": {"schema": schema}}
    return answer


def _errors(*codes: int) -> dict:
    meaning = {400: "malformed request or CSRF token missing", 401: "no session; log in",
               403: "the role may not do this (or this person, e.g. a rater adjudicating)",
               404: "no such object",
               409: "conflicts with the current state (stale version, reused key)",
               422: "well-formed but unusable"}
    return {str(code): _answer(meaning[code], ERROR) for code in (401, 403, *codes)}


def _json_body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _path_id(name: str, kind: str = "string") -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": kind}}


def _query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


IDEMPOTENCY_KEY = {"name": "Idempotency-Key", "in": "header", "required": False,
                   "schema": {"type": "string", "minLength": 1,
                              "maxLength": MAX_IDEMPOTENCY_KEY_CHARS},
                   "description": "The same key again returns the version made the first time."}
LABEL_VERSION = ref("LabelVersion")
ACCOUNT = ref("Account")
RUN_DETAIL = ref("Run")
REVIEW = ref("Review")
TILE = ref("Tile")
OUTBOX_ROW = ref("OutboxRow")
AUDIT_EVENT = ref("AuditEvent")
MODEL = ref("Model")
ADJUDICATION = ref("Adjudication")
RUN = ref("RunSummary")


def document() -> dict[str, Any]:
    paths = {
        "/api/v1/session": {
            "post": {"summary": "Log in; answers the CSRF token to send as X-CSRF-Token",
                     "security": [], "requestBody": _json_body(_object(
                         {"username": {"type": "string"}, "password": {"type": "string"}},
                         ["username", "password"])),
                     "responses": {"201": _answer("logged in", _object({
                         "username": {"type": "string"}, "role": {"type": "string"},
                         "csrf_token": {"type": "string"}})),
                         "401": _answer("refused", ERROR), "422": _answer("no JSON", ERROR)}},
            # 204 carries no body, so no schema.
            "delete": {"summary": "Log out", "responses": {"204": _answer("logged out"),
                                                           **_errors()}}},
        "/api/v1/me": {"get": {"summary": "The session's account and CSRF token",
                               "responses": {"200": _answer("the account", ACCOUNT), **_errors()}}},
        "/api/v1/runs": {
            "get": {"summary": "Runs, newest first", "parameters": [
                _query("state", {"type": "string",
                                 "enum": list(runs.STATES)},
                       "only runs in this state"),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_RUNS_LISTED},
                       "at most"),
                _query("study_instance_uid", {"type": "string", "maxLength": MAX_UID_CHARS},
                       "only runs of this study"),
                _query("accession_number", {"type": "string", "maxLength": 16},
                       "only runs of this accession number")],
                "responses": {"200": _answer("runs", {"type": "array", "items": RUN}),
                              **_errors(422)}},
            "post": {"summary": "Process a case with the current configuration (idempotent)",
                     "requestBody": _json_body(_object({"case_id": {"type": "integer"}},
                                                       ["case_id"])),
                     "responses": {"201": _answer("queued", RUN),
                                   "200": _answer("the same run already exists", RUN),
                                   **_errors(400, 404, 422)}}},
        "/api/v1/cases": {"post": {
            "summary": "Upload DICOM Part 10 files (a volume); stored exactly like C-STOREs, a "
                       "run starts when the series is complete (admin, ml-engineer)",
            "requestBody": {"required": True, "content": {"multipart/form-data": {
                "schema": _object({"files": {"type": "array", "items": {
                    "type": "string", "contentMediaType": "application/dicom"}}},
                    ["files"])}}},
            "responses": {"201": _answer("every file stored", _object({"stored": {
                "type": "array"}})),
                "413": _answer("the body is larger than web.max_upload_mb (2 GiB by default); "
                               "send the files in several requests", ERROR),
                "422": _answer("a file was refused; 'stored' lists the ones before it", ERROR),
                "503": _answer("the disk is full or the database busy; resend", ERROR),
                **_errors(400)}}},
        "/api/v1/runs/{run_id}": {"get": {
            "summary": "One run with manifest and result", "parameters": [_path_id("run_id")],
            "responses": {"200": _answer("the run", RUN_DETAIL), **_errors(404)}}},
        "/api/v1/runs/{run_id}/retry": {"post": {
            "summary": "Queue a failed run again", "parameters": [_path_id("run_id")],
            "responses": {"200": _answer("queued", RUN), **_errors(400, 404, 409)}}},
        "/api/v1/runs/{run_id}/review": {"post": {
            "summary": "Accept the run's review: cone measurements recomputed from the labelled "
                       "tiles, a reviewed cone SEG and SR (verified by you) to the PACS "
                       "(admin, clinician)",
            "parameters": [_path_id("run_id")],
            "requestBody": _json_body(_object({"comment": {"type": "string",
                                                           "maxLength": MAX_TEXT_CHARS}})),
            "responses": {"201": _answer("the accepted review", REVIEW),
                          "200": _answer("no label changed since the last review; that one",
                                         REVIEW),
                          **_errors(400, 404, 409, 422)}}},
        "/api/v1/runs/{run_id}/reviews": {"get": {
            "summary": "The run's accepted reviews, oldest first",
            "parameters": [_path_id("run_id")],
            "responses": {"200": _answer("reviews", {"type": "array"}), **_errors(404)}}},
        "/api/v1/active-learning/queue": {"get": {
            "summary": "Tiles whose calibrated error probability (older runs: mean "
                       "uncertainty) is above the threshold, likeliest first",
            "parameters": [
                _query("uncertainty_threshold", {"type": "number"},
                       f"default {tiles.DEFAULT_UNCERTAINTY_THRESHOLD}"),
                _query("limit", {"type": "integer", "minimum": 1,
                                 "maximum": tiles.MAX_QUEUE_LIMIT},
                       f"default {tiles.DEFAULT_QUEUE_LIMIT}"),
                _query("include_labelled", {"type": "boolean"}, "also tiles already labelled")],
            "responses": {"200": _answer("the queue", _object({
                "uncertainty_threshold": {"type": "number"}, "limit": {"type": "integer"},
                "tiles": {"type": "array", "items": TILE}},
                ["uncertainty_threshold", "limit", "tiles"])), **_errors(422)}}},
        "/api/v1/tiles/{tile_id}": {"get": {
            "summary": "A tile with its en-face, mask (current version) and uncertainty PNGs",
            "parameters": [_path_id("tile_id", "integer")],
            "responses": {"200": _answer("the tile", {"allOf": [TILE, _object({"images": _object(
                {name: {"type": "string", "contentEncoding": "base64",
                        "contentMediaType": "image/png"}
                 for name in ("enface_png", "mask_png", "uncertainty_png")})}, ["images"])]}),
                **_errors(404)}}},
        "/api/v1/tiles/{tile_id}/labels": {"get": {
            "summary": "The tile's label versions, the model's as version 0",
            "parameters": [_path_id("tile_id", "integer")],
            "responses": {"200": _answer("versions", {"type": "array",
                                                      "items": LABEL_VERSION}),
                          **_errors(404)}}},
        "/api/v1/labels": {"post": {
            "summary": "Save an edited mask as the tile's next version",
            "parameters": [IDEMPOTENCY_KEY],
            "requestBody": _json_body(_object({
                "tile_id": {"type": "integer"},
                "base_version": {"type": "integer",
                                 "description": "the version the edit started from"},
                "mask_png": {"type": "string", "contentEncoding": "base64",
                             "description": "PNG of the tile's size; non-zero = cone"},
                "comment": {"type": "string", "maxLength": MAX_TEXT_CHARS}},
                ["tile_id", "base_version", "mask_png"])),
            "responses": {"201": _answer("the new version", LABEL_VERSION),
                          "200": _answer("made before with this Idempotency-Key",
                                         LABEL_VERSION),
                          **_errors(400, 404, 409, 422)}}},
        "/api/v1/labels/rollback": {"post": {
            "summary": "A new version with an older version's mask",
            "parameters": [IDEMPOTENCY_KEY],
            "requestBody": _json_body(_object({
                "tile_id": {"type": "integer"}, "target_version": {"type": "integer"},
                "comment": {"type": "string", "maxLength": MAX_TEXT_CHARS}},
                ["tile_id", "target_version"])),
            "responses": {"201": _answer("the new version", LABEL_VERSION),
                          "200": _answer("made before with this Idempotency-Key",
                                         LABEL_VERSION),
                          **_errors(400, 404, 409, 422)}}},
        "/api/v1/adjudications": {"get": {
            "summary": "Tiles flagged for adjudication, oldest waiting first",
            "parameters": [_query("state", {"type": "string", "enum": list(
                adjudication.STATES)}, "only in this state"),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_ROWS_LISTED},
                       "at most")],
            "responses": {"200": _answer("adjudications", {"type": "array",
                                                           "items": ADJUDICATION}),
                          **_errors(422)}}},
        "/api/v1/tiles/{tile_id}/adjudication": {
            "get": {"summary": "The tile's open (else latest) adjudication, or null; a blind "
                               "rater sees only its state",
                    "parameters": [_path_id("tile_id", "integer")],
                    "responses": {"200": _answer("the adjudication; null when there is none",
                                                 {"anyOf": [ADJUDICATION, {"type": "null"}]}),
                                  **_errors(404)}},
            "post": {"summary": "Flag the tile's current version for a blind second opinion",
                     "parameters": [_path_id("tile_id", "integer")],
                     "requestBody": _json_body(_object({"reason": {
                         "type": "string", "maxLength": MAX_TEXT_CHARS}})),
                     "responses": {"201": _answer("flagged", ADJUDICATION),
                                   **_errors(400, 404, 409, 422)}}},
        "/api/v1/tiles/{tile_id}/adjudication/rating": {"post": {
            "summary": "The blind second rating (a labeler who has not labelled the tile)",
            "parameters": [_path_id("tile_id", "integer")],
            "requestBody": _json_body(_object({"mask_png": {
                "type": "string", "contentEncoding": "base64"}}, ["mask_png"])),
            "responses": {"201": _answer("rated; the Dice agreement is in 'dice'",
                                         ADJUDICATION),
                          "200": _answer("this rating was recorded before", ADJUDICATION),
                          **_errors(400, 404, 409, 422)}}},
        "/api/v1/tiles/{tile_id}/adjudication/decision": {"post": {
            "summary": "Keep one opinion or combine both as the reference version "
                       "(adjudicator: admin or clinician, not a rater)",
            "parameters": [_path_id("tile_id", "integer")],
            "requestBody": _json_body(_object({
                "choice": {"type": "string", "enum": list(adjudication.CHOICES)},
                "comment": {"type": "string", "maxLength": MAX_TEXT_CHARS}}, ["choice"])),
            "responses": {"201": _answer("the reference version", LABEL_VERSION),
                          **_errors(400, 404, 409, 422)}}},
        "/api/v1/outbox": {"get": {
            "summary": "Outputs to deliver, per destination (admin)",
            "parameters": [_query("state", {"type": "string",
                                            "enum": list(outbox.STATES)},
                                  "only rows in this state")],
            "responses": {"200": _answer("rows", {"type": "array", "items": OUTBOX_ROW}),
                          **_errors(422)}}},
        "/api/v1/outbox/retry": {"post": {
            "summary": "Send dead or waiting outputs again now (admin)",
            "requestBody": _json_body(_object({
                "ids": {"type": "array", "items": {"type": "integer"}},
                "run_id": {"type": "string"}, "destination": {"type": "string"}})),
            "responses": {"200": _answer("how many rows were requeued",
                                         _object({"requeued": {"type": "integer"}},
                                                 ["requeued"])),
                          **_errors(400, 422)}}},
        "/api/v1/audit": {"get": {
            "summary": "The audit log, newest first (admin)",
            "parameters": [_query(name, {"type": "string"}, f"exact {name}")
                           for name in ("actor", "object_kind", "object_id")] + [
                _query("action", {"type": "string"}, "action prefix, e.g. label."),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_ROWS_LISTED},
                       "at most"),
                _query("before_id", {"type": "integer"}, "page: events older than this id")],
            "responses": {"200": _answer("events", {"type": "array", "items": AUDIT_EVENT}),
                          **_errors(422)}}},
        "/api/v1/models": {
            "get": {"summary": "Registered model versions, oldest first",
                    "responses": {"200": _answer("models", {"type": "array", "items": MODEL}),
                                  **_errors()}},
            "post": {"summary": "Register a model version as STAGING (admin, ml-engineer): "
                                "weights as safetensors (pickles are refused) and its card",
                     "requestBody": {"required": True, "content": {"multipart/form-data": {
                         "schema": _object({"weights": {"type": "string",
                                                        "contentMediaType":
                                                            "application/octet-stream"},
                                            "card": {"type": "string",
                                                     "contentMediaType": "application/json"}},
                                           ["weights", "card"])}}},
                     "responses": {"201": _answer("registered", MODEL),
                                   "200": _answer("this version was registered before", MODEL),
                                   "409": _answer("the id is registered with other weights",
                                                  ERROR),
                                   "413": _answer("larger than web.max_upload_mb", ERROR),
                                   **_errors(400, 422)}}},
        "/api/v1/models/{model_id}": {"get": {
            "summary": "One model version: card, stage and the history of its stage",
            "parameters": [_path_id("model_id")],
            "responses": {"200": _answer("the model", MODEL), **_errors(404)}}},
        "/api/v1/models/train-from-reviews": {"post": {
            "summary": "Fine-tune a new version on the reviewed labels (plus phantoms) in the "
                       "background (admin, ml-engineer); it is registered as STAGING with its "
                       "gate result and never promoted by itself",
            "requestBody": _json_body(_object({
                "model_id": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
                "parent": {"type": "string", "description": "default: production"},
                "iterations": {"type": "integer", "minimum": 1,
                               "maximum": MAX_TRAINING_ITERATIONS}}, ["model_id"])),
            "responses": {"202": _answer("started", TRAINING),
                          "200": _answer("this retraining was running already", TRAINING),
                          **_errors(400, 404, 422)}}},
        "/api/v1/models/{model_id}/gate": {"post": {
            "summary": "Evaluate the version on the frozen evaluation set in the background "
                       "(admin, ml-engineer); GET the model for the result",
            "parameters": [_path_id("model_id")],
            "responses": {"202": _answer("started", MODEL),
                          "200": _answer("its evaluation was running already", MODEL),
                          **_errors(400, 404)}}},
        "/api/v1/models/{model_id}/promote": {"post": {
            "summary": "Point SHADOW, CANARY (with its share of studies) or PRODUCTION at the "
                       "version (admin, ml-engineer); only when its gate passes, unless an "
                       "admin overrides with a reason",
            "parameters": [_path_id("model_id")],
            "requestBody": _json_body(_object({
                "stage": {"type": "string", "enum": list(POINTER_OF)},
                "traffic_percent": {"type": "integer", "minimum": 1, "maximum": 100,
                                    "description": "canary only; default "
                                                   f"{DEFAULT_CANARY_PERCENT}"},
                "override_reason": {"type": "string", "maxLength": MAX_TEXT_CHARS,
                                    "description": "admins: promote despite a failed gate"}},
                ["stage"])),
            "responses": {"200": _answer("the version as it stands now", MODEL),
                          "400": _answer("the gate does not allow it: the failing figure "
                                         "(\"F1 0.87 below 0.90\")", ERROR),
                          **_errors(404, 422)}}},
        "/api/v1/models/{model_id}/rollback": {"post": {
            "summary": "Take the version off every pointer; production back to the version "
                       "before (admin, ml-engineer). Idempotent",
            "parameters": [_path_id("model_id")],
            "requestBody": {"required": False, "content": {"application/json": {
                "schema": _object({"reason": {"type": "string",
                                              "maxLength": MAX_TEXT_CHARS}})}}},
            "responses": {"200": _answer("rolled back, or already (changed false)", _object(
                {"model": MODEL, "changed": {"type": "boolean"},
                 "message": {"type": "string"}}, ["model", "changed", "message"])),
                          **_errors(400, 404, 409, 422)}}},
        "/api/v1/alerts": {"get": {
            "summary": "Alerts, newest first, with their deliveries (no patient data)",
            "parameters": [_query("limit", {"type": "integer", "minimum": 1, "maximum": 500},
                                  "at most")],
            "responses": {"200": _answer("alerts", {"type": "array", "items": ALERT}),
                          **_errors(422)}}},
        "/api/v1/alerts/{alert_id}/resolve": {"post": {
            "summary": "Mark an alert handled (admin, ml-engineer); again changes nothing",
            "parameters": [_path_id("alert_id", "integer")],
            "responses": {"200": _answer("the alert", ALERT), **_errors(400, 404)}}},
        "/api/v1/drift": {"get": {
            "summary": "The drift checks, newest first",
            "responses": {"200": _answer("reports", {"type": "array", "items": DRIFT}),
                          **_errors()}}},
        "/api/v1/drift/check": {"post": {
            "summary": "Run the drift check now and record it (admin, ml-engineer)",
            "responses": {"201": _answer("the report", DRIFT), **_errors(400)}}},
        "/api/v1/exports": {"post": {
            "summary": "A study's inputs and outputs de-identified (PS3.15 Basic Profile: UIDs "
                       "remapped consistently, dates shifted) with measurements.csv, as a ZIP "
                       "(researcher, admin); audited with counts",
            "requestBody": _json_body(_object({
                "study_instance_uid": {"type": "string", "maxLength": 64},
                "date_shift_days": {"type": "integer", "minimum": 0, "maximum": 36500,
                                    "description": "default export.date_shift_days (0: "
                                                   "random per export)"}},
                ["study_instance_uid"])),
            "responses": {"200": {"description": "the export", "content": {
                "application/zip": {"schema": {"type": "string", "format": "binary"}}}},
                          **_errors(400, 404, 422)}}},
        "/api/v1/openapi.json": {"get": {"summary": "This document",
                                         "responses": {"200": _answer("OpenAPI 3.1", _object(
                                             {"openapi": {"type": "string"},
                                              "paths": {"type": "object"}},
                                             ["openapi", "paths"])), **_errors()}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "AOMAS API", "version": pipeline_version()["package"],
                 "description": "Runs, the active-learning queue, tiles and label versions of "
                                "an AOMAS appliance. Log in with POST /api/v1/session; send "
                                "the session cookie, and on writes the CSRF token as "
                                "X-CSRF-Token."},
        "servers": [{"url": "/"}],
        "security": [{"session": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"session": {"type": "apiKey", "in": "cookie",
                                            "name": "aomas_session"}},
            "schemas": schemas(),
        },
    }
