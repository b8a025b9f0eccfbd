"""The review pages: worklist, run (case) view, active-learning queue, tile editor, outbox,
audit log. Pages render from the same appliance functions the API calls; the editor and the
worklist's live refresh fetch JSON from /api/v1 with the page's CSRF token."""

from __future__ import annotations

import json

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)

from appliance import audit, outbox, runs, tiles
from appliance.exceptions import InvalidInput, NotFound
from appliance.permissions import allowed
from appliance.storage import ObjectStore
from ui.api import enqueue_run
from ui.security import requires

blueprint = Blueprint("pages", __name__)


@blueprint.app_context_processor
def permissions():
    """``can('edit_labels')`` in templates: links a role may not follow are not shown."""
    return {"can": lambda permission: g.get("user") is not None
            and allowed(g.user["role"], permission)}


@blueprint.get("/")
@requires("view_runs")
def worklist():
    state = request.args.get("state") or None
    return render_template("worklist.html", runs=runs.list_runs(g.db, state=state, limit=100),
                           state=state or "", deliveries=outbox.summary(g.db))


@blueprint.get("/runs/<run_id>")
@requires("view_runs")
def run_view(run_id: str):
    run = runs.require(g.db, run_id)
    return render_template(
        "run.html", run=run, result=run["result"] or {},
        manifest=json.dumps(run["manifest"], indent=2, sort_keys=True),
        tiles=tiles.review_queue(g.db, uncertainty_threshold=-1, limit=tiles.MAX_QUEUE_LIMIT,
                                 include_labelled=True, run_id=run_id))


@blueprint.get("/runs/<run_id>/qc.png")
@requires("view_runs")
def run_qc_png(run_id: str):
    run = runs.require(g.db, run_id)
    if not run["result"]:
        raise NotFound(f"run {run_id} has no QC snapshot")
    store: ObjectStore = current_app.extensions["aomas"]["store"]
    path = store.path_for(run["result"]["artifacts"]["qc_png"])
    return Response(path.read_bytes(), mimetype="image/png")


@blueprint.post("/runs/<run_id>/retry")
@requires("create_runs")
def run_retry(run_id: str):
    runs.retry(g.db, run_id, actor=g.user["username"])
    enqueue_run(run_id)
    flash(f"Run {run_id[:12]} queued again.")
    return redirect(url_for("pages.worklist"))


@blueprint.get("/queue")
@requires("view_tiles")
def review_queue():
    try:
        threshold = float(request.args.get("uncertainty_threshold",
                                           tiles.DEFAULT_UNCERTAINTY_THRESHOLD))
        limit = int(request.args.get("limit", tiles.DEFAULT_QUEUE_LIMIT))
    except ValueError:
        raise InvalidInput("the threshold and the number of tiles must be numbers") from None
    limit = max(1, min(limit, tiles.MAX_QUEUE_LIMIT))
    queued = tiles.review_queue(g.db, uncertainty_threshold=threshold, limit=limit)
    # An empty queue says how far the threshold is from the nearest tile.
    nearest = [] if queued else tiles.review_queue(g.db, uncertainty_threshold=-1, limit=1)
    return render_template("queue.html", threshold=threshold, limit=limit, tiles=queued,
                           most_uncertain=nearest[0]["mean_uncertainty"] if nearest else None)


@blueprint.get("/tiles/<int:tile_id>")
@requires("view_tiles")
def tile_editor(tile_id: int):
    return render_template("editor.html", tile=tiles.get(g.db, tile_id))


@blueprint.get("/outbox")
@requires("manage_outbox")
def outbox_page():
    return render_template("outbox.html", deliveries=outbox.summary(g.db),
                           waiting=[r for r in outbox.rows(g.db)
                                    if r["state"] in (outbox.DEAD, outbox.PENDING)][:200])


@blueprint.post("/outbox/retry")
@requires("manage_outbox")
def outbox_retry():
    destination = request.form.get("destination") or None
    count = outbox.retry(g.db, actor=g.user["username"], destination=destination)
    flash(f"{count} output(s) queued for sending again.")
    return redirect(url_for("pages.outbox_page"))


@blueprint.get("/audit")
@requires("view_audit")
def audit_page():
    filters = {key: request.args.get(key, "").strip()
               for key in ("actor", "action", "object_kind", "object_id")}
    return render_template("audit.html", filters=filters,
                           events=audit.search(g.db, **filters, limit=500))
