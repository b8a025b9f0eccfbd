"""Accepting a case's review: measurements recomputed from the reviewed cone masks, and a new
SEG/SR version, marked as reviewed by the person who accepted it, sent through the outbox.

The reviewed cone positions are the model's, except inside tiles a person labelled: there the
cones are the connected components of the tile's current label version (the adjudicated
reference where there was one), each counted at its centroid. Layers are not edited in the
review page, so their thicknesses stay the run's. The run's own outputs are left as they are;
each acceptance is a new review number with its own UIDs, listing its predecessor report.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import pydicom
import sqlite_utils
from scipy import ndimage

from appliance import audit, outbox, runs
from appliance.database import write_transaction
from appliance.exceptions import Conflict, InvalidInput
from appliance.limits import MAX_TEXT_CHARS
from appliance.outputs import provenance_for, report_regions, store_outputs
from appliance.pipeline import REGION_GRID
from appliance.review import labels
from appliance.review.case_images import run_arrays
from appliance.run_result import Arrays, RunResult
from appliance.storage import ObjectStore
from dicom.report import measurement_report
from dicom.segmentation import cone_seg
from gpu.cone_model import cone_target
from gpu.quantify import cone_measurements


def reviewed_cones(model_cones_px: np.ndarray, shape: tuple[int, int],
                   edited_tiles: Iterable[tuple[dict[str, Any], np.ndarray]]) -> np.ndarray:
    """(n, 2) cone centres (row, column): the model's outside the edited tiles, the reviewed
    masks' component centroids inside them."""
    mask = cone_target(shape, model_cones_px) > 0
    edited = np.zeros(shape, bool)
    for tile, tile_mask in edited_tiles:
        rows = slice(tile["row_px"], tile["row_px"] + tile["height_px"])
        columns = slice(tile["column_px"], tile["column_px"] + tile["width_px"])
        mask[rows, columns] = tile_mask
        edited[rows, columns] = True
    # Components are found on the whole field, so a cone a tile edge cuts in two stays one.
    components, count = ndimage.label(mask)
    centres = np.array(ndimage.center_of_mass(mask, components, range(1, count + 1)),
                       float).reshape(-1, 2)
    model_cones_px = np.asarray(model_cones_px, float).reshape(-1, 2)
    return np.vstack([model_cones_px[~_inside(edited, model_cones_px)],
                      centres[_inside(edited, centres)]])


