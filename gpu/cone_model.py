"""The cone network and what surrounds it: inputs, training targets, centroids.

A small 2-D MONAI BasicUNet looks at the two en-face images (IS/OS and COST) and gives, per
pixel, the probability of lying on a cone; one centroid per cone is then the local maxima of
that map. Dropout stays in the network so that Monte Carlo dropout can estimate uncertainty.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from gpu.predictor import NetworkIO

CHANNELS = ("ISOS", "COST")
FEATURES = (16, 16, 32, 32, 64, 16)
DROPOUT = 0.1
IO = NetworkIO(in_channels=len(CHANNELS), out_channels=1, patch_px=(64, 64))
TARGET_RADIUS_PX = 1.5
PEAK_THRESHOLD = 0.5


def build_network():
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=2, in_channels=IO.in_channels, out_channels=IO.out_channels,
                     features=FEATURES, dropout=DROPOUT)


def network_input(enface: dict[str, np.ndarray]) -> np.ndarray:
    """(channels, rows, columns) float32, each channel standardised on its own."""
    channels = []
    for name in CHANNELS:
        image = enface[name].astype(np.float32)
        channels.append((image - image.mean()) / max(float(image.std()), 1e-6))
    return np.stack(channels)


def cone_target(shape: tuple[int, int], positions_px: np.ndarray) -> np.ndarray:
    """Binary mask: a small disk at each (row, column) cone position."""
    rows, columns = np.mgrid[0:shape[0], 0:shape[1]]
    target = np.zeros(shape, np.float32)
    reach = int(np.ceil(TARGET_RADIUS_PX))
    for row, column in positions_px:
        r0, c0 = int(round(row)), int(round(column))
        r_lo, r_hi = max(r0 - reach, 0), min(r0 + reach + 1, shape[0])
        c_lo, c_hi = max(c0 - reach, 0), min(c0 + reach + 1, shape[1])
        if r_lo >= r_hi or c_lo >= c_hi:
            continue
        near = ((rows[r_lo:r_hi, c_lo:c_hi] - row) ** 2
                + (columns[r_lo:r_hi, c_lo:c_hi] - column) ** 2) <= TARGET_RADIUS_PX ** 2
        target[r_lo:r_hi, c_lo:c_hi][near] = 1.0
    return target


def centroids(probability: np.ndarray, threshold: float = PEAK_THRESHOLD) -> np.ndarray:
    """(n, 2) sub-pixel (row, column) of each cone: local maxima above ``threshold``."""
    return peaks(probability, threshold)[0]


def peaks(probability: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima of the (lightly smoothed) probability map above ``threshold``: their
    sub-pixel (row, column) and the smoothed probability at each."""
    smooth = ndimage.gaussian_filter(probability, 0.7)
    is_peak = (smooth == ndimage.maximum_filter(smooth, size=3)) & (smooth > threshold)
    rows, columns = np.nonzero(is_peak)
    if len(rows) == 0:
        return np.zeros((0, 2)), np.zeros(0)
    # Refine each peak by the probability-weighted mean of its 3x3 neighbourhood.
    padded = np.pad(smooth, 1)
    offsets = np.array([(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)])
    weights = np.stack([padded[rows + 1 + dr, columns + 1 + dc] for dr, dc in offsets], axis=1)
    weights /= weights.sum(axis=1, keepdims=True)
    centres = np.column_stack([rows + weights @ offsets[:, 0], columns + weights @ offsets[:, 1]])
    return centres, smooth[rows, columns]
