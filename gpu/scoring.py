"""Scoring against phantom ground truth: what `aomas evaluate` and the tests measure.

Every number compares the pipeline's output with the truth *where the truth lies in the
corrected volume*, so a preprocessing error and a network error are told apart: motion and
surfaces are scored on the preprocessing, cones and layer labels on the networks' output.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from gpu import calibration, layer_model
from gpu.calibration import REVIEW_THRESHOLD, TILE_PX, Calibration, Candidates
from gpu.cone_model import PEAK_THRESHOLD, centroids
from gpu.predictor import Predictor
from gpu.quantify import field_size_um, match_detections, matched, mosaic_metrics, to_um
from gpu.spectrum import density_ratio, disagrees, mosaic_spacing

if TYPE_CHECKING:
    from gpu.phantom import Phantom
    from gpu.preprocess import Preprocessed
    from gpu.training import PhantomSample

BORDER_PX = 4            # cones this close to the edge are not scored (half-imaged)
MATCH_RADIUS_NND = 0.75  # matching radius as a fraction of the true mean NND
SURFACE_BORDER_PX = 8    # A-lines at the edge, where correction shifted in no data


def preprocessing_errors(phantom: Phantom, prepared: Preprocessed,
                         true_surfaces: dict[str, np.ndarray]) -> dict[str, float]:
    """Surface mean absolute error and residual motion, in pixels.

    Motion is known only up to what no registration of neighbouring B-scans can see: for the
    axial shifts a quadratic over B-scans (retinal tilt and curvature along the slow axis look
    exactly like slow axial motion), for the lateral shifts a straight line (a steady drift
    shears the mosaic the same way a sheared mosaic would look). Those are removed before the
    RMS; the lateral RMS with only the mean removed is reported beside it.

    The lateral residual (0.3–0.85 px on held-out phantoms) is mostly the mosaic itself: the
    cones of neighbouring B-scans are not the same cones one row on, so each pair's shift carries
    a small bias from the local cone geometry, and the chain adds them up. Phantoms without any
    motion or noise show 0.23–0.69 px. Only a second, independent sampling of the same retina
    (another volume, an orthogonal scan) can take it out.
    """
    _, axial_um, lateral_um = phantom.spec.spacing_um
    truth = np.column_stack([phantom.shifts_um[:, 2] / axial_um,
                             -phantom.shifts_um[:, 0] / lateral_um])
    error = prepared.shifts_px - truth
    edge = slice(SURFACE_BORDER_PX, -SURFACE_BORDER_PX)
    errors = {f"{name}_mae_px": float(np.abs(found - true_surfaces[name])[:, edge].mean())
              for name, found in prepared.surfaces_px.items()}
    lateral = error[:, 1] - error[:, 1].mean()
    errors.update({
        "axial_residual_px": detrended_rms(error[:, 0], degree=2),
        "lateral_residual_px": detrended_rms(error[:, 1], degree=1),
        "lateral_mean_removed_px": float(np.sqrt(np.mean(lateral ** 2))),
        "lateral_pair_median_px": float(np.median(np.abs(np.diff(error[:, 1])))),
    })
    return {key: round(value, 3) for key, value in errors.items()}


def detrended_rms(error: np.ndarray, degree: int) -> float:
    design = np.vander(np.arange(len(error), dtype=float), degree + 1)
    residual = error - design @ np.linalg.lstsq(design, error, rcond=None)[0]
    return float(np.sqrt(np.mean(residual ** 2)))


def score_layers(predictor: Predictor, samples: Iterable[PhantomSample]) -> list[dict]:
    """Dice of the layer network's labels against the true layers, one row per sample."""
    rows = []
    for sample in samples:
        # The sample holds network inputs; standardising them again changes nothing.
        found, _ = layer_model.segment(predictor, sample.b_scans[:, 0])
        rows.append({"seed": sample.spec.seed,
                     **{f"dice_{k}": v for k, v in
                        layer_model.dice(found, sample.layer_labels).items()}})
    return rows


def score_cones(predictor: Predictor, samples: Iterable[PhantomSample]) -> list[dict]:
    """Detection and mosaic metrics against the truth, one row per sample."""
    return [score_cone_map(predictor.predict(sample.image), sample) for sample in samples]


