"""Scoring against phantom ground truth: what `aomas evaluate` and the tests measure.

Every number compares the pipeline's output with the truth *where the truth lies in the
corrected volume*, so a preprocessing error and a network error are told apart: motion and
surfaces are scored on the preprocessing, cones and layer labels on the networks' output.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from gpu import layer_model
from gpu.cone_model import centroids
from gpu.predictor import Predictor
from gpu.quantify import match_detections, mosaic_metrics

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
    rows = []
    for sample in samples:
        detected = centroids(predictor.predict(sample.image))
        shape = sample.target.shape
        truth, found = _inside(sample.truth_px, shape), _inside(detected, shape)
        to_um = np.array(sample.pixel_um)
        field = ((shape[1] - 2 * BORDER_PX) * to_um[1], (shape[0] - 2 * BORDER_PX) * to_um[0])
        true_metrics = mosaic_metrics(_xy_um(truth, to_um), field)
        found_metrics = mosaic_metrics(_xy_um(found, to_um), field)
        radius = MATCH_RADIUS_NND * true_metrics["nnd_mean_um"]
        match = match_detections(_xy_um(found, to_um), _xy_um(truth, to_um), radius)
        density_error = ((found_metrics["cone_density_per_mm2"] or 0)
                         / true_metrics["cone_density_per_mm2"] - 1)
        rows.append({
            "seed": sample.spec.seed, "family": sample.spec.family,
            "intensity": sample.spec.intensity,
            "pixel_um": [round(float(p), 3) for p in sample.pixel_um],
            "eccentricity_deg": round(sample.spec.eccentricity_deg, 2),
            "noise": round(sample.spec.noise, 3), "motion_um": round(sample.spec.motion_um, 2),
            **match,
            "density_true": true_metrics["cone_density_per_mm2"],
            "density_found": found_metrics["cone_density_per_mm2"],
            "density_error_percent": round(100 * density_error, 2),
            "hexagonal_true": true_metrics["hexagonal_percent"],
            "hexagonal_found": found_metrics["hexagonal_percent"],
        })
    return rows


def _inside(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    keep = ((points[:, 0] >= BORDER_PX) & (points[:, 0] < shape[0] - BORDER_PX)
            & (points[:, 1] >= BORDER_PX) & (points[:, 1] < shape[1] - BORDER_PX))
    return points[keep] - BORDER_PX


def _xy_um(points_px: np.ndarray, to_um: np.ndarray) -> np.ndarray:
    """(row, column) pixels → (x, y) micrometres."""
    return np.column_stack([points_px[:, 1] * to_um[1], points_px[:, 0] * to_um[0]])
