"""A run's DICOM outputs: which objects, built from what, stored where.

The derived OPT comes first (every other object refers to its geometry), then the en-face
images, the SEGs and the measurement report. Each object is stored in the object store under
its checksum; the run's result lists them, and the outbox sends them from there.
"""

from __future__ import annotations

import datetime as dt
import io
import socket
from typing import Any

import numpy as np
from pydicom import dcmwrite
from pydicom.dataset import Dataset

from appliance.exceptions import InvalidInput
from appliance.run_result import Output
from appliance.storage import ObjectStore
from dicom.derived_opt import derived_opt
from dicom.enface import enface_image
from dicom.provenance import Provenance
from dicom.report import RegionMeasurements, measurement_report
from dicom.segmentation import BINARY, cone_seg, layer_seg
from dicom.validity import object_problems
from dicom.volume import Volume
from gpu.quantify import grid_cells, to_um


def provenance_for(run: dict[str, Any], model_entry: dict,
                   device_serial_number: str) -> Provenance:
    pipeline = run["manifest"].get("pipeline", {})
    software = f"{pipeline.get('package', '0')}+{pipeline.get('commit', 'unknown')[:12]}"
    # The run's own time, not now: writing the run again gives the same objects.
    when = dt.datetime.fromtimestamp(run.get("queued_at") or 0, dt.UTC)
    return Provenance(run_id=run["run_id"], software_version=software,
                      model_id=model_entry["id"], weights_sha256=model_entry["weights_sha256"],
                      device_serial_number=device_serial_number or socket.gethostname(),
                      created_at=when)


def build_outputs(volume: Volume, corrected: np.ndarray, enface: dict[str, np.ndarray],
                  layer_labels: np.ndarray, layer_names: tuple[str, ...], cones_px: np.ndarray,
                  regions: list[RegionMeasurements], provenance: Provenance,
                  segmentation_types: tuple[str, ...] = (BINARY,)) -> list[tuple[str, Dataset]]:
    """(kind, dataset) for every output of a run, LABELMAP layer SEGs as ``layer_seg_labelmap``."""
    derived = derived_opt(corrected, volume, provenance)
    isos = enface_image(enface["ISOS"], "ISOS", derived, provenance)
    cost = enface_image(enface["COST"], "COST", derived, provenance)
    objects: list[tuple[str, Dataset]] = [("derived_opt", derived), ("enface_isos", isos),
                                          ("enface_cost", cost)]
    for segmentation_type in segmentation_types:
        kind = "layer_seg" if segmentation_type == BINARY else "layer_seg_labelmap"
        objects.append((kind, layer_seg(layer_labels, layer_names, derived, provenance,
                                        segmentation_type)))
    objects.append(("cone_seg", cone_seg(cones_px, isos, provenance)))
    evidence = [dataset for kind, dataset in objects if kind != "enface_isos"]
    objects.append(("report", measurement_report(regions, isos, evidence, provenance)))
    return objects


def report_regions(shape: tuple[int, int], grid: tuple[int, int], cones: dict,
                   cone_regions: list[dict], layers: dict, review: dict | None = None,
                   spectral: dict | None = None) -> list[RegionMeasurements]:
    """The field and the grid cells as rectangles on the en-face image (rows = B-scans).
    ``review`` is the run's "needs review" check (pipeline.needs_review), for the field;
    ``spectral`` the model-free spacing of the field and the cells (gpu.spectrum)."""
    check = {}
    if review is not None:
        check = {"expected_detection_error_percent":
                 review["expected_detection_error"]["percent"]}
    check.update(_spectral_values(spectral and spectral["field"]))
    field = RegionMeasurements("field", (0, shape[0]), (0, shape[1]),
                               {**cones, **{k: v for k, v in layers.items() if k != "regions"},
                                **check},
                               needs_review=None if review is None else review["flag"])
    regions = [field]
    cells = list(grid_cells(shape, grid))
    spectral_regions = spectral["regions"] if spectral is not None else [None] * len(cells)
    for (row, column, b, a), cone_region, layer_region, spacing in zip(
            cells, cone_regions, layers["regions"], spectral_regions, strict=True):
        values = {**cone_region, **layer_region, **_spectral_values(spacing)}
        regions.append(RegionMeasurements(
            f"region row {row + 1} column {column + 1}", (b.start, b.stop), (a.start, a.stop),
            {k: v for k, v in values.items() if isinstance(v, int | float) and
             k not in ("row", "column")}))
    return regions


def _spectral_values(spacing: dict | None) -> dict:
    """The SR's spectral measurements of one region; none where no ring was resolved."""
    if spacing is None or not spacing["resolved"]:
        return {}
    return {"spectral_density_per_mm2": spacing["density_per_mm2"],
            "spectral_row_spacing_um": spacing["row_spacing_um"]}


def store_outputs(objects: list[tuple[str, Dataset]], store: ObjectStore) -> tuple[Output, ...]:
    """Write each object to the store; what the run records about it."""
    stored = []
    for kind, dataset in objects:
        buffer = io.BytesIO()
        dcmwrite(buffer, dataset, enforce_file_format=True)
        problems = object_problems(buffer.getvalue())
        if problems:
            # Never hand a PACS an object it would refuse: the run fails with the reason.
            raise InvalidInput(f"the {kind} output would not be valid DICOM: "
                               f"{'; '.join(problems[:3])}; the source series carries values "
                               "the appliance cannot pass on")
        stored.append(Output(kind=kind, sop_class_uid=str(dataset.SOPClassUID),
                             sop_instance_uid=str(dataset.SOPInstanceUID),
                             series_instance_uid=str(dataset.SeriesInstanceUID),
                             sha256=store.put_bytes(buffer.getvalue()), bytes=buffer.tell()))
    return tuple(stored)


def cones_csv(cones_px: np.ndarray, pixel_um: tuple[float, float]) -> bytes:
    """The per-cone sidecar: one line per cone, on the IS/OS en-face image and in µm."""
    lines = ["row_px,column_px,x_um,y_um"]
    lines += [f"{row:.2f},{column:.2f},{x:.2f},{y:.2f}"
              for (row, column), (x, y) in zip(cones_px, to_um(cones_px, pixel_um), strict=True)]
    return ("\n".join(lines) + "\n").encode()
