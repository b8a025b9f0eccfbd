"""The Flask app: the review pages, the JSON API under /api/v1, and /healthz.

``create_app`` gets everything it needs passed in (the ``Appliance``: configuration, database,
object store, model, run queue, ingest); nothing is global, so tests and ``aomas serve`` build
it the same way.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from appliance import health, metrics
from appliance.access.accounts import LoginRefused
from appliance.access.permissions import allowed
from appliance.exceptions import (
    AomasError,
    Conflict,
    InvalidInput,
    NotFound,
    NotPermitted,
    TransientError,
)
from appliance.jobs import Jobs
from appliance.services import Appliance
from ui import (
    alert_routes,
    api,
    api_exports,
    api_labels,
    api_models,
    auth,
    drift_routes,
    model_pages,
    pages,
    security,
)
from ui.request import SpooledRequest
from ui.security import public, refuse

log = logging.getLogger(__name__)

# How the appliance's exceptions read on the wire.
STATUS_FOR_ERROR = ((LoginRefused, 401), (NotPermitted, 403), (NotFound, 404), (Conflict, 409),
                    (InvalidInput, 422), (TransientError, 503), (AomasError, 400))


def create_app(appliance: Appliance) -> Flask:
    config = appliance.config
    app = Flask(__name__)
    app.config["AOMAS_IDLE_SECONDS"] = config.web.session_idle_minutes * 60
    # Views reach the parts through ui.payload.appliance(); uploads are ingested exactly as
    # C-STOREs are (appliance.uploads).
    app.extensions["aomas"] = appliance
    app.extensions["aomas_jobs"] = Jobs()  # gate evaluations and retrainings (appliance.jobs)
    app.request_class = SpooledRequest  # uploads land in the spool once (ui.request)

    @app.before_request
    def open_database():
        g.db = appliance.databases.get()

    security.configure(app, config.web, config.data_dir)
    app.register_blueprint(auth.blueprint)
    app.register_blueprint(pages.blueprint)
    app.register_blueprint(api.blueprint)
    app.register_blueprint(api_labels.blueprint)
    app.register_blueprint(api_models.blueprint)
    app.register_blueprint(api_exports.blueprint)
    app.register_blueprint(model_pages.blueprint)
    app.register_blueprint(alert_routes.blueprint)
    app.register_blueprint(drift_routes.blueprint)

    @app.get("/healthz")
    @public
    def healthz():
        # The SCP's address, disk space and run counts help an attacker map the box: an
        # anonymous caller learns only whether it is healthy, unless it is the monitor.
        report = health.check(config)
        if g.user is None and request.remote_addr not in config.web.health_detail_addresses:
            report = {"ok": report["ok"]}
        return jsonify(report), 200

    @app.get("/metrics")
    @public  # its own rule: a monitoring address, or an admin's session
    def prometheus_metrics():
        if request.remote_addr not in config.web.metrics_addresses and not (
                g.user is not None and allowed(g.user["role"], "view_metrics")):
            return refuse(403, "metrics are read from a monitoring address (web.metrics_addresses)"
                               " or with an admin's session")
        return Response(metrics.exposition(g.db, appliance.queue),
                        mimetype=metrics.CONTENT_TYPE)

    @app.errorhandler(AomasError)
    def appliance_error(error: AomasError):
        status = next(code for kind, code in STATUS_FOR_ERROR if isinstance(error, kind))
        return refuse(status, str(error))

    @app.errorhandler(RequestEntityTooLarge)
    def body_too_large(error: RequestEntityTooLarge):
        limit_mib = (request.max_content_length or 0) // 2**20
        advice = ("; split the files over several requests, or an admin raises "
                  "web.max_upload_mb" if security.route_takes_large_bodies() else "")
        return refuse(413, f"the request body is larger than the {limit_mib} MiB this route "
                           f"takes{advice}")

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        return refuse(error.code or 500, error.description or error.name)

    @app.errorhandler(Exception)
    def internal_error(error: Exception):
        log.exception("web request failed")
        return refuse(500, "internal error; the appliance's log has the details")

    return app
