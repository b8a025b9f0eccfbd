"""The pipeline: one plain function that reads as the data flow of a run.

load + validate the volume → preprocess (motion correction, surfaces, en-face) → layer
measurements → QC snapshot and arrays stored as artifacts. Cone segmentation with the MONAI
models, cone measurements and the DICOM outputs plug in where marked (issues 3 and 4).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from appliance.exceptions import InvalidInput, TransientError
from appliance.qc import snapshot_png
from appliance.storage import ObjectStore
from dicom.volume import VolumeError, read_volume
from gpu.layers import NoPhotoreceptorLayer
from gpu.preprocess import preprocess
from gpu.xp import array_module

log = logging.getLogger(__name__)

# Below this the motion and layer estimates have too little to work with.
MIN_B_SCANS, MIN_DEPTH_PX, MIN_A_LINES = 16, 80, 32


def run_pipeline(run: dict[str, Any], instance_paths: list[Path], store: ObjectStore,
                 *, use_gpu: bool = True) -> dict[str, Any]:
    """Process one run's stored instances; return the result recorded with the run.

    Raises ``InvalidInput`` for data that will never process (the run fails at once) and
    ``TransientError`` for failures worth retrying.
    """
    try:
        volume = read_volume(instance_paths)
    except VolumeError as error:
        raise InvalidInput(str(error)) from None
    except OSError as error:
        raise TransientError(f"a stored instance could not be read ({error})") from None
    check_size(volume.voxels.shape)

    xp = array_module(prefer_gpu=use_gpu)
    try:
        prepared = preprocess(volume.voxels, volume.spacing_mm, xp)
    except NoPhotoreceptorLayer as error:
        raise InvalidInput(str(error)) from None
    log.info("run %s: preprocessed %s on %s in %.1f s", run["run_id"], volume.voxels.shape,
             xp.__name__, sum(prepared.seconds.values()))

    axial_um, lateral_um = volume.spacing_mm[1] * 1000, volume.spacing_mm[2] * 1000
    # Next (issue 3): cone segmentation + uncertainty on prepared.enface, cone measurements.
    # Next (issue 4): derived OPT, layer SEG, en-face + cone SEG, SR → outbox.
    return {
        "volume": volume.describe(),
        "device": "gpu" if xp is not np else "cpu",
        "motion": motion_summary(prepared.shifts_px, axial_um, lateral_um),
        "layers": layer_measurements(prepared.surfaces_px, axial_um),
        "band_contrast": round(prepared.band_contrast, 3),
        "stage_seconds": {k: round(v, 3) for k, v in prepared.seconds.items()},
        "artifacts": {
            "qc_png": store.put_bytes(snapshot_png(prepared.corrected, prepared.surfaces_px,
                                                   prepared.enface["ISOS"])),
            "preprocessed_npz": store.put_bytes(_npz(prepared)),
        },
    }


def check_size(shape: tuple[int, ...]) -> None:
    b_scans, depth, a_lines = shape
    if b_scans < MIN_B_SCANS or depth < MIN_DEPTH_PX or a_lines < MIN_A_LINES:
        raise InvalidInput(
            f"the volume is too small to analyse: {b_scans} B-scans x {depth} depth x "
            f"{a_lines} A-lines; need at least {MIN_B_SCANS} x {MIN_DEPTH_PX} x {MIN_A_LINES}")


def motion_summary(shifts_px: np.ndarray, axial_um: float, lateral_um: float) -> dict:
    axial, lateral = shifts_px[:, 0] * axial_um, shifts_px[:, 1] * lateral_um
    return {"axial_rms_um": round(float(np.sqrt(np.mean(axial ** 2))), 3),
            "lateral_rms_um": round(float(np.sqrt(np.mean(lateral ** 2))), 3),
            "axial_max_abs_um": round(float(np.abs(axial).max()), 3),
            "lateral_max_abs_um": round(float(np.abs(lateral).max()), 3)}


def layer_measurements(surfaces_px: dict[str, np.ndarray], axial_um: float) -> dict:
    """Mean thickness of each layer between its surfaces, in micrometres."""
    spans = {"inner_segment_um": ("ELM", "ISOS"), "outer_segment_length_um": ("ISOS", "COST"),
             "rpe_um": ("RPE", "BM")}
    return {name: round(float(np.mean(surfaces_px[bottom] - surfaces_px[top]) * axial_um), 3)
            for name, (top, bottom) in spans.items()}


def _npz(prepared) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, shifts_px=prepared.shifts_px,
                        **{f"surface_{k}_px": v for k, v in prepared.surfaces_px.items()},
                        **{f"enface_{k}": v for k, v in prepared.enface.items()})
    return buffer.getvalue()
