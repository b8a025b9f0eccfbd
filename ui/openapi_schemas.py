"""The OpenAPI document's schemas: the shapes of what the API answers (ui.openapi)."""

from __future__ import annotations

from typing import Any

from appliance import outbox, registry
from appliance.review import adjudication, labels
from appliance.run_result import RESULT_FIELDS
from appliance.runs import ARMS, STUDY_FIELDS

NUMBER_OR_NULL, INTEGER_OR_NULL = {"type": ["number", "null"]}, {"type": ["integer", "null"]}
STRING_OR_NULL = {"type": ["string", "null"]}


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def object_schema(properties: dict, required: list[str] | None = None) -> dict:
    schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema

RUN = ref("RunSummary")


def schemas() -> dict[str, Any]:
    return {
        "Error": object_schema({"error": {"type": "string"}}, ["error"]),
        "RunSummary": object_schema({
            "run_id": {"type": "string"}, "case_id": {"type": "integer"},
            "state": {"type": "string"}, "attempts": {"type": "integer"},
            "reason": {"type": ["string", "null"]},
            "stage": {"type": ["string", "null"],
                      "description": "the stage a RUNNING run is in"},
            "stage_started_at": {"type": ["number", "null"]},
            "arm": {"type": "string", "enum": list(ARMS),
                    "description": "production and canary results go to the PACS, shadow "
                                   "results never"},
            "model_id": {"type": ["string", "null"],
                         "description": "the model version it was dispatched with"},
            "study": object_schema({
                name: {"type": ["string", "null"]} for name in STUDY_FIELDS},
                list(STUDY_FIELDS))}, ["run_id", "state", "study"]),
        "Account": object_schema({"username": {"type": "string"},
                            "role": {"type": "string"},
                            "csrf_token": {"type": "string"}},
                           ["username", "role", "csrf_token"]),
        "Run": {"allOf": [RUN, object_schema({
            "manifest": {"type": "object"},
            # The stored run result: the fields appliance.run_result declares.
            "result": {"type": ["object", "null"], "properties": {
                name: {} for name in RESULT_FIELDS}}}, ["manifest", "result"])]},
        "Review": object_schema({
            "review_id": {"type": "integer"}, "run_id": {"type": "string"},
            "review_number": {"type": "integer"}, "accepted_by": {"type": "string"},
            "accepted_at": {"type": "number"}, "comment": STRING_OR_NULL,
            "label_versions": {"type": "object"}, "measurements": {"type": "object"},
            "outputs": {"type": "array", "items": {"type": "object"}},
            "report_output": {"type": ["object", "null"]}},
            ["review_id", "run_id", "review_number", "accepted_by"]),
        "Tile": object_schema({
            "tile_id": {"type": "integer"}, "run_id": {"type": "string"},
            "case_id": {"type": "integer"}, "row_px": {"type": "integer"},
            "column_px": {"type": "integer"}, "height_px": {"type": "integer"},
            "width_px": {"type": "integer"}, "mean_uncertainty": {"type": "number"},
            "error_probability": NUMBER_OR_NULL, "head_version": INTEGER_OR_NULL,
            "reference_version": INTEGER_OR_NULL, "blind": {"type": "boolean"}},
            ["tile_id", "run_id", "row_px", "column_px"]),
        "OutboxRow": object_schema({
            "id": {"type": "integer"}, "run_id": {"type": "string"},
            "destination": {"type": "string"}, "kind": STRING_OR_NULL,
            "sop_instance_uid": {"type": "string"},
            "state": {"type": "string", "enum": list(outbox.STATES)},
            "attempts": {"type": "integer"}, "next_attempt_at": NUMBER_OR_NULL,
            "last_status": STRING_OR_NULL, "detail": STRING_OR_NULL},
            ["id", "run_id", "destination", "state"]),
        "Model": object_schema({
            "model_id": {"type": "string"}, "version": {"type": "string"},
            "parent": STRING_OR_NULL, "weights_sha256": {"type": "string"},
            "stage": {"type": "string", "enum": list(registry.STAGES)},
            "registered_at": {"type": "number"}, "registered_by": {"type": "string"},
            "card": {"type": "object",
                     "required": list(registry.REQUIRED_CARD_FIELDS)},
            "history": {"type": "array", "items": object_schema({
                "at": {"type": "number"}, "actor": {"type": "string"},
                "from_stage": STRING_OR_NULL, "to_stage": {"type": "string"},
                "reason": STRING_OR_NULL, "action": STRING_OR_NULL,
                "traffic_percent": INTEGER_OR_NULL, "gate_result_id": INTEGER_OR_NULL})},
            "gate_running": {"type": "boolean"},
            "promoted_by_override": {"type": "boolean"},
            "shadow_summary": object_schema({"cases": {"type": "integer"}}, ["cases"]),
            "gate_results": {"type": "array", "items": object_schema({
                "passed": {"type": "boolean"}, "f1_mean": {"type": "number"},
                "ece": {"type": "number"}, "min_f1": {"type": "number"},
                "max_ece": {"type": "number"},
                "evaluation_set_sha256": {"type": "string"},
                "failures": {"type": "array", "items": {"type": "string"}}},
                ["passed", "f1_mean", "ece", "evaluation_set_sha256"])}},
            ["model_id", "version", "weights_sha256", "stage", "card"]),
        "Alert": object_schema({
            "id": {"type": "integer"}, "at": {"type": "number"}, "name": {"type": "string"},
            "severity": {"type": "string"}, "summary": {"type": "string"},
            "description": STRING_OR_NULL, "labels": {"type": "object"},
            "resolved_at": NUMBER_OR_NULL, "resolved_by": STRING_OR_NULL,
            "deliveries": {"type": "array", "items": object_schema({
                "channel": {"type": "string"}, "target": {"type": "string"},
                "state": {"type": "string"}, "attempts": {"type": "integer"},
                "last_error": STRING_OR_NULL})}},
            ["id", "at", "name", "severity", "summary"]),
        "DriftReport": object_schema({
            "id": {"type": "integer"}, "at": {"type": "number"},
            "model_id": STRING_OR_NULL, "status": {"type": "string"},
            "window_start": NUMBER_OR_NULL, "window_end": NUMBER_OR_NULL,
            "reviewed_cases": INTEGER_OR_NULL, "reviewed_tiles": INTEGER_OR_NULL,
            **{name: NUMBER_OR_NULL for name in (
                "ece", "ece_low", "ece_high", "f1", "f1_low", "f1_high", "baseline_ece",
                "baseline_f1")},
            "signals": {"type": "object"}}, ["id", "at", "status"]),
        "AuditEvent": object_schema({
            "id": {"type": "integer"}, "at": {"type": "number"},
            "actor": {"type": "string"}, "action": {"type": "string"},
            "object_kind": STRING_OR_NULL, "object_id": STRING_OR_NULL,
            "detail": {"type": ["object", "null"]}},
            ["id", "at", "actor", "action"]),
        "LabelVersion": object_schema({
            "label_id": {"type": ["integer", "null"]}, "tile_id": {"type": "integer"},
            "version": {"type": "integer"}, "author": {"type": "string"},
            "kind": {"type": "string",
                     "enum": list(labels.KINDS)},
            "source_version": {"type": ["integer", "null"]},
            "added_px": {"type": "integer"}, "removed_px": {"type": "integer"},
            "diff": {"type": "string"}}, ["tile_id", "version", "kind"]),
        "Adjudication": object_schema({
            "adjudication_id": {"type": "integer"}, "tile_id": {"type": "integer"},
            "state": {"type": "string", "enum": list(adjudication.STATES)},
            "flagged_by": {"type": "string"},
            "first_version": {"type": "integer"},
            "first_author": {"type": "string"},
            "second_author": {"type": ["string", "null"]},
            "dice": {"type": ["number", "null"]},
            "decided_by": {"type": ["string", "null"]},
            "decision": {"type": ["string", "null"]},
            "reference_version": {"type": ["integer", "null"]}},
            ["adjudication_id", "tile_id", "state"]),
    }
