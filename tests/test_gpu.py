"""GPU path (CuPy) against the CPU reference (NumPy). Runs where an NVIDIA GPU is usable.

Tolerances: shifts within 0.05 px, surfaces within 0.05 px (mean) and 0.5 px (worst A-line),
en-face images within 1e-3 relative (float32 arithmetic, FFT and filter implementations differ);
fp16 (TensorRT, or torch AMP) against torch fp32: cone probabilities within 0.02 and the same cone
count, layer labels differing on under 0.2 % of pixels. The whole run, GPU against CPU: cone count
and density within 1 %, hexagonality within 2 points, layer thickness means within 0.05 µm, the
motion within 0.01 µm RMS (the Monte Carlo dropout masks come from different generators).
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


def fp16_agrees_with_fp32(make_pair) -> None:
    """Both networks on one held-out phantom; ``make_pair(name, module)`` gives the torch fp32
    reference and the fp16 predictor under test."""
    from gpu import cone_model, layer_model
    from gpu.cone_model import centroids
    from gpu.training import make_sample, phantom_spec

    sample = make_sample(phantom_spec(21))
    full, half = make_pair("cones", cone_model)
    slow, fast = full.predict(sample.image), half.predict(sample.image)
    assert np.abs(fast - slow).max() < 0.02
    assert len(centroids(fast)) == len(centroids(slow))
    full, half = make_pair("layers", layer_model)
    slow = full.predict_batch(sample.b_scans).argmax(axis=1)
    fast = half.predict_batch(sample.b_scans).argmax(axis=1)
    assert (slow != fast).mean() < 0.002  # labels differ only at a few boundary pixels


def test_torch_amp_fp16_matches_fp32():
    from appliance.registry import load_network, model_record
    from gpu.predictor import TorchPredictor

    record = model_record()

    def make_pair(name, module):
        network = load_network(record, name)
        return (TorchPredictor(network, module.IO, device="cuda"),
                TorchPredictor(network, module.IO, device="cuda", amp=True))

    fp16_agrees_with_fp32(make_pair)


def test_the_whole_run_on_the_gpu_matches_the_cpu(tmp_path):
    from appliance.demo.study import write_phantom_study
    from appliance.pipeline import run_pipeline
    from appliance.registry import model_record
    from appliance.storage import ObjectStore

    write_phantom_study(tmp_path / "study", PhantomSpec(seed=3))
    paths = sorted((tmp_path / "study" / "dicom").glob("*.dcm"))
    record, store = model_record(), ObjectStore(tmp_path / "data")
    run = {"run_id": "gpu-test", "manifest": {"model": record.manifest_entry()}}
    cpu = run_pipeline(run, paths, store, record, use_gpu=False).to_json()
    gpu = run_pipeline(run, paths, store, record, use_gpu=True).to_json()
    assert (cpu["device"], gpu["device"]) == ("cpu", "gpu")
    for key in ("axial_rms_um", "lateral_rms_um"):
        assert abs(cpu["motion"][key] - gpu["motion"][key]) < 0.01, key
    for key in ("cone_count", "cone_density_per_mm2"):
        assert abs(cpu["cones"][key] / gpu["cones"][key] - 1) < 0.01, key
    assert abs(cpu["cones"]["hexagonal_percent"] - gpu["cones"]["hexagonal_percent"]) < 2
    for key in ("inner_segment_um", "outer_segment_length_um", "rpe_um"):
        assert abs(cpu["layers"][key] - gpu["layers"][key]) < 0.05, key


def test_tensorrt_fp16_matches_torch_fp32(tmp_path):
    tensorrt = pytest.importorskip("tensorrt")
    del tensorrt
    from appliance.registry import load_network, model_record
    from gpu.predictor import TensorRTPredictor, TorchPredictor

    record = model_record()

    def make_pair(name, module):
        network = load_network(record, name)
        reference = TorchPredictor(network, module.IO, device="cuda")
        engine = TensorRTPredictor(network, module.IO, name=name, cache_dir=tmp_path,
                                   weights_sha256=record.weights_sha256)
        assert engine.engine_path.exists()  # cached for the next run
        return reference, engine

    fp16_agrees_with_fp32(make_pair)
