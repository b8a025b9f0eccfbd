"""The review pages: worklist, run (case) view, active-learning queue, tile editor, outbox,
audit log. Pages render from the same appliance functions the API calls; the editor and the
worklist's live refresh fetch JSON from /api/v1 with the page's CSRF token."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
from flask import (
    Blueprint,
    Response,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)

from appliance import audit, lifecycle, outbox, runs, shadow
from appliance.access.permissions import allowed
from appliance.exceptions import InvalidInput, NotFound
from appliance.limits import MAX_TEXT_CHARS
from appliance.review import acceptance, adjudication, case_images, tiles
from appliance.run_result import Arrays
from appliance.storage import ObjectStore
from ui import payload
from ui.api import accept_run_review, dispatch_case, enqueue_run
from ui.security import requires

blueprint = Blueprint("pages", __name__)


@blueprint.app_context_processor
def permissions():
    """``can('edit_labels')`` in templates: links a role may not follow are not shown."""
    return {"can": lambda permission: g.get("user") is not None
            and allowed(g.user["role"], permission)}


@blueprint.app_context_processor
def limits():
    """The same text limit in every form as the API checks (appliance.limits)."""
    return {"MAX_TEXT_CHARS": MAX_TEXT_CHARS}


@blueprint.app_template_filter("utc")
def utc(epoch: float | None) -> str:
    """Seconds since 1970 as a UTC time a person reads; the appliance stores UTC throughout."""
    if not epoch:
        return ""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@blueprint.get("/")
@requires("view_runs")
def worklist():
    state = request.args.get("state") or None
    return render_template("worklist.html", runs=runs.list_runs(g.db, state=state, limit=100),
                           state=state or "", run_states=runs.STATES,
                           deliveries=outbox.summary(g.db))


@blueprint.get("/runs/<run_id>")
@requires("view_runs")
def run_view(run_id: str):
    run = runs.require(g.db, run_id)
    drawable = bool(run["result"]) and run["state"] == runs.SUCCEEDED
    return render_template(
        "run.html", run=run, result=run["result"] or {},
        map_ranges={name: (low, high) for name, (_, low, high) in _maps(run).items()}
        if drawable else {},
        b_scans=run["result"].volume.shape[0] if drawable else 0,
        density_cell_px=case_images.DENSITY_CELL_PX,
        manifest=json.dumps(run["manifest"], indent=2, sort_keys=True),
        tiles=[adjudication.tile_as_seen_by(g.db, tile, g.user["username"]) for tile in
               tiles.review_queue(g.db, uncertainty_threshold=-1, limit=tiles.MAX_QUEUE_LIMIT,
                                  include_labelled=True, run_id=run_id)],
        reviews=acceptance.of_run(g.db, run_id),
        rolled_back=run["model_id"] in lifecycle.rolled_back(g.db),
        comparison=shadow.of_run(g.db, run_id))


@blueprint.post("/runs/<run_id>/rerun")
@requires("create_runs")
def run_rerun(run_id: str):
    """The case again, with the versions the registry routes it to now (after a rollback)."""
    new_run_id, created = dispatch_case(runs.require(g.db, run_id)["case_id"])
    flash(f"Run {new_run_id[:12]} queued with the current model." if created
          else "The case already has a run with the current model.")
    return redirect(url_for("pages.run_view", run_id=new_run_id))


@blueprint.post("/runs/<run_id>/review")
@requires("accept_reviews")
def run_accept_review(run_id: str):
    review, created = accept_run_review(run_id, request.form.get("comment", ""))
    number, cones = review["review_number"], review["measurements"]["cones"]["cone_count"]
    flash(f"Review {number} accepted: {cones} cones; the reviewed SEG and SR are in the outbox."
          if created else f"No label changed since review {number}; it stands.")
    return redirect(url_for("pages.run_view", run_id=run_id))


@blueprint.get("/runs/<run_id>/qc.png")
@requires("view_runs")
def run_qc_png(run_id: str):
    run = _with_result(run_id)
    store: ObjectStore = payload.appliance().store
    path = store.path_for(run["result"].artifacts.qc_png)
    return Response(path.read_bytes(), mimetype="image/png")


@blueprint.get("/runs/<run_id>/images/<name>.png")
@requires("view_runs")
def run_image(run_id: str, name: str):
    """The case view's pictures: ``enface`` (cones marked), ``density``, ``thickness``."""
    run = _with_result(run_id)
    if name == "enface":
        arrays = _arrays(run)
        png = case_images.enface_with_cones(arrays[Arrays.enface("ISOS")],
                                            arrays[Arrays.CONES_PX])
    elif name in ("density", "thickness"):
        values, low, high = _maps(run)[name]
        png = case_images.heat_map(values, low, high)
    else:
        raise NotFound(f"no picture {name!r}; there are enface, density and thickness")
    return Response(png, mimetype="image/png")


