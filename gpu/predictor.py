"""Inference behind one interface: a probability map (and its uncertainty) for an image.

``TorchPredictor`` runs the network with PyTorch on the CPU or a CUDA device (fp32, or AMP on
CUDA). Sliding-window inference makes any image size work with the patch size the network was
trained on; Monte Carlo dropout gives per-pixel uncertainty.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

PATCH_PX = 64


class Predictor(Protocol):
    def predict(self, image: np.ndarray) -> np.ndarray:
        """(channels, rows, columns) → probability (rows, columns)."""

    def predict_with_uncertainty(self, image: np.ndarray,
                                 samples: int) -> tuple[np.ndarray, np.ndarray]:
        """→ (mean probability, standard deviation over dropout samples)."""


class TorchPredictor:
    def __init__(self, network, *, device: str = "cpu", amp: bool = False):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.amp = amp and self.device.type == "cuda"

    def _forward(self, image: np.ndarray, dropout: bool) -> np.ndarray:
        from monai.inferers import sliding_window_inference

        torch = self.torch
        self.network.train(dropout)  # dropout on: one Monte Carlo sample
        batch = torch.from_numpy(np.ascontiguousarray(image))[None].to(self.device)
        with torch.no_grad(), torch.autocast(self.device.type, enabled=self.amp):
            logits = sliding_window_inference(batch, (PATCH_PX, PATCH_PX), 8, self.network,
                                              overlap=0.25, mode="gaussian")
        self.network.eval()
        return torch.sigmoid(logits.float())[0, 0].cpu().numpy()

    def predict(self, image: np.ndarray) -> np.ndarray:
        return self._forward(image, dropout=False)

    def predict_with_uncertainty(self, image: np.ndarray,
                                 samples: int = 8) -> tuple[np.ndarray, np.ndarray]:
        draws = np.stack([self._forward(image, dropout=True) for _ in range(samples)])
        return draws.mean(axis=0), draws.std(axis=0)
