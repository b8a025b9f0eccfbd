"""Alerts on the web: the banner every page shows while one is unresolved, the API's list,
and resolving one (appliance.alerts)."""

from __future__ import annotations

from flask import Blueprint, flash, g, jsonify, redirect, request, url_for

from appliance import alerts
from appliance.access.permissions import allowed
from ui import payload
from ui.security import requires

blueprint = Blueprint("alert_routes", __name__)


@blueprint.app_context_processor
def alert_banner():
    """Unresolved alerts for the banner (only for a logged-in person)."""
    user = g.get("user")
    if not user or not allowed(user["role"], "view_alerts") or "db" not in g:
        return {"open_alerts": []}
    return {"open_alerts": alerts.unresolved(g.db)}


@blueprint.get("/api/v1/alerts")
@requires("view_alerts")
def list_alerts():
    limit = max(1, min(payload.query_number("limit", int, 100), 500))
    return jsonify(alerts.listing(g.db, limit=limit))


@blueprint.post("/api/v1/alerts/<int:alert_id>/resolve")
@requires("resolve_alerts")
def resolve_alert(alert_id: int):
    return jsonify(alerts.resolve(g.db, alert_id, actor=g.user["username"]))


@blueprint.post("/alerts/<int:alert_id>/resolve")
@requires("resolve_alerts")
def resolve_alert_page(alert_id: int):
    alert = alerts.resolve(g.db, alert_id, actor=g.user["username"])
    flash(f"Alert {alert_id} ({alert['name']}) resolved.")
    return redirect(request.referrer or url_for("pages.worklist"))
