"""The Flask app: ``/healthz`` and the read-only runs API. The review page comes with issue 5."""

from __future__ import annotations

from flask import Flask, abort, jsonify, request

from appliance import health, runs
from appliance.config import Config
from appliance.database import ThreadLocalDatabase


def create_app(config: Config) -> Flask:
    app = Flask(__name__)
    databases = ThreadLocalDatabase(config.data_dir / "aomas.db")

    @app.get("/healthz")
    def healthz():
        return jsonify(health.check(config)), 200

    @app.get("/api/runs")
    def list_runs():
        state = request.args.get("state")
        if state and state not in (runs.QUEUED, runs.RUNNING, *runs.FINISHED):
            abort(400, f"unknown state {state!r}")
        return jsonify(runs.list_runs(databases.get(), state=state))

    @app.get("/api/runs/<run_id>")
    def show_run(run_id: str):
        run = runs.get(databases.get(), run_id)
        if run is None:
            abort(404)
        return jsonify(run)

    return app
