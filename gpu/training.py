"""Training and scoring the cone network on synthetic phantoms (never on evaluation seeds).

A sample is a phantom run through the same preprocessing as the pipeline, so the network learns
on the en-face images it will see, motion-correction imperfections included. The target marks
each true cone where it actually appears in that corrected en-face image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from gpu.cone_model import build_network, centroids, cone_target, network_input
from gpu.phantom import PhantomSpec, make_phantom
from gpu.predictor import PATCH_PX, Predictor
from gpu.preprocess import Preprocessed, preprocess
from gpu.quantify import match_detections, mosaic_metrics

BORDER_PX = 4            # cones this close to the edge are not scored (half-imaged)
MATCH_RADIUS_NND = 0.75  # matching radius as a fraction of the true mean NND


@dataclass
class ConeSample:
    spec: PhantomSpec
    image: np.ndarray            # network input (channels, rows, columns)
    target: np.ndarray           # (rows, columns) cone mask
    truth_px: np.ndarray         # (n, 2) true cone (row, column) in the en-face image
    pixel_um: tuple[float, float]


def phantom_spec(seed: int) -> PhantomSpec:
    """Varied phantoms: eccentricity 1.5–8°, noise, motion amplitude, size."""
    rng = np.random.default_rng(10_000 + seed)
    size = int(rng.choice([96, 128, 160]))
    return PhantomSpec(seed=seed, b_scans=size, a_lines=size, depth=160,
                       eccentricity_deg=float(rng.uniform(1.5, 8.0)),
                       noise=float(rng.uniform(0.04, 0.15)),
                       motion_um=float(rng.uniform(1.0, 4.0)),
                       axial_motion_um=float(rng.uniform(2.0, 6.0)))


def make_sample(spec: PhantomSpec) -> ConeSample:
    phantom = make_phantom(spec)
    pitch_um = spec.lateral_spacing_um
    prepared = preprocess(phantom.voxels, (pitch_um / 1000, spec.axial_spacing_um / 1000,
                                           spec.lateral_spacing_um / 1000))
    truth = true_positions_px(phantom.cones_um, phantom.shifts_um, prepared, pitch_um,
                              spec.lateral_spacing_um)
    shape = prepared.enface["ISOS"].shape
    return ConeSample(spec=spec, image=network_input(prepared.enface),
                      target=cone_target(shape, truth), truth_px=truth,
                      pixel_um=(pitch_um, spec.lateral_spacing_um))


def true_positions_px(cones_um: np.ndarray, shifts_um: np.ndarray, prepared: Preprocessed,
                      pitch_um: float, lateral_um: float) -> np.ndarray:
    """Where each true cone appears in the corrected en-face image, as (row, column).

    B-scan b saw the retina at y = b·pitch + dy_b and A-line a at x = a·lateral + dx_b; the
    correction then moved B-scan b's content by -s_b (the estimated lateral shift).
    """
    last = len(shifts_um) - 1
    b0 = np.clip(np.rint(cones_um[:, 1] / pitch_um).astype(int), 0, last)
    rows = (cones_um[:, 1] - shifts_um[b0, 1]) / pitch_um
    b = np.clip(np.rint(rows).astype(int), 0, last)
    columns = (cones_um[:, 0] - shifts_um[b, 0]) / lateral_um - prepared.shifts_px[b, 1]
    return np.column_stack([rows, columns])


def train(samples: list[ConeSample], *, iterations: int = 600, batch_size: int = 16,
          seed: int = 0, log: Callable[[str], None] = print):
    """Train the cone network deterministically; return it (on the CPU)."""
    import torch
    from monai.losses import DiceCELoss

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(seed)
    network = build_network()
    optimiser = torch.optim.Adam(network.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, iterations)
    loss_fn = DiceCELoss(sigmoid=True)
    network.train()
    for iteration in range(1, iterations + 1):
        images, targets = _batch(samples, batch_size, rng)
        optimiser.zero_grad()
        loss = loss_fn(network(torch.from_numpy(images)), torch.from_numpy(targets))
        loss.backward()
        optimiser.step()
        schedule.step()
        if iteration % 100 == 0 or iteration == 1:
            log(f"iteration {iteration}/{iterations}: loss {loss.item():.4f}")
    return network.eval()


def _batch(samples: list[ConeSample], size: int, rng: np.random.Generator):
    images, targets = [], []
    for _ in range(size):
        sample = samples[rng.integers(len(samples))]
        rows, columns = sample.target.shape
        r = rng.integers(0, rows - PATCH_PX + 1)
        c = rng.integers(0, columns - PATCH_PX + 1)
        image = sample.image[:, r:r + PATCH_PX, c:c + PATCH_PX]
        target = sample.target[None, r:r + PATCH_PX, c:c + PATCH_PX]
        turns, flip = int(rng.integers(4)), bool(rng.integers(2))
        image, target = np.rot90(image, turns, (1, 2)), np.rot90(target, turns, (1, 2))
        if flip:
            image, target = image[:, :, ::-1], target[:, :, ::-1]
        images.append(np.ascontiguousarray(image))
        targets.append(np.ascontiguousarray(target))
    return np.stack(images).astype(np.float32), np.stack(targets).astype(np.float32)


def score(predictor: Predictor, samples: Iterable[ConeSample]) -> list[dict]:
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
            "seed": sample.spec.seed, "eccentricity_deg": round(sample.spec.eccentricity_deg, 2),
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
