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


def test_tensorrt_fp16_matches_torch_fp32(tmp_path):
    tensorrt = pytest.importorskip("tensorrt")
    del tensorrt
    from appliance.models import load_network, model_record
    from gpu.cone_model import centroids
    from gpu.predictor import TensorRTPredictor, TorchPredictor
    from gpu.training import make_sample, phantom_spec

    record = model_record()
    sample = make_sample(phantom_spec(21))
    reference = TorchPredictor(load_network(record), device="cuda").predict(sample.image)
    engine = TensorRTPredictor(load_network(record), weights_sha256=record.weights_sha256,
                               cache_dir=tmp_path)
    fast = engine.predict(sample.image)
    assert np.abs(fast - reference).max() < 0.02
    assert len(centroids(fast)) == len(centroids(reference))
    assert engine.engine_path.exists()  # cached for the next run
