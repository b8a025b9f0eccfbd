"""Preprocessing of one AO-OCT volume, written once for NumPy or CuPy (``xp``).

normalise → axial motion (layer profiles) → surfaces → lateral motion (cone-band rows) →
surfaces again on the corrected volume → en-face projections at IS/OS and COST.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np

from gpu.enface import project
from gpu.layers import detect_surfaces, normalise
from gpu.motion import estimate_shifts, shift_b_scans
from gpu.xp import ndimage_for, to_numpy

AXIAL_MAX_LAG = 3          # layers persist over many B-scans
LATERAL_MAX_LAG = 1        # cones do not (they decorrelate within ~2 µm)
MAX_SHIFT_UM = 16.0
CONE_BAND_OFFSETS_PX = (-1.0, 0.0, 1.0)


@dataclass
class Preprocessed:
    corrected: np.ndarray                 # normalised, motion-corrected volume (float32)
    shifts_px: np.ndarray                 # (b_scans, 2): axial, lateral content displacement
    surfaces_px: dict[str, np.ndarray]    # depth of each surface in the corrected volume
    enface: dict[str, np.ndarray]         # "ISOS", "COST": (b_scans, a_lines)
    band_contrast: float
    seconds: dict[str, float] = field(default_factory=dict)


def preprocess(voxels: np.ndarray, spacing_mm: tuple[float, float, float],
               xp: ModuleType = np) -> Preprocessed:
    """``voxels`` is (b_scans, depth, a_lines); ``spacing_mm`` is (B-scan pitch, axial, lateral)."""
    ndimage = ndimage_for(xp)
    axial_um, lateral_um = spacing_mm[1] * 1000, spacing_mm[2] * 1000
    seconds: dict[str, float] = {}
    clock = _Clock(xp, seconds)

    volume = normalise(xp.asarray(voxels), xp)
    clock.lap("normalise")

    axial = estimate_shifts([volume.mean(axis=2)], xp, max_lag=AXIAL_MAX_LAG,
                            max_shift=int(MAX_SHIFT_UM / axial_um))
    volume = shift_b_scans(volume, axial, 1, xp, ndimage)
    clock.lap("axial_motion")

    surfaces = detect_surfaces(volume, axial_um, lateral_um, xp, ndimage)
    clock.lap("surfaces")

    rows = [project(volume, surfaces.depth_px[name] + offset, xp, ndimage, offsets=(0.0,))
            for name in ("ISOS", "COST") for offset in CONE_BAND_OFFSETS_PX]
    lateral = estimate_shifts(rows, xp, max_lag=LATERAL_MAX_LAG,
                              max_shift=int(MAX_SHIFT_UM / lateral_um))
    volume = shift_b_scans(volume, lateral, 2, xp, ndimage)
    clock.lap("lateral_motion")

    surfaces = detect_surfaces(volume, axial_um, lateral_um, xp, ndimage)
    clock.lap("surfaces_corrected")

    enface = {name: to_numpy(project(volume, surfaces.depth_px[name], xp, ndimage))
              for name in ("ISOS", "COST")}
    clock.lap("enface")
    return Preprocessed(
        corrected=to_numpy(volume), shifts_px=np.column_stack([axial, lateral]),
        surfaces_px={k: to_numpy(v) for k, v in surfaces.depth_px.items()}, enface=enface,
        band_contrast=surfaces.band_contrast, seconds=seconds)


class _Clock:
    """Stage timings; on a GPU, synchronise first so each stage is charged its own work."""

    def __init__(self, xp: ModuleType, seconds: dict[str, float]):
        self.xp, self.seconds = xp, seconds
        self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        if self.xp is not np:
            self.xp.cuda.Device().synchronize()
        now = time.perf_counter()
        self.seconds[stage] = now - self.last
        self.last = now
