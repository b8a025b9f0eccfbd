"""Pipeline benchmark: preprocessing stage timings and peak memory on the CPU for three volume
sizes, then the two networks (layers on every B-scan, cones with Monte Carlo dropout); on a
machine with a GPU, CuPy against NumPy stage by stage, torch AMP and TensorRT fp16 against torch
fp32, and the whole run from DICOM files on the GPU against the CPU.

Usage: python bench/preprocess.py [--sizes 64x160x160,96x200x200] [--gpu-size 512x512x512]
                                  [--whole-run-size 256x512x512]
Each CPU size runs in its own process, which only loads the volume and preprocesses it, so its
peak RSS is preprocessing's own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gpu.phantom import PhantomSpec, make_phantom
from gpu.preprocess import preprocess
from gpu.xp import cupy_or_none

SPACING = (0.001, 0.001, 0.001)


def parse(size: str) -> tuple[int, int, int]:
    b, z, x = (int(n) for n in size.split("x"))
    return b, z, x


def one_cpu_size(path: str) -> dict:
    """Child process: load a volume, preprocess it, report time and peak RSS above the start."""
    voxels = np.load(path)
    baseline = _status_kb("VmRSS")
    start = time.perf_counter()
    result = preprocess(voxels, SPACING, np)
    total = time.perf_counter() - start
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child would report its
    # parent's peak (the phantom generation) instead of its own.
    peak = _status_kb("VmHWM")
    return {"volume_mb": voxels.nbytes / 1e6, "seconds": total, "stages": result.seconds,
            "peak_above_start_mb": max(peak - baseline, 0) / 1e3,
            "networks": network_seconds(result, "cpu")}


def network_seconds(result, device: str) -> dict:
    """The pipeline's two network steps on a preprocessed volume, timed (after the peak was
    read: importing torch alone outweighs preprocessing's memory)."""
    from appliance.registry import load_network, model_record
    from gpu import cone_model, layer_model
    from gpu.predictor import TorchPredictor

    record = model_record()
    layers = TorchPredictor(load_network(record, "layers"), layer_model.IO, device=device)
    cones = TorchPredictor(load_network(record, "cones"), cone_model.IO, device=device)
    start = time.perf_counter()
    layer_model.segment(layers, result.corrected)
    middle = time.perf_counter()
    cones.predict_with_uncertainty(cone_model.network_input(result.enface), samples=6)
    return {"layers": middle - start, "cones_mc6": time.perf_counter() - middle}


def forward_comparison(size: str, prepared) -> None:
    """Forward passes of both networks on CUDA: torch fp32 against torch AMP (fp16) and, where
    the [gpu] extra is installed, a TensorRT fp16 engine."""
    import torch

    from appliance.registry import load_network, model_record
    from gpu import cone_model, layer_model
    from gpu.predictor import TensorRTPredictor, TorchPredictor

    inputs = {"layers": layer_model.network_input(prepared.corrected[:32]),
              "cones": cone_model.network_input(prepared.enface)[None]}
    record = model_record()
    try:
        import tensorrt  # noqa: F401
        with_tensorrt = True
    except ImportError:
        with_tensorrt = False
        print("\nTensorRT is not installed (the [gpu] extra): its engines are not timed")
    print(f"\nForward passes on CUDA against torch fp32 on {size} (layers: 32 B-scans; "
          "cones: the en-face pair), seconds and max |probability difference|:")
    with tempfile.TemporaryDirectory() as cache:
        for name, module in (("layers", layer_model), ("cones", cone_model)):
            network = load_network(record, name)
            engines = {"torch fp32": TorchPredictor(network, module.IO, device="cuda"),
                       "torch amp fp16": TorchPredictor(network, module.IO, device="cuda",
                                                        amp=True)}
            if with_tensorrt:
                engines["tensorrt fp16"] = TensorRTPredictor(
                    network, module.IO, name=name, weights_sha256=record.weights_sha256,
                    cache_dir=cache)
            seconds, outputs = {}, {}
            for label, predictor in engines.items():
                predictor.predict_batch(inputs[name])  # warm-up
                torch.cuda.synchronize()
                start = time.perf_counter()
                outputs[label] = predictor.predict_batch(inputs[name])
                torch.cuda.synchronize()
                seconds[label] = time.perf_counter() - start
            reference = seconds["torch fp32"]
            print(f"{name:<8} torch fp32 {reference:.4f}" + "".join(
                f"  {label} {seconds[label]:.4f} (speed-up {reference / seconds[label]:.1f}, "
                f"difference {np.abs(outputs[label] - outputs['torch fp32']).max():.4f})"
                for label in engines if label != "torch fp32"))


