"""The JSON API for review: the active-learning queue, tiles, label versions and
multi-rater adjudication. A tile awaiting a blind second rating shows people who have not
rated it only the model's mask, and refuses them its history, so that rating stays blind."""

from __future__ import annotations

import numpy as np
from flask import Blueprint, g, jsonify, request

from appliance.exceptions import InvalidInput, NotPermitted
from appliance.limits import MAX_ROWS_LISTED
from appliance.review import adjudication, labels, tiles
from ui import payload
from ui.security import requires

blueprint = Blueprint("labels_api", __name__, url_prefix="/api/v1")


@blueprint.get("/active-learning/queue")
@requires("view_tiles")
def review_queue():
    threshold = payload.query_number("uncertainty_threshold", float,
                                     tiles.DEFAULT_UNCERTAINTY_THRESHOLD)
    limit = payload.query_number("limit", int, tiles.DEFAULT_QUEUE_LIMIT)
    if not 1 <= limit <= tiles.MAX_QUEUE_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {tiles.MAX_QUEUE_LIMIT}")
    include = request.args.get("include_labelled", "false").lower() in ("1", "true", "yes")
    return jsonify({"uncertainty_threshold": threshold, "limit": limit,
                    "tiles": [adjudication.tile_as_seen_by(g.db, tile, g.user["username"])
                              for tile in tiles.review_queue(
                                  g.db, uncertainty_threshold=threshold, limit=limit,
                                  include_labelled=include)]})


@blueprint.get("/tiles/<int:tile_id>")
@requires("view_tiles")
def get_tile(tile_id: int):
    """The tile with the three images the editor shows, as base64 PNGs; ``blind`` says the
    mask is the model's because the tile awaits this person's blind rating."""
    tile = tiles.get(g.db, tile_id)
    store = payload.appliance().store
    images = tiles.images(g.db, store, tile)
    blind = adjudication.is_blind_for(g.db, tile_id, g.user["username"])
    mask = images.model_mask if blind else labels.mask_of(g.db, store, tile,
                                                          tile["head_version"])
    shown_tile = adjudication.tile_as_seen_by(g.db, tile, g.user["username"])
    return jsonify({**shown_tile, "images": {
        "enface_png": payload.png(images.enface),
        "mask_png": payload.png(mask.astype(np.float32)),
        "uncertainty_png": payload.png(images.uncertainty / tiles.UNCERTAINTY_DISPLAY_MAX),
    }})


@blueprint.get("/tiles/<int:tile_id>/labels")
@requires("view_tiles")
def tile_history(tile_id: int):
    _refuse_if_blind(tile_id)
    return jsonify(labels.history(g.db, tile_id))


@blueprint.post("/labels")
@requires("edit_labels")
def create_label():
    body = payload.body()
    version, created = labels.save(
        g.db, payload.appliance().store, payload.field(body, "tile_id", int),
        payload.png_field(body), author=g.user["username"],
        base_version=payload.field(body, "base_version", int),
        comment=payload.field(body, "comment", str, required=False, default=""),
        idempotency_key=request.headers.get("Idempotency-Key"))
    return _version_answer(version, created)


@blueprint.post("/labels/rollback")
@requires("edit_labels")
def rollback_label():
    body = payload.body()
    version, created = labels.rollback(
        g.db, payload.appliance().store, payload.field(body, "tile_id", int),
        payload.field(body, "target_version", int), author=g.user["username"],
        comment=payload.field(body, "comment", str, required=False, default=""),
        idempotency_key=request.headers.get("Idempotency-Key"))
    return _version_answer(version, created)


def _version_answer(version: dict, created: bool):
    # 201 for a new version; 200 when an Idempotency-Key found the one made the first time.
    return jsonify(labels.shown(version)), 201 if created else 200


# -- adjudication ------------------------------------------------------------------------------

@blueprint.get("/adjudications")
@requires("view_tiles")
def list_adjudications():
    limit = payload.query_number("limit", int, 200)
    rows = adjudication.listing(g.db, request.args.get("state") or None,
                                limit=max(1, min(limit, MAX_ROWS_LISTED)))
    return jsonify([adjudication.as_seen_by(g.db, row, g.user["username"]) for row in rows])


@blueprint.get("/tiles/<int:tile_id>/adjudication")
@requires("view_tiles")
def get_adjudication(tile_id: int):
    tiles.get(g.db, tile_id)
    row = adjudication.current(g.db, tile_id)
    return jsonify(None if row is None
                   else adjudication.as_seen_by(g.db, row, g.user["username"]))


@blueprint.post("/tiles/<int:tile_id>/adjudication")
@requires("edit_labels")
def flag_for_adjudication(tile_id: int):
    body = payload.body()
    row = adjudication.flag(g.db, tile_id, actor=g.user["username"],
                            reason=payload.field(body, "reason", str, required=False,
                                                 default=""))
    return jsonify(row), 201


@blueprint.post("/tiles/<int:tile_id>/adjudication/rating")
@requires("edit_labels")
def rate_blind(tile_id: int):
    row, created = adjudication.rate_blind(
        g.db, payload.appliance().store, tile_id, payload.png_field(payload.body()),
        rater=g.user["username"])
    return jsonify(row), 201 if created else 200


@blueprint.post("/tiles/<int:tile_id>/adjudication/decision")
@requires("adjudicate")
def decide(tile_id: int):
    body = payload.body()
    version = adjudication.decide(
        g.db, payload.appliance().store, tile_id, payload.field(body, "choice", str),
        adjudicator=g.user["username"],
        comment=payload.field(body, "comment", str, required=False, default=""))
    return jsonify(version), 201


def _refuse_if_blind(tile_id: int) -> None:
    tiles.get(g.db, tile_id)
    if adjudication.is_blind_for(g.db, tile_id, g.user["username"]):
        raise NotPermitted(f"tile {tile_id} awaits a blind second rating; its versions stay "
                           "hidden from you until that rating is in")