def score_cone_map(probability: np.ndarray, sample: PhantomSample) -> dict:
    """Detection and mosaic metrics of one sample's cone probability map."""
    detected = centroids(probability)
    shape = sample.target.shape
    truth, found = _inside(sample.truth_px, shape), _inside(detected, shape)
    pixel_um = sample.pixel_um
    field = field_size_um((shape[0] - 2 * BORDER_PX, shape[1] - 2 * BORDER_PX), pixel_um)
    true_metrics = mosaic_metrics(to_um(truth, pixel_um), field)
    found_metrics = mosaic_metrics(to_um(found, pixel_um), field)
    radius = MATCH_RADIUS_NND * true_metrics["nnd_mean_um"]
    match = match_detections(to_um(found, pixel_um), to_um(truth, pixel_um), radius)
    density_error = ((found_metrics["cone_density_per_mm2"] or 0)
                     / true_metrics["cone_density_per_mm2"] - 1)
    return {**_scored_row(sample, match, true_metrics, found_metrics, density_error),
            **score_spectrum(sample, found_metrics["cone_density_per_mm2"])}


def score_spectrum(sample: PhantomSample, detected_density_per_mm2: float | None) -> dict:
    """The model-free spacing of the sample's en-face images against the truth: its ring
    against the ring of the true cone positions (the mosaic's own modal spacing, found by the
    same estimator on the training target, a disk at each true cone), its density against the
    true one, and whether the run's cross-check (pipeline.needs_review) would flag the
    detected density."""
    measured = mosaic_spacing(list(sample.image), sample.pixel_um)
    if not measured.resolved:
        return {"spectral_resolved": False, "ring_error_percent": None,
                "spectral_density_error_percent": None, "spectral_flag": False}
    truth = mosaic_spacing([sample.target], sample.pixel_um)
    area_mm2 = float(np.prod(np.array(sample.image.shape[1:]) * np.array(sample.pixel_um))) / 1e6
    rows, columns = sample.truth_px.T
    height, width = sample.image.shape[1:]
    true_density = np.count_nonzero((rows >= 0) & (rows < height) & (columns >= 0)
                                    & (columns < width)) / area_mm2
    ring_error = (measured.ring_cycles_per_um / truth.ring_cycles_per_um - 1
                  if truth.resolved else None)
    ratio = density_ratio(detected_density_per_mm2, measured.as_dict())
    return {"spectral_resolved": True,
            "ring_error_percent": None if ring_error is None else round(100 * ring_error, 2),
            "spectral_density_error_percent": round(
                100 * (measured.density_per_mm2 / true_density - 1), 2),
            "spectral_flag": disagrees(ratio)}


def _scored_row(sample: PhantomSample, match: dict, true_metrics: dict, found_metrics: dict,
                density_error: float) -> dict:
    return {
        "seed": sample.spec.seed, "family": sample.spec.family,
        "intensity": sample.spec.intensity,
        "pixel_um": [round(float(p), 3) for p in sample.pixel_um],
        "eccentricity_deg": round(sample.spec.eccentricity_deg, 2),
        "noise": round(sample.spec.noise, 3), "motion_um": round(sample.spec.motion_um, 2),
        **match,
        "density_true": true_metrics["cone_density_per_mm2"],
        "density_found": found_metrics["cone_density_per_mm2"],
        "density_error_percent": round(100 * density_error, 2),
        "nnd_true_um": true_metrics["nnd_mean_um"],
        "nnd_found_um": found_metrics["nnd_mean_um"],
        "hexagonal_true": true_metrics["hexagonal_percent"],
        "hexagonal_found": found_metrics["hexagonal_percent"],
    }


