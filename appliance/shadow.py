"""Shadow runs beside production: what the version in the shadow pointer would have said.

A shadow run (``appliance.routing``) is computed like any run, at a lower priority, and kept
here only: the worker never puts its outputs in the outbox, and the outbox refuses them again
by itself. Once a case has a finished production (or canary) run and a finished shadow run,
``compare`` records how far they agree: cone counts, densities, the Dice overlap of their cone
masks (a disk per cone, as the review tiles draw them) and of their layer labels. The case view
shows one comparison; the models page sums them up per shadow version.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import sqlite_utils

from appliance import runs
from appliance.review.adjudication import dice
from appliance.review.case_images import run_arrays
from appliance.run_result import Arrays
from appliance.storage import ObjectStore
from gpu import layer_model
from gpu.cone_model import cone_target


def compare(db: sqlite_utils.Database, store: ObjectStore, case_id: int) -> dict | None:
    """Record the comparison of the case's current production and shadow runs once both have
    succeeded; the comparison, or None while one is missing. Call after a run succeeded; the
    record is one INSERT OR IGNORE, so two workers finishing the pair at once keep one."""
    current = {("shadow" if row["arm"] == runs.SHADOW_ARM else "production"): row
               for row in db.query("SELECT run_id, arm, model_id, state FROM runs "
                                   "WHERE case_id = ? AND superseded_by IS NULL", [case_id])}
    production, shadow = current.get("production"), current.get("shadow")
    if not production or not shadow or {production["state"], shadow["state"]} != {
            runs.SUCCEEDED}:
        return None
    if db["shadow_comparisons"].count_where("shadow_run_id = ?", [shadow["run_id"]]):
        return of_run(db, shadow["run_id"])
    figures = agreement(runs.require(db, production["run_id"])["result"],
                        runs.require(db, shadow["run_id"])["result"], store)
    db["shadow_comparisons"].insert({
        "shadow_run_id": shadow["run_id"], "production_run_id": production["run_id"],
        "case_id": case_id, "shadow_model_id": shadow["model_id"],
        "production_model_id": production["model_id"], "at": time.time(),
        "figures": json.dumps(figures, sort_keys=True)}, ignore=True)
    return of_run(db, shadow["run_id"])


def agreement(production, shadow, store: ObjectStore) -> dict[str, Any]:
    """Figures of two run results of the same volume."""
    first = run_arrays(store, production.artifacts.preprocessed_npz)
    second = run_arrays(store, shadow.artifacts.preprocessed_npz)
    shape = first[Arrays.CONE_PROBABILITY].shape
    masks = [cone_target(shape, arrays[Arrays.CONES_PX]) > 0 for arrays in (first, second)]
    layers = layer_model.dice(second[Arrays.LAYER_LABELS], first[Arrays.LAYER_LABELS])
    scored = [value for value in layers.values() if value is not None]
    return {
        "production": {"cone_count": production.cones.get("cone_count"),
                       "cone_density_per_mm2": production.cones.get("cone_density_per_mm2")},
        "shadow": {"cone_count": shadow.cones.get("cone_count"),
                   "cone_density_per_mm2": shadow.cones.get("cone_density_per_mm2")},
        "cone_mask_dice": dice(*masks),
        "layer_dice": layers,
        "layer_dice_mean": round(float(np.mean(scored)), 4) if scored else None,
    }


def of_run(db: sqlite_utils.Database, run_id: str) -> dict | None:
    """The comparison a run is part of (as shadow or production), the newest."""
    rows = list(db.query("SELECT * FROM shadow_comparisons WHERE shadow_run_id = ? OR "
                         "production_run_id = ? ORDER BY at DESC LIMIT 1", [run_id, run_id]))
    return {**rows[0], "figures": json.loads(rows[0]["figures"])} if rows else None


def summary(db: sqlite_utils.Database, shadow_model_id: str) -> dict[str, Any]:
    """Shadow vs production over every case the version shadowed."""
    rows = [json.loads(row["figures"]) for row in db.query(
        "SELECT figures FROM shadow_comparisons WHERE shadow_model_id = ?", [shadow_model_id])]
    if not rows:
        return {"cases": 0}

    def spread(values: list[float]) -> dict[str, float]:
        array = np.asarray([v for v in values if v is not None], float)
        if not array.size:
            return {}
        return {"mean": round(float(array.mean()), 4), "min": round(float(array.min()), 4)}

    def density_difference(row: dict) -> float | None:
        ours, theirs = (row[arm]["cone_density_per_mm2"] for arm in ("shadow", "production"))
        return None if not ours or not theirs else 100 * (ours - theirs) / theirs

    differences = [d for d in map(density_difference, rows) if d is not None]
    return {"cases": len(rows),
            "cone_mask_dice": spread([row["cone_mask_dice"] for row in rows]),
            "layer_dice_mean": spread([row["layer_dice_mean"] for row in rows]),
            "density_difference_percent": {
                "mean": round(float(np.mean(differences)), 2),
                "max_abs": round(float(np.max(np.abs(differences))), 2)} if differences else {}}
