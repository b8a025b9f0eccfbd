"""The JSON API's model registry: list the registered model versions, show one, register one
(weights as safetensors + its model card), start its gate evaluation, promote it (guarded by
the gate; an admin may override), roll it back (appliance.lifecycle), and start a retraining
from the reviewed labels (appliance.retraining)."""

from __future__ import annotations

import json
import logging

from flask import Blueprint, current_app, g, jsonify, request

from appliance import gates, lifecycle, registry, retraining, shadow
from appliance.access.permissions import allowed
from appliance.exceptions import InvalidInput
from appliance.jobs import Jobs
from appliance.limits import MAX_TRAINING_ITERATIONS
from ui import payload
from ui.security import requires, takes_large_bodies

log = logging.getLogger(__name__)
blueprint = Blueprint("api_models", __name__, url_prefix="/api/v1")


@blueprint.get("/models")
@requires("view_models")
def list_models():
    return jsonify(registry.list_models(g.db))


@blueprint.get("/models/<model_id>")
@requires("view_models")
def get_model(model_id: str):
    return jsonify(model_document(model_id))


def model_document(model_id: str) -> dict:
    """A version as the API and its page show it: card, history, gate results, shadow
    summary, and whether its gate is being evaluated now."""
    return {**registry.get_model(g.db, model_id),
            "gate_results": gates.results(g.db, model_id),
            "gate_running": jobs().running_since(f"gate:{model_id}") is not None,
            "promoted_by_override": model_id in lifecycle.overridden(g.db),
            "shadow_summary": shadow.summary(g.db, model_id)}


def jobs() -> Jobs:
    return current_app.extensions["aomas_jobs"]


def gate_job(model_id: str) -> bool:
    """The version's gate evaluation in the background; False when it is running already."""
    registry.get_model(g.db, model_id)  # 404 before any thread
    parts, who = payload.appliance(), g.user["username"]
    return jobs().start(f"gate:{model_id}", lambda: gates.run_gate(
        parts.databases.get(), parts.store, parts.config, model_id, actor=who))


def start_training(model_id: str, parent_id: str | None, iterations: int) -> bool:
    """A retraining from the reviewed labels in the background (checked first); one at a
    time on a box, whatever its id: each may take most of the memory cap."""
    parts, who = payload.appliance(), g.user["username"]
    parent_id = retraining.check_request(g.db, parts.config, model_id, parent_id,
                                         retraining.DEFAULT_PHANTOM_SEEDS)
    return jobs().start("training", lambda: retraining.train_from_reviews(
        parts.databases.get(), parts.store, parts.config, actor=who, model_id=model_id,
        parent_id=parent_id, iterations=iterations, log=log.info))


def actor() -> lifecycle.Actor:
    return lifecycle.Actor(g.user["username"],
                           may_override=allowed(g.user["role"], "override_gates"))


@blueprint.post("/models/<model_id>/gate")
@requires("promote_models")
def start_gate(model_id: str):
    """Evaluate the version on the frozen set in the background (minutes); 202 when started,
    200 when its evaluation was running already. GET the model to see the result."""
    started = gate_job(model_id)
    return jsonify(model_document(model_id)), 202 if started else 200


@blueprint.post("/models/train-from-reviews")
@requires("train_models")
def train_from_reviews():
    """``{"model_id": "site-v1", "parent": null, "iterations": 200}``: fine-tune on the
    reviewed labels in the background (minutes to hours); the result is registered as
    STAGING with its gate result, never promoted. 202 when started."""
    body = payload.body()
    iterations = payload.field(body, "iterations", int, required=False, default=200)
    if not 1 <= iterations <= MAX_TRAINING_ITERATIONS:
        raise InvalidInput(f"iterations must be 1 to {MAX_TRAINING_ITERATIONS}")
    model_id = payload.field(body, "model_id", str)
    started = start_training(model_id, payload.field(body, "parent", str, required=False),
                             iterations)
    return jsonify({"model_id": model_id, "started": started}), 202 if started else 200


@blueprint.post("/models/<model_id>/promote")
@requires("promote_models")
def promote_model(model_id: str):
    """``{"stage": "SHADOW"|"CANARY"|"PRODUCTION", "traffic_percent": 10,
    "override_reason": "…"}``: 400 with the failing figure when the gate does not allow it."""
    body = payload.body()
    lifecycle.promote(
        g.db, payload.appliance().config, model_id, payload.field(body, "stage", str),
        actor=actor(),
        traffic_percent=payload.field(body, "traffic_percent", int, required=False),
        override_reason=payload.field(body, "override_reason", str, required=False,
                                      default=""))
    return jsonify(model_document(model_id))


@blueprint.post("/models/<model_id>/rollback")
@requires("rollback_models")
def rollback_model(model_id: str):
    """Take the version off every pointer (production back to the one before); a second call
    changes nothing and says so (``changed`` false)."""
    body = request.get_json(silent=True) or {}
    _, changed, message = lifecycle.rollback(
        g.db, model_id, actor=actor(),
        reason=payload.field(body, "reason", str, required=False, default=""),
        alerts_config=payload.appliance().config.alerts)
    return jsonify({"model": model_document(model_id), "changed": changed,
                    "message": message})


@blueprint.post("/models")
@requires("register_models")
@takes_large_bodies
def register_model():
    """Multipart ``weights`` (weights.safetensors) and ``card`` (model_card.json); 201 when
    registered, 200 when the same version was registered before."""
    weights, card = request.files.get("weights"), request.files.get("card")
    if weights is None or card is None:
        raise InvalidInput("send multipart/form-data with the files 'weights' "
                           "(weights.safetensors) and 'card' (model_card.json)")
    card_bytes = card.stream.read(registry.MAX_CARD_BYTES + 1)
    if len(card_bytes) > registry.MAX_CARD_BYTES:
        raise InvalidInput(f"a model card is at most {registry.MAX_CARD_BYTES // 1024} KiB")
    try:
        card_document = json.loads(card_bytes)
    except ValueError as error:
        raise InvalidInput(f"the card is not JSON ({error})") from None
    model, created = registry.register(g.db, payload.appliance().store, card_document,
                                       weights.stream.read(), actor=g.user["username"])
    return jsonify(model), 201 if created else 200
