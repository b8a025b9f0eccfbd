"""The layer network: photoreceptor and RPE layers on each B-scan, and what surrounds it.

A small 2-D MONAI BasicUNet labels every pixel of a B-scan as background, inner segment
(ELM → IS/OS), outer segment (IS/OS → COST) or RPE (RPE → BM). Its labels become the layer SEG
that viewers overlay on the derived OPT; the classical surface detector (gpu/layers.py) stays
the sub-pixel measuring instrument, and where the two disagree the run says so
(``agreement_dice``), which is how a labeler finds the B-scans to look at.
"""

from __future__ import annotations

import numpy as np

from gpu.predictor import NetworkIO, Predictor

CLASSES = ("background", "inner_segment", "outer_segment", "rpe")
# Each labelled class lies between two surfaces: (top, bottom).
SPANS = {"inner_segment": ("ELM", "ISOS"), "outer_segment": ("ISOS", "COST"),
         "rpe": ("RPE", "BM")}
FEATURES = (16, 16, 32, 32, 64, 16)
DROPOUT = 0.1
# Depth x A-lines: tall enough to hold ELM to BM (~80 µm at 1 µm pixels) with context.
IO = NetworkIO(in_channels=1, out_channels=len(CLASSES), patch_px=(96, 64))
B_SCANS_PER_BATCH = 8


def build_network():
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=2, in_channels=IO.in_channels, out_channels=IO.out_channels,
                     features=FEATURES, dropout=DROPOUT)


def network_input(b_scans: np.ndarray) -> np.ndarray:
    """Normalised B-scans (n, depth, a_lines) → (n, 1, depth, a_lines), each standardised."""
    b_scans = b_scans.astype(np.float32)
    mean = b_scans.mean(axis=(1, 2), keepdims=True)
    spread = np.maximum(b_scans.std(axis=(1, 2), keepdims=True), 1e-6)
    return ((b_scans - mean) / spread)[:, None]


def labels_from_surfaces(surfaces_px: dict[str, np.ndarray], depth: int) -> np.ndarray:
    """Class index per voxel, (b_scans, depth, a_lines) uint8: a pixel belongs to a layer when
    its centre lies between the layer's top and bottom surfaces."""
    z = np.arange(depth, dtype=np.float32)[None, :, None]
    labels = np.zeros((surfaces_px["ELM"].shape[0], depth, surfaces_px["ELM"].shape[1]),
                      np.uint8)
    for index, name in enumerate(CLASSES[1:], start=1):
        top, bottom = SPANS[name]
        inside = (z >= surfaces_px[top][:, None, :]) & (z < surfaces_px[bottom][:, None, :])
        labels[inside] = index
    return labels


def segment(predictor: Predictor, volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels (b_scans, depth, a_lines) uint8 and each B-scan's mean confidence (the mean of
    the winning class probability; low where the network hesitates)."""
    labels = np.empty(volume.shape, np.uint8)
    confidence = np.empty(volume.shape[0], np.float32)
    for start in range(0, volume.shape[0], B_SCANS_PER_BATCH):
        stop = min(start + B_SCANS_PER_BATCH, volume.shape[0])
        probabilities = predictor.predict_batch(network_input(volume[start:stop]))
        labels[start:stop] = probabilities.argmax(axis=1)
        confidence[start:stop] = probabilities.max(axis=1).mean(axis=(1, 2))
    return labels, confidence


def dice(found: np.ndarray, truth: np.ndarray) -> dict[str, float | None]:
    """Dice overlap per layer class (None when neither labelling has the class)."""
    scores: dict[str, float | None] = {}
    for index, name in enumerate(CLASSES[1:], start=1):
        a, b = found == index, truth == index
        total = int(a.sum()) + int(b.sum())
        scores[name] = round(2 * int((a & b).sum()) / total, 4) if total else None
    return scores

