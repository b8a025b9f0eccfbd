"""Training and scoring the networks on synthetic phantoms (never on evaluation seeds).

A sample is a phantom run through the same preprocessing as the pipeline, so the networks learn
on the images they will see, motion-correction imperfections included. The targets are the
truth where it actually appears in the corrected volume: each true cone in the corrected en-face
image, and the layers between the true surfaces moved by the correction that was applied.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gpu import cone_model, layer_model
from gpu.cone_model import cone_target
from gpu.phantom import Phantom, PhantomSpec
from gpu.phantom_b import INTENSITY_MAPPINGS, FamilyBSpec, density_per_mm2, hexagonal_spacing_um
from gpu.phantoms import make_phantom_of
from gpu.preprocess import Preprocessed, preprocess
from gpu.scoring import preprocessing_errors

LAYER_B_SCAN_STEP = 4    # neighbouring B-scans look alike: every 4th is enough to learn from


@dataclass
class PhantomSample:
    spec: PhantomSpec
    image: np.ndarray            # cone network input (channels, rows, columns)
    target: np.ndarray           # (rows, columns) cone mask
    truth_px: np.ndarray         # (n, 2) true cone (row, column) in the en-face image
    pixel_um: tuple[float, float]
    b_scans: np.ndarray          # layer network input (n, 1, depth, a_lines), every 4th B-scan
    layer_labels: np.ndarray     # (n, depth, a_lines) true layer classes of those B-scans
    preprocessing_errors: dict   # surfaces and motion against the truth (gpu/scoring.py)


def phantom_spec(seed: int) -> PhantomSpec:
    """Varied phantoms: eccentricity 1.5–8°, noise, motion amplitude, mosaic disorder, size."""
    rng = np.random.default_rng(10_000 + seed)
    size = int(rng.choice([96, 128, 160]))
    return PhantomSpec(seed=seed, b_scans=size, a_lines=size, depth=160,
                       eccentricity_deg=float(rng.uniform(1.5, 8.0)),
                       noise=float(rng.uniform(0.04, 0.15)),
                       motion_um=float(rng.uniform(1.0, 4.0)),
                       axial_motion_um=float(rng.uniform(2.0, 6.0)),
                       jitter=float(rng.uniform(0.2, 0.3)))


def family_b_spec(seed: int) -> FamilyBSpec:
    """Varied family B phantoms: eccentricity 0.5-12°, pitches 0.5-1.5 µm on each axis,
    every intensity mapping, noise and motion."""
    rng = np.random.default_rng(20_000 + seed)
    eccentricity = float(np.exp(rng.uniform(np.log(0.5), np.log(12.0))))
    # Fine pitches where cones are small, so that a cone spans at least ~2.5 samples.
    spacing = float(hexagonal_spacing_um(density_per_mm2(eccentricity)))
    coarsest = float(np.clip(spacing / 2.5, 0.5, 1.5))
    fast, slow = (float(rng.uniform(0.5, coarsest)) for _ in range(2))
    size = int(rng.choice([96, 128, 160]))
    return FamilyBSpec(seed=seed, b_scans=int(rng.choice([64, 96, size])), a_lines=size,
                       depth=160, fast_pitch_um=round(fast, 3), slow_pitch_um=round(slow, 3),
                       axial_pitch_um=round(float(rng.uniform(0.8, 1.2)), 3),
                       eccentricity_deg=round(eccentricity, 3),
                       noise=float(rng.uniform(0.05, 0.25)),
                       motion_um=float(rng.uniform(0.5, 4.0)),
                       intensity=str(rng.choice(INTENSITY_MAPPINGS)),
                       psf_fwhm_um=float(rng.uniform(2.0, 3.0)),
                       axial_fwhm_um=float(rng.uniform(2.5, 3.5)))


def prepare(spec: PhantomSpec | FamilyBSpec) -> tuple[Phantom, Preprocessed]:
    """A phantom (either family) and the pipeline's preprocessing of it."""
    phantom = make_phantom_of(spec)
    return phantom, preprocess(phantom.voxels, tuple(s / 1000 for s in spec.spacing_um))


