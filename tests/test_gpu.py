"""GPU path (CuPy) against the CPU reference (NumPy). Runs where an NVIDIA GPU is usable.

Tolerances: shifts within 0.05 px, surfaces within 0.05 px (mean) and 0.5 px (worst A-line),
en-face images within 1e-3 relative (float32 arithmetic, FFT and filter implementations differ).
"""

from __future__ import annotations

import numpy as np
import pytest

from gpu.phantom import PhantomSpec, make_phantom
from gpu.preprocess import preprocess
from gpu.xp import cupy_or_none

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(cupy_or_none() is None, reason="no usable NVIDIA GPU (CuPy)")]


@pytest.mark.parametrize("seed", [4, 5])
def test_cupy_preprocessing_matches_numpy(seed):
    cupy = cupy_or_none()
    phantom = make_phantom(PhantomSpec(seed=seed))
    cpu = preprocess(phantom.voxels, (0.001, 0.001, 0.001), np)
    gpu = preprocess(phantom.voxels, (0.001, 0.001, 0.001), cupy)
    assert np.abs(cpu.shifts_px - gpu.shifts_px).max() < 0.05
    for name, depth in cpu.surfaces_px.items():
        difference = np.abs(depth - gpu.surfaces_px[name])
        assert difference.mean() < 0.05 and difference.max() < 0.5, name
    for name, image in cpu.enface.items():
        relative = np.abs(image - gpu.enface[name]).max() / np.abs(image).max()
        assert relative < 1e-3, name
