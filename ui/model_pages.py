"""The models pages: every registered model version with its stage, and one version's card,
gate results, shadow comparison and stage history, with the actions the person's role allows
(register, evaluate the gate, promote, override a failed gate, roll back)."""

from __future__ import annotations

import json

from flask import Blueprint, flash, g, redirect, render_template, request, url_for

from appliance import lifecycle, registry, routing
from appliance.exceptions import InvalidInput
from ui import payload
from ui.api_models import actor, gate_job, model_document, start_training
from ui.security import requires, takes_large_bodies

blueprint = Blueprint("model_pages", __name__)


@blueprint.get("/models")
@requires("view_models")
def models_page():
    return render_template("models.html", models=registry.list_models(g.db),
                           pointers=routing.pointers(g.db),
                           overridden=lifecycle.overridden(g.db))


@blueprint.post("/models")
@requires("register_models")
@takes_large_bodies
def register_page():
    weights, card = request.files.get("weights"), request.files.get("card")
    if not weights or not card or not weights.filename or not card.filename:
        raise InvalidInput("choose both files: weights.safetensors and model_card.json")
    try:
        card_document = json.loads(card.stream.read(registry.MAX_CARD_BYTES + 1))
    except ValueError as error:
        raise InvalidInput(f"the card is not JSON ({error})") from None
    model, created = registry.register(g.db, payload.appliance().store, card_document,
                                       weights.stream.read(), actor=g.user["username"])
    flash(f"{model['model_id']} registered as {model['stage']}." if created
          else f"{model['model_id']} was registered before with these weights; unchanged.")
    return redirect(url_for("model_pages.model_page", model_id=model["model_id"]))


@blueprint.get("/models/<model_id>")
@requires("view_models")
def model_page(model_id: str):
    return render_template("model.html", model=model_document(model_id),
                           pointers=routing.pointers(g.db),
                           stages=list(lifecycle.POINTER_OF),
                           default_percent=lifecycle.DEFAULT_CANARY_PERCENT)


@blueprint.post("/models/<model_id>/gate")
@requires("promote_models")
def gate_page(model_id: str):
    started = gate_job(model_id)
    flash("Gate evaluation started; it takes minutes. Reload this page for the result."
          if started else "This version's gate evaluation is already running.")
    return redirect(url_for("model_pages.model_page", model_id=model_id))


@blueprint.post("/models/<model_id>/promote")
@requires("promote_models")
def promote_page(model_id: str):
    percent = request.form.get("traffic_percent", "").strip()
    stage = request.form.get("stage", "")
    if stage != registry.CANARY:
        percent = ""
    try:
        traffic_percent = int(percent) if percent else None
    except ValueError:
        raise InvalidInput("traffic % must be a whole number from 1 to 100") from None
    model = lifecycle.promote(g.db, payload.appliance().config, model_id, stage,
                              actor=actor(), traffic_percent=traffic_percent,
                              override_reason=request.form.get("override_reason", ""))
    flash(f"{model_id} is {model['stage']}"
          + (f" for {traffic_percent or lifecycle.DEFAULT_CANARY_PERCENT} % of studies"
             if model["stage"] == registry.CANARY else "") + ".")
    return redirect(url_for("model_pages.model_page", model_id=model_id))


@blueprint.post("/models/<model_id>/rollback")
@requires("rollback_models")
def rollback_page(model_id: str):
    _, _, message = lifecycle.rollback(g.db, model_id, actor=actor(),
                                       reason=request.form.get("reason", ""),
                                       alerts_config=payload.appliance().config.alerts)
    flash(message + ".")
    return redirect(url_for("model_pages.model_page", model_id=model_id))


@blueprint.post("/models/train-from-reviews")
@requires("train_models")
def train_page():
    model_id = request.form.get("model_id", "").strip()
    try:
        iterations = int(request.form.get("iterations") or 200)
    except ValueError:
        raise InvalidInput("iterations must be a whole number") from None
    started = start_training(model_id, request.form.get("parent") or None, iterations)
    flash(f"Training {model_id} from the reviewed labels; it appears here as STAGING when done."
          if started else "A retraining is running already; start this one when it is done.")
    return redirect(url_for("model_pages.models_page"))
