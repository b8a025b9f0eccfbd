"""Inference behind one interface: probabilities (and their uncertainty) for images.

Both networks are 2-D: the cone network maps en-face images to one cone probability (sigmoid),
the layer network maps B-scans to class probabilities (softmax). ``NetworkIO`` says which, and
the patch size it was trained on; sliding-window inference makes any image size work with it.

``TorchPredictor`` runs PyTorch on the CPU or a CUDA device (fp32, or AMP on CUDA); Monte Carlo
dropout gives per-pixel uncertainty. ``TensorRTPredictor`` runs an fp16 engine built from the
ONNX export; dropout does not survive into an engine, so it uses test-time augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

WINDOW_BATCH = 16          # sliding windows per forward pass on the CPU
CUDA_WINDOW_BATCH = 256    # a GPU idles on 16 small windows: fewer, larger passes
MONTE_CARLO_SEED = 0        # dropout masks are drawn from this, so a run is reproducible


@dataclass(frozen=True)
class NetworkIO:
    """What a network takes and gives, and the patch it was trained on."""

    in_channels: int
    out_channels: int          # 1: a sigmoid probability map; more: softmax over classes
    patch_px: tuple[int, int]


class Predictor(Protocol):
    def predict(self, image: np.ndarray) -> np.ndarray:
        """(channels, rows, columns) → (rows, columns) for one output, else (classes, …)."""

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        """(n, channels, rows, columns) → (n, outputs, rows, columns) probabilities."""

    def predict_with_uncertainty(self, image: np.ndarray,
                                 samples: int) -> tuple[np.ndarray, np.ndarray]:
        """→ (mean probability, its standard deviation over samples)."""


def _activate(torch, logits):
    logits = logits.float()
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def _squeeze(probabilities: np.ndarray) -> np.ndarray:
    """One image's (outputs, rows, columns): a single output map loses its axis."""
    return probabilities[0] if probabilities.shape[0] == 1 else probabilities


class TorchPredictor:
    def __init__(self, network, io: NetworkIO, *, device: str = "cpu", amp: bool = False):
        import torch

        self.torch, self.io = torch, io
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.amp = amp and self.device.type == "cuda"
        self.window_batch = CUDA_WINDOW_BATCH if self.device.type == "cuda" else WINDOW_BATCH

    def _forward(self, images: np.ndarray, dropout: bool) -> np.ndarray:
        from monai.inferers import sliding_window_inference

        torch = self.torch
        self.network.train(dropout)  # dropout on: one Monte Carlo sample
        batch = torch.from_numpy(np.ascontiguousarray(images, np.float32)).to(self.device)
        with torch.no_grad(), torch.autocast(self.device.type, enabled=self.amp):
            logits = sliding_window_inference(batch, self.io.patch_px, self.window_batch,
                                              self.network, overlap=0.25, mode="gaussian")
        self.network.eval()
        return _activate(torch, logits).cpu().numpy()

    def predict(self, image: np.ndarray) -> np.ndarray:
        return _squeeze(self._forward(image[None], dropout=False)[0])

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        return self._forward(images, dropout=False)

    def predict_with_uncertainty(self, image: np.ndarray,
                                 samples: int = 8) -> tuple[np.ndarray, np.ndarray]:
        # Seeded draws (the caller's random state kept): one volume gives one result, run after
        # run, so a re-processed study reproduces the numbers already sent to PACS.
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with self.torch.random.fork_rng(devices=cuda):
            self.torch.manual_seed(MONTE_CARLO_SEED)
            draws = np.stack([_squeeze(self._forward(image[None], dropout=True)[0])
                              for _ in range(samples)])
        return draws.mean(axis=0), draws.std(axis=0)


INPUT_NAME, OUTPUT_NAME = "image", "logits"


def default_device(prefer_gpu: bool = True) -> str:
    import torch

    return "cuda" if prefer_gpu and torch.cuda.is_available() else "cpu"


def export_onnx(network, io: NetworkIO, path) -> None:
    """The network in inference mode as ONNX, batch size left free (TensorRT's input)."""
    import warnings

    import torch

    network = network.eval().cpu()
    example = torch.zeros(1, io.in_channels, *io.patch_px)
    with warnings.catch_warnings():
        # The tracer warns about MONAI's shape checks and instance norm; neither changes the
        # graph for a fixed patch size, and tests compare the export against PyTorch.
        warnings.simplefilter("ignore")
        torch.onnx.export(network, example, str(path), input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=17, dynamo=False,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})