def _inside(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return points[_inside_mask(points, shape)] - BORDER_PX


def candidate_labels(probability: np.ndarray, sample: PhantomSample) -> dict:
    """The probability map's candidates (see ``calibration``) against the truth: each
    candidate's peak probability and whether it is a true cone, and each scored tile's
    label "holds a false detection or a missed cone". Points within BORDER_PX of the edge
    are left out, as in ``score_cones``."""
    shape = probability.shape
    centres, peak = calibration.candidates(probability)
    keep = _inside_mask(centres, shape)
    centres, peak = centres[keep], peak[keep]
    truth = sample.truth_px[_inside_mask(sample.truth_px, shape)]
    pixel_um = sample.pixel_um
    field = field_size_um((shape[0] - 2 * BORDER_PX, shape[1] - 2 * BORDER_PX), pixel_um)
    radius = MATCH_RADIUS_NND * mosaic_metrics(to_um(truth, pixel_um), field)["nnd_mean_um"]
    detected = peak > PEAK_THRESHOLD
    # Detections are matched first; the candidates below threshold then to the cones left.
    detection_correct, truth_found = matched(to_um(centres[detected], pixel_um),
                                             to_um(truth, pixel_um), radius)
    below_is_cone, _ = matched(to_um(centres[~detected], pixel_um),
                               to_um(truth[~truth_found], pixel_um), radius)
    is_cone = np.zeros(len(centres), bool)
    is_cone[detected], is_cone[~detected] = detection_correct, below_is_cone
    tiles = (-(-shape[0] // TILE_PX), -(-shape[1] // TILE_PX))
    errors = np.zeros(tiles, bool)
    for points in (centres[detected][~detection_correct], truth[~truth_found]):
        index = (points // TILE_PX).astype(int)
        errors[index[:, 0], index[:, 1]] = True
    return {"centres": centres, "peak": peak, "is_cone": is_cone, "detected": detected,
            "tile_error": errors}


def score_calibration(probability: np.ndarray, sample: PhantomSample,
                      fitted: Calibration) -> tuple[dict, dict]:
    """Calibration and review-tile figures of one sample: a row of metrics, and the items
    (detection confidences, pixels, tiles) for pooling across samples."""
    labels = candidate_labels(probability, sample)
    found = Candidates(labels["centres"], labels["peak"], fitted.confidence(labels["peak"]))
    confidence, detected = found.confidence, found.detected
    # Scored tiles: whole ones (the pipeline's last row and column of tiles may be partial).
    whole = (slice(probability.shape[0] // TILE_PX), slice(probability.shape[1] // TILE_PX))
    tile_score = calibration.tile_error_probability(found, probability.shape, TILE_PX)[whole]
    tile_label = labels["tile_error"][whole].ravel()
    tile_score = tile_score.ravel()
    flagged = tile_score >= REVIEW_THRESHOLD
    pixels = probability[BORDER_PX:-BORDER_PX, BORDER_PX:-BORDER_PX].ravel()
    pixel_truth = sample.target[BORDER_PX:-BORDER_PX, BORDER_PX:-BORDER_PX].ravel() > 0.5
    row = {
        "detection_ece": round(calibration.expected_calibration_error(
            confidence[detected], labels["is_cone"][detected]), 4),
        "pixel_ece": round(calibration.expected_calibration_error(pixels, pixel_truth), 4),
        "tile_auroc": calibration.auroc(tile_score, tile_label),
        "tiles_flagged": int(flagged.sum()), "tiles_with_error": int(tile_label.sum()),
        "tiles": int(tile_label.size),
        "flagged_error_rate": (round(float(tile_label[flagged].mean()), 3)
                               if flagged.any() else None),
    }
    items = {"confidence": confidence[detected], "correct": labels["is_cone"][detected],
             "pixel": pixels, "pixel_truth": pixel_truth,
             "tile_score": tile_score, "tile_error": tile_label}
    return row, items


def pooled_calibration(items: list[dict], pixel_sample: int = 20_000) -> dict:
    """ECE with bootstrap 95 % intervals (detections, and a fixed sample of pixels) and tile
    AUROC over many samples' items."""
    def joined(key):
        return np.concatenate([item[key] for item in items]) if items else np.zeros(0)

    pixels, pixel_truth = joined("pixel"), joined("pixel_truth")
    pick = np.random.default_rng(0).choice(len(pixels), min(pixel_sample, len(pixels)),
                                           replace=False)
    tile_score, tile_error = joined("tile_score"), joined("tile_error")
    flagged = tile_score >= REVIEW_THRESHOLD
    return {
        "detection": calibration.ece_with_interval(joined("confidence"), joined("correct")),
        "pixel": calibration.ece_with_interval(pixels[pick], pixel_truth[pick]),
        "tile_auroc": calibration.auroc(tile_score, tile_error),
        "flagged_error_rate": (round(float(tile_error[flagged].mean()), 3)
                               if flagged.any() else None),
        "tiles_flagged": int(flagged.sum()), "tiles": int(len(tile_score)),
    }


def _inside_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return ((points[:, 0] >= BORDER_PX) & (points[:, 0] < shape[0] - BORDER_PX)
            & (points[:, 1] >= BORDER_PX) & (points[:, 1] < shape[1] - BORDER_PX))
