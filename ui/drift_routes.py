"""The drift page and API: each check's figures, and ECE and the label-free signals plotted
week by week (appliance.drift)."""

from __future__ import annotations

from flask import Blueprint, flash, g, jsonify, redirect, render_template, url_for

from appliance import drift
from ui import payload
from ui.security import requires

blueprint = Blueprint("drift_routes", __name__)

PLOT_WIDTH, PLOT_HEIGHT, PLOT_MARGIN = 640, 200, 36


@blueprint.get("/api/v1/drift")
@requires("view_drift")
def list_reports():
    return jsonify(drift.reports(g.db))


@blueprint.post("/api/v1/drift/check")
@requires("check_drift")
def check_now():
    parts = payload.appliance()
    report = drift.check(g.db, parts.store, parts.config, actor=g.user["username"])
    return jsonify(report), 201


@blueprint.get("/drift")
@requires("view_drift")
def drift_page():
    reports = drift.reports(g.db)
    limit = payload.appliance().config.models.gate_max_ece + \
        payload.appliance().config.drift.ece_margin
    return render_template("drift.html", reports=reports, limit=limit,
                           ece_plot=plot([r for r in reversed(reports)], "ece", limit),
                           signal_plots={name: plot(list(reversed(reports)), name)
                                         for name in drift.SIGNALS})


@blueprint.post("/drift/check")
@requires("check_drift")
def check_page():
    parts = payload.appliance()
    report = drift.check(g.db, parts.store, parts.config, actor=g.user["username"])
    flash(f"Drift check: {report['status']}.")
    return redirect(url_for("drift_routes.drift_page"))


def plot(reports: list[dict], figure: str, limit: float | None = None) -> dict:
    """Coordinates of one figure over the checks, oldest left: the ECE with its interval, or
    a label-free signal's window mean. Checks without the figure are left out."""
    points = []
    for report in reports:
        if figure == "ece":
            value, low, high = report["ece"], report["ece_low"], report["ece_high"]
        else:
            value = report["signals"].get("window", {}).get(figure)
            low = high = value
        if value is not None:
            points.append((report["at"], value, low, high))
    if not points:
        return {"points": []}
    top = max([p[3] for p in points] + ([limit] if limit else [])) * 1.15 or 1.0
    bottom = 0.0 if figure == "ece" else min(p[2] for p in points) * 0.9
    span = (top - bottom) or 1.0

    def x(index: int) -> float:
        inner = PLOT_WIDTH - 2 * PLOT_MARGIN
        return PLOT_MARGIN + (inner * index / (len(points) - 1) if len(points) > 1 else inner / 2)

    def y(value: float) -> float:
        return PLOT_HEIGHT - PLOT_MARGIN - (PLOT_HEIGHT - 2 * PLOT_MARGIN) * (value - bottom) / span

    return {"width": PLOT_WIDTH, "height": PLOT_HEIGHT, "top": round(top, 3),
            "bottom": round(bottom, 3), "y_top": y(top), "y_bottom": y(bottom),
            "limit_y": y(limit) if limit else None, "limit": limit,
            "points": [{"x": x(i), "y": y(v), "y_low": y(lo), "y_high": y(hi), "at": at,
                        "value": v} for i, (at, v, lo, hi) in enumerate(points)]}
