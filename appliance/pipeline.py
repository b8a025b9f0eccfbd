"""The pipeline: one plain function that reads as the data flow of a run.

load + validate the volume → preprocess (motion correction, surfaces, en-face) → layers (the
layer network's labels on every corrected B-scan, checked against the surfaces) → cones (the
cone network's probability map, Monte Carlo dropout uncertainty, one centroid per cone; at a
canonical scale when the spectrum shows a sparser mosaic than the detector counted) →
measurements (mosaic, layer thickness, whole field and regions) → QC snapshot and arrays stored
as artifacts → DICOM outputs (derived OPT, en-face images, layer and cone SEGs, measurement
report) stored for the outbox.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from appliance.exceptions import ConfigurationError, InvalidInput, TransientError
from appliance.outputs import (
    build_outputs,
    cones_csv,
    provenance_for,
    report_regions,
    store_outputs,
)
from appliance.qc import snapshot_png
from appliance.registry import ModelRecord, load_network, model_card, network_module
from appliance.run_result import (
    Arrays,
    Artifacts,
    Motion,
    ReviewFlag,
    ReviewTiles,
    RunResult,
    VolumeSummary,
    build,
)
from appliance.storage import ObjectStore
from dicom.segmentation import BINARY
from dicom.volume import Volume, VolumeError, read_volume
from gpu import cone_model, layer_model
from gpu.calibration import TILE_PX, Calibration, assess, expected_detection_errors, review_tiles
from gpu.layers import NoPhotoreceptorLayer
from gpu.motion import motion_summary
from gpu.predictor import TensorRTPredictor, TorchPredictor, default_device
from gpu.preprocess import preprocess
from gpu.quantify import cone_measurements
from gpu.scale import CANONICAL_PX_PER_CONE, detect
from gpu.spectrum import DENSITY_TOLERANCE, density_ratio, disagrees, regional_spacing
from gpu.thickness import layer_measurements, thickness_maps_um
from gpu.xp import array_module

log = logging.getLogger(__name__)

REGION_GRID = (2, 2)       # columns x rows of regional cone and layer measurements
EXPECTED_ERROR_TOLERANCE_PERCENT = 5.0   # see needs_review
# Below this the motion and layer estimates have too little to work with.
MIN_B_SCANS, MIN_DEPTH_PX, MIN_A_LINES = 16, 80, 32


def needs_review(expected_errors: dict, detected_density_per_mm2: float | None = None,
                 spectral: dict | None = None, cone_scale: dict | None = None) -> dict:
    """Whether a person should check this run before its numbers are used, and why.

    Two checks that do not share a failure. The model's own: on held-out phantoms the
    calibrated expected error separates its good runs (1.7-2.3 % expected, 0.4-3.0 % real)
    from its poor ones (5.2-13.6 % expected, 16-71 % real: it sees only part of the misses),
    so the tolerance is the density goal's 5 %. And one without the model: the field's
    density from the en-face spectrum (``spectral``, gpu.spectrum) against the detected one,
    which catches a detector that counts speckle grains as cones with full confidence. And a
    run whose cones were detected at a resampled scale (``cone_scale``, gpu.scale) is always
    shown to a person: that rescue is rare, and it replaced the model's own answer.
    """
    reasons = []
    if cone_scale is not None and cone_scale["rescaled"]:
        reasons.append(f"the cones were detected on the image resampled to "
                       f"{CANONICAL_PX_PER_CONE:g} pixels per cone, because {cone_scale['reason']}"
                       ": check the cones in the review queue")
    ratio = None if spectral is None else density_ratio(detected_density_per_mm2, spectral)
    if disagrees(ratio):
        reasons.append(
            f"the detected cone density ({detected_density_per_mm2:.0f}/mm²) is {ratio:.2f} x "
            f"what the image's spectrum implies ({spectral['density_per_mm2']:.0f}/mm², row "
            f"spacing {spectral['row_spacing_um']:.1f} µm; tolerance x{1 + DENSITY_TOLERANCE:g}"
            " either way): check the cones in the review queue")
    if expected_errors["percent"] > EXPECTED_ERROR_TOLERANCE_PERCENT:
        reasons.append(
            f"the model expects {expected_errors['percent']:.1f} % of its detections to be "
            f"wrong or missed ({expected_errors['expected_false']:.0f} false, "
            f"{expected_errors['expected_missed']:.0f} missed; tolerance "
            f"{EXPECTED_ERROR_TOLERANCE_PERCENT:g} %): check the cones in the review queue")
    if spectral is None:
        spectral_check = "not run"
    elif spectral["resolved"]:
        spectral_check = "done"
    else:
        spectral_check = "not possible: " + spectral["reason"]
    return {"flag": bool(reasons), "reasons": reasons,
            "expected_detection_error": expected_errors,
            "spectral_density_ratio": None if ratio is None else round(ratio, 3),
            "spectral_check": spectral_check}


def run_checks() -> dict:
    """What ``needs_review`` checks, in words, for the model card."""
    return {
        "needs_review": "A run is flagged for a person when either check below fails; the "
                        "flag and its reasons are on the worklist, in `aomas runs show` and "
                        "in the SR (qualitative evaluation 'Needs review by a person').",
        "expected_detection_error": "The calibrated expected share of wrong or missed cone "
                                    "detections exceeds "
                                    f"{EXPECTED_ERROR_TOLERANCE_PERCENT:g} %.",
        "spectral_density": "Model-free: the detected cone density lies beyond "
                            f"x{1 + DENSITY_TOLERANCE:g} either way of the density implied "
                            "by the ring of the field's en-face power spectrum (Yellott's "
                            "ring, gpu/spectrum.py). Where no ring is resolved the check is "
                            "reported as not possible, with the reason. The spectral "
                            "spacing and density of the field and each region are in the SR.",
    }


def run_pipeline(run: dict[str, Any], instance_paths: list[Path], store: ObjectStore,
                 model: ModelRecord, *, use_gpu: bool = True, predictor_kind: str = "torch",
                 uncertainty_samples: int = 6, segmentation_types: tuple[str, ...] = (BINARY,),
                 device_serial_number: str = "",
                 on_stage: Callable[[str], None] = lambda stage: None) -> RunResult:
    """Process one run's stored instances; return the result recorded with the run.
    ``on_stage(name)`` is told as each stage begins (the worklist shows it).

    Raises ``InvalidInput`` for data that will never process (the run fails at once) and
    ``TransientError`` for failures worth retrying.
    """
    if run["manifest"]["model"] != model.manifest_entry():
        raise InvalidInput(f"the run names model {run['manifest']['model']} but this worker "
                           f"has {model.manifest_entry()}; resubmit the case")
    stage = Stages(on_stage)
    with stage("read_volume"):
        volume = read_stored_volume(instance_paths)
        summary = build(VolumeSummary, volume.describe())
        pixel_um = summary.enface_pixel_um   # an en-face pixel: (B-scan pitch, A-line spacing)

    xp = array_module(prefer_gpu=use_gpu)
    with stage("preprocess", timed=False):   # it times its own parts, synchronised on a GPU
        try:
            prepared = preprocess(volume.voxels, volume.spacing_mm, xp)
        except NoPhotoreceptorLayer as error:
            raise InvalidInput(str(error)) from None
        stage.seconds.update(prepared.seconds)
    log.info("run %s: preprocessed %s on %s in %.1f s", run["run_id"], volume.voxels.shape,
             xp.__name__, sum(prepared.seconds.values()))

    with stage("layers"):
        layer_predictor = make_predictor("layers", predictor_kind, model, store, use_gpu)
        layer_labels, b_scan_confidence = layer_model.segment(layer_predictor,
                                                              prepared.corrected)
        # Two independent readings of the same layers: where they part, a person should look.
        agreement = layer_model.dice(layer_labels, layer_model.labels_from_surfaces(
            prepared.surfaces_px, layer_labels.shape[1]))

    with stage("cones"):
        predictor = make_predictor("cones", predictor_kind, model, store, use_gpu)
        probability, uncertainty, cones_px, cone_scale = detect(
            predictor, cone_model.network_input(prepared.enface), pixel_um,
            uncertainty_samples=max(uncertainty_samples, 1))

    with stage("measurements_and_artifacts"):
        found = assess(probability, Calibration.from_card(model_card(model)))
        tiles = review_tiles(found, uncertainty, TILE_PX)
        thickness = thickness_maps_um(prepared.surfaces_px, summary.axial_um)
        cones, cone_regions = cone_measurements(cones_px, probability.shape, pixel_um,
                                                REGION_GRID)
        layers = layer_measurements(thickness, REGION_GRID, pixel_um)
        # Model-free: the mosaic's spacing from the en-face spectrum (gpu.spectrum).
        spectral = regional_spacing(prepared.enface, pixel_um, REGION_GRID)
        review = needs_review(expected_detection_errors(found), cones["cone_density_per_mm2"],
                              spectral["field"], cone_scale.as_dict())
        artifacts = Artifacts(
            qc_png=store.put_bytes(snapshot_png(prepared.corrected, prepared.surfaces_px,
                                                prepared.enface["ISOS"])),
            preprocessed_npz=store.put_bytes(_npz(
                prepared, probability, uncertainty, cones_px, thickness,
                layer_labels=layer_labels, b_scan_confidence=b_scan_confidence)),
            cones_csv=store.put_bytes(cones_csv(cones_px, pixel_um)))

    # The DICOM outputs, stored for the outbox: derived OPT, en-face images, SEGs, SR.
    with stage("dicom_outputs"):
        provenance = provenance_for(run, model.manifest_entry(), device_serial_number)
        regions = report_regions(probability.shape, REGION_GRID, cones, cone_regions, layers,
                                 review, spectral)
        objects = build_outputs(volume, prepared.corrected, prepared.enface, layer_labels,
                                layer_model.CLASSES[1:], cones_px, regions, provenance,
                                segmentation_types)
        outputs = store_outputs(objects, store)

    return RunResult(
        volume=summary, device="gpu" if xp is not np else "cpu",
        motion=Motion(**motion_summary(prepared.shifts_px, summary.axial_um,
                                                  pixel_um[1])),
        layers=layers,
        layer_segmentation={
            "agreement_dice": agreement,
            "least_confident_b_scans": [int(b) for b in np.argsort(b_scan_confidence)[:5]]},
        cones=cones, cone_regions=tuple(cone_regions), most_uncertain_tiles=tuple(tiles[:5]),
        band_contrast=round(prepared.band_contrast, 3),
        needs_review=build(ReviewFlag, review),
        artifacts=artifacts, outputs=outputs,
        stage_seconds={name: round(seconds, 3) for name, seconds in stage.seconds.items()},
        cone_scale=cone_scale.as_dict(), spectral_spacing=spectral,
        review_tiles=ReviewTiles(TILE_PX, tuple(probability.shape), tuple(tiles)))


class Stages:
    """The stages of a run: ``on_stage(name)`` as each begins, its seconds when it ends."""

    def __init__(self, on_stage: Callable[[str], None]):
        self.on_stage = on_stage
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str, *, timed: bool = True) -> Iterator[None]:
        self.on_stage(name)
        started = time.perf_counter()
        yield
        if timed:
            self.seconds[name] = time.perf_counter() - started


def read_stored_volume(instance_paths: list[Path]) -> Volume:
    try:
        volume = read_volume(instance_paths)
    except VolumeError as error:
        raise InvalidInput(str(error)) from None
    except OSError as error:
        raise TransientError(f"a stored instance could not be read ({error})") from None
    check_size(volume.voxels.shape)
    return volume


def make_predictor(network: str, kind: str, model: ModelRecord, store: ObjectStore,
                   use_gpu: bool):
    io = network_module(network).IO
    if kind == "tensorrt":
        try:
            return TensorRTPredictor(load_network(model, network), io, name=network,
                                     weights_sha256=model.weights_sha256,
                                     cache_dir=store.root.parent / "engines")
        except (ImportError, RuntimeError) as error:
            raise ConfigurationError(
                f"TensorRT is unavailable ({error}); install the [gpu] extra on a CUDA box or "
                "set pipeline.predictor = 'torch'") from None
    return TorchPredictor(load_network(model, network), io, device=default_device(use_gpu))


def check_size(shape: tuple[int, ...]) -> None:
    b_scans, depth, a_lines = shape
    if b_scans < MIN_B_SCANS or depth < MIN_DEPTH_PX or a_lines < MIN_A_LINES:
        raise InvalidInput(
            f"the volume is too small to analyse: {b_scans} B-scans x {depth} depth x "
            f"{a_lines} A-lines; need at least {MIN_B_SCANS} x {MIN_DEPTH_PX} x {MIN_A_LINES}")


def _npz(prepared, probability, uncertainty, cones_px, thickness, *, layer_labels,
         b_scan_confidence) -> bytes:
    arrays = {Arrays.SHIFTS_PX: prepared.shifts_px, Arrays.CONE_PROBABILITY: probability,
              Arrays.CONE_UNCERTAINTY: uncertainty, Arrays.CONES_PX: cones_px,
              Arrays.LAYER_LABELS: layer_labels, Arrays.B_SCAN_CONFIDENCE: b_scan_confidence,
              **{Arrays.thickness(k): v for k, v in thickness.items()},
              **{Arrays.surface(k): v for k, v in prepared.surfaces_px.items()},
              **{Arrays.enface(k): v for k, v in prepared.enface.items()}}
    buffer = io.BytesIO()
    # What np.load reads, written at deflate level 1: a third of the time of numpy's
    # savez_compressed (level 6) on a 512³ label map, for a slightly larger file.
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, np.asanyarray(array), allow_pickle=False)
    return buffer.getvalue()