def make_sample(spec: PhantomSpec | FamilyBSpec) -> PhantomSample:
    phantom, prepared = prepare(spec)
    pitch_um, _, lateral_um = spec.spacing_um
    truth = true_positions_px(phantom.cones_um, phantom.shifts_um, prepared, pitch_um,
                              lateral_um)
    shape = prepared.enface["ISOS"].shape
    every = slice(None, None, LAYER_B_SCAN_STEP)
    true_surfaces = true_surfaces_px(phantom, prepared)
    labels = layer_model.labels_from_surfaces(true_surfaces, prepared.corrected.shape[1])
    return PhantomSample(spec=spec, image=cone_model.network_input(prepared.enface),
                         target=cone_target(shape, truth), truth_px=truth,
                         pixel_um=(pitch_um, lateral_um),
                         b_scans=layer_model.network_input(prepared.corrected[every]),
                         layer_labels=labels[every],
                         preprocessing_errors=preprocessing_errors(phantom, prepared,
                                                                   true_surfaces))


def true_surfaces_px(phantom: Phantom, prepared: Preprocessed) -> dict[str, np.ndarray]:
    """Where each true surface lies in the corrected volume.

    Correction moved B-scan b's content by the estimated (axial, lateral) shift, so a feature
    the scanner recorded at (z, x) now lies at (z - sz, x - sx).
    """
    a_lines = np.arange(prepared.corrected.shape[2], dtype=float)
    moved = {}
    for name, observed in phantom.surfaces_px.items():
        moved[name] = np.stack([
            np.interp(a_lines + sx, a_lines, observed[b]) - sz
            for b, (sz, sx) in enumerate(prepared.shifts_px)])
    return moved


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


def train(name: str, samples: list, *, iterations: int = 400, batch_size: int = 16,
          seed: int = 0, log: Callable[[str], None] = print, start=None):
    """Train network ``name`` ("cones" or "layers") deterministically; return it (on the CPU).
    ``start``: a network to go on from (fine-tuning) instead of a new one. A cone sample
    needs only ``image`` and ``target``; a layer sample ``b_scans`` and ``layer_labels``."""
    import torch
    from monai.losses import DiceCELoss

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(seed)
    if name == "cones":
        network, next_batch = start or cone_model.build_network(), _cone_batch
        loss_fn = DiceCELoss(sigmoid=True)
    else:
        network, next_batch = start or layer_model.build_network(), _layer_batch
        loss_fn = DiceCELoss(softmax=True, to_onehot_y=True)
    optimiser = torch.optim.Adam(network.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, iterations)
    network.train()
    for iteration in range(1, iterations + 1):
        images, targets = next_batch(samples, batch_size, rng)
        optimiser.zero_grad()
        loss = loss_fn(network(torch.from_numpy(images)), torch.from_numpy(targets))
        loss.backward()
        optimiser.step()
        schedule.step()
        if iteration % 100 == 0 or iteration == 1:
            log(f"{name}: iteration {iteration}/{iterations}: loss {loss.item():.4f}")
    return network.eval()


def _crop(shape: tuple[int, int], patch: tuple[int, int], rng: np.random.Generator):
    r = int(rng.integers(0, max(shape[0] - patch[0], 0) + 1))
    c = int(rng.integers(0, max(shape[1] - patch[1], 0) + 1))
    return slice(r, r + patch[0]), slice(c, c + patch[1])


def _layer_batch(samples: list[PhantomSample], size: int, rng: np.random.Generator):
    """B-scan patches; flipped left-right at random (B-scans have an up, so no rotations)."""
    images, targets = [], []
    for _ in range(size):
        sample = samples[rng.integers(len(samples))]
        b = int(rng.integers(len(sample.b_scans)))
        rows, columns = _crop(sample.layer_labels.shape[1:], layer_model.IO.patch_px, rng)
        image = sample.b_scans[b][:, rows, columns]
        target = sample.layer_labels[b][None, rows, columns]
        if rng.integers(2):
            image, target = image[:, :, ::-1], target[:, :, ::-1]
        images.append(np.ascontiguousarray(image))
        targets.append(np.ascontiguousarray(target))
    return np.stack(images).astype(np.float32), np.stack(targets).astype(np.float32)


def _cone_batch(samples: list[PhantomSample], size: int, rng: np.random.Generator):
    images, targets = [], []
    for _ in range(size):
        sample = samples[rng.integers(len(samples))]
        rows, columns = _crop(sample.target.shape, cone_model.IO.patch_px, rng)
        image = sample.image[:, rows, columns]
        target = sample.target[None, rows, columns]
        turns, flip = int(rng.integers(4)), bool(rng.integers(2))
        image, target = np.rot90(image, turns, (1, 2)), np.rot90(target, turns, (1, 2))
        if flip:
            image, target = image[:, :, ::-1], target[:, :, ::-1]
        images.append(np.ascontiguousarray(image))
        targets.append(np.ascontiguousarray(target))
    return np.stack(images).astype(np.float32), np.stack(targets).astype(np.float32)