def dihedral_average(predict_one, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Test-time augmentation: the 8 rotations/flips, mapped back; mean and spread."""
    draws = []
    for flip in (False, True):
        for turns in range(4):
            view = image[:, :, ::-1] if flip else image
            result = predict_one(np.ascontiguousarray(np.rot90(view, turns, (1, 2))))
            result = np.rot90(result, -turns)
            draws.append(result[:, ::-1] if flip else result)
    stack = np.stack(draws)
    return stack.mean(axis=0), stack.std(axis=0)


class TensorRTPredictor:
    """ONNX export → TensorRT engine (fp16 by default) on a CUDA GPU.

    Engines are cached in ``cache_dir`` per network, weights checksum, GPU model and TensorRT
    version, so a box builds each once. Dropout does not survive into an engine, so uncertainty
    comes from test-time augmentation instead of Monte Carlo dropout.
    """

    MAX_BATCH = CUDA_WINDOW_BATCH

    def __init__(self, network, io: NetworkIO, *, name: str, weights_sha256: str, cache_dir,
                 fp16: bool = True):
        import os
        from pathlib import Path

        import tensorrt as trt
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("TensorRT needs a CUDA GPU; use the torch predictor here")
        self.trt, self.torch, self.io = trt, torch, io
        gpu = "".join(c if c.isalnum() else "_" for c in torch.cuda.get_device_name())
        precision = "fp16" if fp16 else "fp32"
        self.engine_path = (Path(cache_dir) /
                            f"{name}-{weights_sha256[:16]}-{gpu}-trt{trt.__version__}-{precision}.engine")
        if not self.engine_path.exists():
            serialized = self._build(network, fp16)
            self.engine_path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.engine_path.with_suffix(".partial")
            partial.write_bytes(serialized)
            os.replace(partial, self.engine_path)
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(self.engine_path.read_bytes())
        self.context = self.engine.create_execution_context()

    def _build(self, network, fp16: bool) -> bytes:
        import tempfile
        from pathlib import Path

        trt = self.trt
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        graph = builder.create_network(0)
        parser = trt.OnnxParser(graph, logger)
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = Path(tmp) / "model.onnx"
            export_onnx(network, self.io, onnx_path)
            if not parser.parse(onnx_path.read_bytes()):
                errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
                raise RuntimeError(f"TensorRT could not parse the ONNX export: {errors}")
        config = builder.create_builder_config()
        if fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        shape = (self.io.in_channels, *self.io.patch_px)
        profile = builder.create_optimization_profile()
        profile.set_shape(INPUT_NAME, (1, *shape), (self.MAX_BATCH, *shape),
                          (self.MAX_BATCH, *shape))
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(graph, config)
        if serialized is None:
            raise RuntimeError("TensorRT could not build an engine; its log above says why")
        return bytes(serialized)

    def _logits(self, batch):
        torch = self.torch
        outputs = []
        for chunk in batch.split(self.MAX_BATCH):
            chunk = chunk.contiguous().float()
            out = torch.empty((chunk.shape[0], self.io.out_channels, *self.io.patch_px),
                              device=chunk.device)
            self.context.set_input_shape(INPUT_NAME, tuple(chunk.shape))
            self.context.set_tensor_address(INPUT_NAME, chunk.data_ptr())
            self.context.set_tensor_address(OUTPUT_NAME, out.data_ptr())
            if not self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
                raise RuntimeError("TensorRT inference failed")
            outputs.append(out)
        return torch.cat(outputs)

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        from monai.inferers import sliding_window_inference

        torch = self.torch
        batch = torch.from_numpy(np.ascontiguousarray(images, np.float32)).cuda()
        with torch.no_grad():
            logits = sliding_window_inference(batch, self.io.patch_px, self.MAX_BATCH,
                                              self._logits, overlap=0.25, mode="gaussian")
        return _activate(torch, logits).cpu().numpy()

    def predict(self, image: np.ndarray) -> np.ndarray:
        return _squeeze(self.predict_batch(image[None])[0])

    def predict_with_uncertainty(self, image: np.ndarray,
                                 samples: int = 8) -> tuple[np.ndarray, np.ndarray]:
        return dihedral_average(self.predict, image)