def accept(db: sqlite_utils.Database, store: ObjectStore, run_id: str, *, reviewer: str,
           destinations: Iterable[dict], device_serial_number: str = "",
           comment: str = "") -> tuple[dict[str, Any], bool]:
    """Accept the run's review as it stands; return (review, created). Accepting again with
    no label changed since answers with the last review."""
    if len(comment) > MAX_TEXT_CHARS:
        raise InvalidInput(f"a comment is limited to {MAX_TEXT_CHARS} characters")
    run = runs.require(db, run_id)
    if run["state"] != runs.SUCCEEDED or run["superseded_by"]:
        raise Conflict(f"run {run_id} is {run['state'].lower()}"
                       f"{', superseded' if run['superseded_by'] else ''}; only the current "
                       "successful run of a case can be reviewed")
    if runs.is_shadow(run):
        raise Conflict(f"run {run_id} is a shadow run, kept for comparison only; review the "
                       "case's production run")
    waiting = [row["tile_id"] for row in db.query(
        "SELECT a.tile_id FROM adjudications a JOIN tiles t USING (tile_id) "
        "WHERE t.run_id = ? AND a.decided_at IS NULL ORDER BY a.tile_id", [run_id])]
    if waiting:
        raise Conflict(f"tiles {', '.join(map(str, waiting))} await adjudication; accept the "
                       "review once they are decided")
    edited = list(db["tiles"].rows_where("run_id = ? AND head_version > 0", [run_id],
                                         order_by="tile_id"))
    versions = {str(tile["tile_id"]): tile["head_version"] for tile in edited}
    previous = latest(db, run_id)
    if previous is not None and previous["label_versions"] == versions:
        return previous, False

    result: RunResult = run["result"]
    arrays = run_arrays(store, result.artifacts.preprocessed_npz)
    model_cones_px, shape = arrays[Arrays.CONES_PX], arrays[Arrays.enface("ISOS")].shape
    cones_px = reviewed_cones(model_cones_px, shape, [
        (tile, labels.mask_of(db, store, tile, tile["head_version"])) for tile in edited])
    cones, cone_regions = cone_measurements(cones_px, shape, result.volume.enface_pixel_um,
                                            REGION_GRID)
    measurements = {"cones": cones, "cone_regions": cone_regions, "layers": result.layers,
                    "model_cone_count": int(len(model_cones_px))}

    number = (previous["review_number"] if previous else 0) + 1
    accepted_at = time.time()
    provenance = dataclasses.replace(
        provenance_for(run, run["manifest"]["model"], device_serial_number),
        review_number=number, reviewed_by=reviewer,
        created_at=dt.datetime.fromtimestamp(accepted_at, dt.UTC))
    stored = {output.kind: output for output in result.outputs}
    isos = _read(store, stored["enface_isos"].sha256)
    seg = cone_seg(cones_px, isos, provenance)
    # The other objects are evidence only: their identifiers, not their pixels.
    evidence = [_read(store, stored[kind].sha256, pixels=False)
                for kind in ("derived_opt", "layer_seg") if kind in stored]
    previous_output = (previous or {}).get("report_output")
    previous_report = previous_output["sha256"] if previous_output else stored["report"].sha256
    report = measurement_report(
        # The spectrum is the image's, not the cones': a review leaves it as the run found it.
        report_regions(shape, REGION_GRID, cones, cone_regions, result.layers,
                       spectral=result.spectral_spacing),
        isos, [*evidence, seg], provenance,
        previous_report=_read(store, previous_report, pixels=False))
    outputs = store_outputs([("cone_seg", seg), ("report", report)], store)

    with write_transaction(db):
        if (latest(db, run_id) or {}).get("review_number", 0) != number - 1:
            raise Conflict(f"run {run_id} was reviewed meanwhile; reload and accept again")
        row = {"run_id": run_id, "review_number": number, "accepted_by": reviewer,
               "accepted_at": accepted_at, "comment": comment,
               "label_versions": json.dumps(versions), "measurements": json.dumps(measurements),
               "outputs": json.dumps([dataclasses.asdict(output) for output in outputs])}
        row["review_id"] = db["reviews"].insert(row).last_pk
        queued = outbox.enqueue(db, run_id, outputs, destinations, now=accepted_at)
        audit.record(db, actor=reviewer, action="review.accept", object_kind="run",
                     object_id=run_id, detail={
                         "review_number": number, "edited_tiles": len(versions),
                         "cone_count": measurements["cones"]["cone_count"],
                         "model_cone_count": measurements["model_cone_count"],
                         "outbox_rows": queued})
    return _decoded(row), True


def latest(db: sqlite_utils.Database, run_id: str) -> dict[str, Any] | None:
    rows = list(db["reviews"].rows_where("run_id = ?", [run_id],
                                         order_by="review_number DESC", limit=1))
    return _decoded(rows[0]) if rows else None


def of_run(db: sqlite_utils.Database, run_id: str) -> list[dict[str, Any]]:
    return [_decoded(row) for row in db["reviews"].rows_where(
        "run_id = ?", [run_id], order_by="review_number")]


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    review = {**row, **{key: json.loads(row[key]) if isinstance(row[key], str) else row[key]
                        for key in ("label_versions", "measurements", "outputs")}}
    review["report_output"] = next((o for o in review["outputs"] if o["kind"] == "report"),
                                   None)
    return review


def _read(store: ObjectStore, sha256: str, *, pixels: bool = True) -> pydicom.Dataset:
    return pydicom.dcmread(store.path_for(sha256), stop_before_pixels=not pixels)


def _inside(mask: np.ndarray, points_px: np.ndarray) -> np.ndarray:
    """Which (row, column) points fall on True pixels of ``mask``."""
    if len(points_px) == 0:
        return np.zeros(0, bool)
    cells = np.clip(np.rint(points_px).astype(int), 0, np.array(mask.shape) - 1)
    return mask[cells[:, 0], cells[:, 1]]
