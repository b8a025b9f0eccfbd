"""The JSON API's model registry: list the registered model versions, show one, register one
(weights as safetensors + its model card). Promotion, routing and rollback come next
(issue 16); a registered model is STAGING and serves no run until then."""

from __future__ import annotations

import json

from flask import Blueprint, g, jsonify, request

from appliance import gates, registry
from appliance.exceptions import InvalidInput
from ui import payload
from ui.security import requires, takes_large_bodies

blueprint = Blueprint("api_models", __name__, url_prefix="/api/v1")


@blueprint.get("/models")
@requires("view_models")
def list_models():
    return jsonify(registry.list_models(g.db))


@blueprint.get("/models/<model_id>")
@requires("view_models")
def get_model(model_id: str):
    return jsonify({**registry.get_model(g.db, model_id),
                    "gate_results": gates.results(g.db, model_id)})


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
