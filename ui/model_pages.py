"""The models pages: every registered model version with its stage, and one version's card and
the history of its stage. Read-only for now: promotion and rollback come with the gates."""

from __future__ import annotations

from flask import Blueprint, g, render_template

from appliance import gates, registry
from ui.security import requires

blueprint = Blueprint("model_pages", __name__)


@blueprint.get("/models")
@requires("view_models")
def models_page():
    return render_template("models.html", models=registry.list_models(g.db))


@blueprint.get("/models/<model_id>")
@requires("view_models")
def model_page(model_id: str):
    return render_template("model.html", model=registry.get_model(g.db, model_id),
                           gate_results=gates.results(g.db, model_id))