@blueprint.get("/runs/<run_id>/b-scans/<int:frame>.png")
@requires("view_runs")
def run_b_scan(run_id: str, frame: int):
    """Corrected B-scan ``frame`` (from 0) with the layer surfaces drawn over it."""
    run, store = _with_result(run_id), payload.appliance().store
    derived = run["result"].output("derived_opt")
    volume = case_images.corrected_volume(store, derived.sha256)
    if not 0 <= frame < len(volume):
        raise NotFound(f"run {run_id} has B-scans 0 to {len(volume) - 1}")
    arrays = _arrays(run)
    surfaces = {name: arrays[Arrays.surface(name)] for name in case_images.SURFACE_COLOURS}
    return Response(case_images.png_bytes(
        case_images.draw_surfaces(volume[frame], surfaces, frame)), mimetype="image/png")


def _with_result(run_id: str) -> dict:
    run = runs.require(g.db, run_id)
    if not run["result"]:
        raise NotFound(f"run {run_id} has no results to draw yet ({run['state'].lower()})")
    return run


def _arrays(run: dict) -> case_images.RunArrays:
    return case_images.run_arrays(payload.appliance().store,
                                  run["result"].artifacts.preprocessed_npz)


def _maps(run: dict) -> dict[str, tuple[np.ndarray, float, float]]:
    # The page prints the same ends of the colour scales as the legend.
    return case_images.maps(_arrays(run), run["result"].volume.enface_pixel_um)


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
                           most_uncertain=(tiles.rank_of(nearest[0]) if nearest else None))


@blueprint.get("/tiles/<int:tile_id>")
@requires("view_tiles")
def tile_editor(tile_id: int):
    tile = tiles.get(g.db, tile_id)
    row = adjudication.current(g.db, tile_id)
    return render_template(
        "editor.html", tile=tile,
        adjudication=adjudication.as_seen_by(g.db, row, g.user["username"]) if row else None)


@blueprint.post("/tiles/<int:tile_id>/adjudication")
@requires("edit_labels")
def flag_tile(tile_id: int):
    adjudication.flag(g.db, tile_id, actor=g.user["username"],
                      reason=request.form.get("reason", ""))
    flash(f"Tile {tile_id} is flagged for adjudication; another labeler rates it blind.")
    return redirect(url_for("pages.tile_editor", tile_id=tile_id))


@blueprint.get("/adjudication")
@requires("view_tiles")
def adjudication_list():
    return render_template("adjudications.html", rows=[
        adjudication.as_seen_by(g.db, row, g.user["username"])
        for row in adjudication.listing(g.db, limit=500)])


@blueprint.get("/adjudication/<int:tile_id>")
@requires("adjudicate")
def adjudication_view(tile_id: int):
    row, first, second = adjudication.masks(g.db, payload.appliance().store,
                                            tile_id)
    return render_template(
        "adjudicate.html", tile=tiles.get(g.db, tile_id), row=adjudication.shown(row),
        choices=adjudication.CHOICES, first_px=int(first.sum()), second_px=int(second.sum()),
        both_px=int((first & second).sum()))


@blueprint.get("/adjudication/<int:tile_id>/compare.png")
@requires("adjudicate")
def adjudication_png(tile_id: int):
    store = payload.appliance().store
    _, first, second = adjudication.masks(g.db, store, tile_id)
    enface = tiles.images(g.db, store, tiles.get(g.db, tile_id)).enface
    return Response(case_images.comparison(enface, first, second), mimetype="image/png")


@blueprint.post("/adjudication/<int:tile_id>")
@requires("adjudicate")
def adjudication_decide(tile_id: int):
    version = adjudication.decide(g.db, payload.appliance().store, tile_id,
                                  request.form.get("choice", ""),
                                  adjudicator=g.user["username"],
                                  comment=request.form.get("comment", ""))
    flash(f"Version {version['version']} ({request.form.get('choice')}) is tile {tile_id}'s "
          "reference.")
    return redirect(url_for("pages.tile_editor", tile_id=tile_id))


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
