"""Review tiles: the en-face squares of each run that people check, likeliest errors first.

A tile's rank is its calibrated error probability (the chance it holds a false or a missed
cone, ``gpu.calibration``); tiles of runs recorded before there was one rank by their mean
Monte Carlo dropout uncertainty instead. The queue's threshold applies to that same number.

A run's tiles are recorded in the transaction that marks it SUCCEEDED. What a tile shows (the
IS/OS en-face image, the model's cone mask and the per-pixel uncertainty) is cut on request from
the run's preprocessed arrays, which the object store keeps under their SHA-256; the arrays of
recently viewed runs stay in memory, so paging through a queue reads each run's file once.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlite_utils

from appliance.exceptions import NotFound
from appliance.review.case_images import run_arrays
from appliance.run_result import Arrays, ReviewTiles, json_path
from appliance.runs import SUCCEEDED
from appliance.storage import ObjectStore
from gpu.calibration import REVIEW_THRESHOLD
from gpu.cone_model import cone_target

DEFAULT_UNCERTAINTY_THRESHOLD = REVIEW_THRESHOLD
RANK = "COALESCE(t.error_probability, t.mean_uncertainty)"
DEFAULT_QUEUE_LIMIT = 50
MAX_QUEUE_LIMIT = 500
# Monte Carlo dropout spread of a probability: 0.5 is the most two outcomes can differ by half.
UNCERTAINTY_DISPLAY_MAX = 0.5


def record(db: sqlite_utils.Database, run_id: str, case_id: int, review: ReviewTiles) -> int:
    """Add one row per tile of a finished run, the tiles' only record; call inside the run's
    SUCCEEDED transaction."""
    now = time.time()
    rows = [{"run_id": run_id, "case_id": case_id, "row_px": t["row_px"],
             "column_px": t["column_px"],
             "height_px": min(review.tile_px, review.enface_shape[0] - t["row_px"]),
             "width_px": min(review.tile_px, review.enface_shape[1] - t["column_px"]),
             "mean_uncertainty": t["mean_uncertainty"],
             "error_probability": t.get("error_probability"), "head_version": 0,
             "created_at": now}
            for t in review.tiles]
    db["tiles"].insert_all(rows, ignore=True)  # a re-recorded run keeps its tiles and labels
    return len(rows)


def review_queue(db: sqlite_utils.Database, *,
                 uncertainty_threshold: float = DEFAULT_UNCERTAINTY_THRESHOLD,
                 limit: int = DEFAULT_QUEUE_LIMIT,
                 include_labelled: bool = False,
                 run_id: str | None = None) -> list[dict[str, Any]]:
    """Tiles ranked above the threshold, likeliest errors first. Only the current run of each case
    counts (a superseded run's tiles show data that has been replaced); tiles someone has
    already labelled drop out unless asked for."""
    where, params = ["r.state = ?", "r.superseded_by IS NULL", f"{RANK} > ?"], \
        [SUCCEEDED, uncertainty_threshold]
    if not include_labelled:
        where.append("t.head_version = 0")
    if run_id is not None:
        where.append("t.run_id = ?")
        params.append(run_id)
    return list(db.query(
        f"SELECT t.* FROM tiles t JOIN runs r USING (run_id) WHERE {' AND '.join(where)} "
        f"ORDER BY {RANK} DESC, t.tile_id LIMIT ?",
        [*params, min(max(limit, 0), MAX_QUEUE_LIMIT)]))


def rank_of(tile: dict[str, Any]) -> float:
    """The number a tile is ranked and thresholded by (see the module's docstring)."""
    probability = tile.get("error_probability")
    return tile["mean_uncertainty"] if probability is None else probability


def get(db: sqlite_utils.Database, tile_id: int) -> dict[str, Any]:
    rows = list(db["tiles"].rows_where("tile_id = ?", [tile_id])) if abs(tile_id) < 2**63 else []
    if not rows:
        raise NotFound(f"no tile {tile_id}; the review queue lists the tiles there are")
    return rows[0]


@dataclass(frozen=True)
class TileImages:
    """What the editor shows of one tile, each (height, width)."""

    enface: np.ndarray        # IS/OS en-face, 0..1 on the run's own contrast scale, float32
    model_mask: np.ndarray    # the cone network's mask: a disc at each detected cone, bool
    uncertainty: np.ndarray   # per-pixel Monte Carlo dropout uncertainty, float32


def images(db: sqlite_utils.Database, store: ObjectStore, tile: dict[str, Any]) -> TileImages:
    # One field of the run's result, not the whole JSON: this is on every tile fetch.
    npz_sha256 = db.execute(
        f"SELECT json_extract(result, '{json_path('artifacts', 'preprocessed_npz')}') "
        "FROM runs WHERE run_id = ?", [tile["run_id"]]).fetchone()[0]
    enface, model_mask, uncertainty = _run_arrays(store, npz_sha256)
    rows = slice(tile["row_px"], tile["row_px"] + tile["height_px"])
    columns = slice(tile["column_px"], tile["column_px"] + tile["width_px"])
    return TileImages(enface[rows, columns], model_mask[rows, columns], uncertainty[rows, columns])


@functools.lru_cache(maxsize=16)
def _run_arrays(store: ObjectStore, npz_sha256: str) -> tuple[np.ndarray, ...]:
    # Content-addressed, so a cached entry can never go stale.
    arrays = run_arrays(store, npz_sha256)
    enface = arrays[Arrays.enface("ISOS")].astype(np.float32)
    # One contrast scale per run, so that tiles of a case compare by eye.
    low, high = np.percentile(enface, [0.5, 99.5])
    enface = np.clip((enface - low) / max(float(high - low), 1e-6), 0, 1)
    uncertainty = arrays[Arrays.CONE_UNCERTAINTY].astype(np.float32)
    model_mask = cone_target(enface.shape, arrays[Arrays.CONES_PX]) > 0
    return enface, model_mask, uncertainty