def whole_runs(size: str) -> None:
    """The pipeline from stored DICOM files to the run's result, GPU and CPU side by side."""
    from appliance.demo.study import write_phantom_study
    from appliance.pipeline import run_pipeline
    from appliance.registry import model_record
    from appliance.storage import ObjectStore

    b, z, x = parse(size)
    record = model_record()
    run = {"run_id": "bench", "manifest": {"model": record.manifest_entry()}}
    with tempfile.TemporaryDirectory() as tmp:
        study = Path(tmp) / "study"
        write_phantom_study(study, PhantomSpec(seed=2, b_scans=b, depth=z, a_lines=x))
        paths = sorted((study / "dicom").glob("*.dcm"))
        store = ObjectStore(Path(tmp) / "data")
        results, wall = {}, {}
        # The first GPU run pays for the CUDA context, cuDNN and FFT plans: timed on its own.
        for label, use_gpu in (("gpu cold", True), ("gpu", True), ("cpu", False)):
            start = time.perf_counter()
            results[label] = run_pipeline(run, paths, store, record, use_gpu=use_gpu).to_json()
            wall[label] = time.perf_counter() - start
    print(f"\nWhole run (DICOM files → result) on {size}, seconds:")
    stages = list(results["cpu"]["stage_seconds"])
    print(f"{'stage':<28}{'cpu':>9}{'gpu':>9}{'speed-up':>10}")
    for stage in stages:
        cpu, gpu = results["cpu"]["stage_seconds"][stage], results["gpu"]["stage_seconds"][stage]
        print(f"{stage:<28}{cpu:>9.3f}{gpu:>9.3f}{cpu / max(gpu, 1e-3):>10.1f}")
    print(f"{'wall (gpu cold ' + format(wall['gpu cold'], '.1f') + ' s)':<28}"
          f"{wall['cpu']:>9.3f}{wall['gpu']:>9.3f}{wall['cpu'] / wall['gpu']:>10.1f}")
    cpu, gpu = results["cpu"], results["gpu"]
    print(f"agreement: cones {cpu['cones']['cone_count']} vs {gpu['cones']['cone_count']}, "
          f"density {cpu['cones']['cone_density_per_mm2']} vs "
          f"{gpu['cones']['cone_density_per_mm2']} /mm², outer segment "
          f"{cpu['layers']['outer_segment_length_um']} vs "
          f"{gpu['layers']['outer_segment_length_um']} µm")


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def gpu_versus_cpu(size: str):
    """CuPy against NumPy stage by stage; returns the NumPy result for the network bench."""
    cupy = cupy_or_none()
    b, z, x = parse(size)
    voxels = make_phantom(PhantomSpec(seed=2, b_scans=b, depth=z, a_lines=x)).voxels
    preprocess(voxels[: min(b, 32)], SPACING, cupy)  # warm-up: CUDA context, FFT plans
    cpu = preprocess(voxels, SPACING, np)
    gpu = preprocess(voxels, SPACING, cupy)
    print(f"\nCuPy vs NumPy on {size} ({voxels.nbytes / 1e6:.0f} MB), seconds per stage:")
    print(f"{'stage':<20}{'numpy':>10}{'cupy':>10}{'speed-up':>10}")
    for stage, seconds in cpu.seconds.items():
        print(f"{stage:<20}{seconds:>10.3f}{gpu.seconds[stage]:>10.3f}"
              f"{seconds / max(gpu.seconds[stage], 1e-9):>10.1f}")
    total_cpu, total_gpu = sum(cpu.seconds.values()), sum(gpu.seconds.values())
    print(f"{'whole':<20}{total_cpu:>10.3f}{total_gpu:>10.3f}{total_cpu / total_gpu:>10.1f}")
    shift_difference = np.abs(cpu.shifts_px - gpu.shifts_px).max()
    surface_difference = np.mean([np.abs(cpu.surfaces_px[k] - gpu.surfaces_px[k]).mean()
                                  for k in cpu.surfaces_px])
    print(f"agreement: max |shift| difference {shift_difference:.4f} px; "
          f"mean |surface| difference {surface_difference:.4f} px")
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="64x160x160,96x200x200,128x256x256")
    parser.add_argument("--gpu-size", default="128x256x256")
    parser.add_argument("--whole-run-size", help="the DICOM-to-result run (default: --gpu-size)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_cpu_size(args.child)))
        return
    print("CPU preprocessing (NumPy), one process per size:")
    print(f"{'size':<16}{'MB':>8}{'seconds':>9}{'s per MB':>10}{'peak MB':>9}{'x volume':>9}"
          f"{'layers s':>10}{'cones s':>9}  preprocessing stages")
    for size in filter(None, args.sizes.split(",")):
        b, z, x = parse(size)
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "volume.npy")
            np.save(path, make_phantom(PhantomSpec(seed=1, b_scans=b, depth=z, a_lines=x)).voxels)
            out = subprocess.run([sys.executable, __file__, "--child", path],
                                 capture_output=True, text=True, check=True).stdout
        r = json.loads(out)
        stages = " ".join(f"{k}={v:.2f}" for k, v in r["stages"].items())
        print(f"{size:<16}{r['volume_mb']:>8.1f}{r['seconds']:>9.2f}"
              f"{r['seconds'] / r['volume_mb']:>10.3f}{r['peak_above_start_mb']:>9.0f}"
              f"{r['peak_above_start_mb'] / r['volume_mb']:>9.1f}"
              f"{r['networks']['layers']:>10.2f}{r['networks']['cones_mc6']:>9.2f}  {stages}")
    print("(layers: every B-scan; cones: 6 Monte Carlo dropout passes, the pipeline default)")
    if cupy_or_none() is None:
        print("\nno usable NVIDIA GPU: the GPU comparisons are skipped (the CPU path ran)")
        return
    prepared = gpu_versus_cpu(args.gpu_size)
    forward_comparison(args.gpu_size, prepared)
    whole_runs(args.whole_run_size or args.gpu_size)


if __name__ == "__main__":
    main()
