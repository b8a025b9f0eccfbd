"""The QC snapshot stored with every run: a corrected B-scan beside the IS/OS en-face image."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

GAP_PX = 8


def _to_8bit(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, (1, 99.5))
    return (np.clip((image - low) / max(high - low, 1e-6), 0, 1) * 255).astype(np.uint8)


def snapshot_png(corrected: np.ndarray, surfaces_px: dict[str, np.ndarray],
                 enface_isos: np.ndarray) -> bytes:
    middle = corrected.shape[0] // 2
    b_scan = np.stack([_to_8bit(corrected[middle])] * 3, axis=-1)
    columns = np.arange(b_scan.shape[1])
    for name, colour in (("ELM", (80, 200, 255)), ("ISOS", (0, 255, 0)),
                         ("COST", (255, 200, 0)), ("RPE", (255, 60, 60))):
        rows = np.clip(np.rint(surfaces_px[name][middle]).astype(int), 0, b_scan.shape[0] - 1)
        b_scan[rows, columns] = colour
    enface = np.stack([_to_8bit(enface_isos)] * 3, axis=-1)
    height = max(b_scan.shape[0], enface.shape[0])
    canvas = np.zeros((height, b_scan.shape[1] + GAP_PX + enface.shape[1], 3), np.uint8)
    canvas[: b_scan.shape[0], : b_scan.shape[1]] = b_scan
    canvas[: enface.shape[0], b_scan.shape[1] + GAP_PX:] = enface
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, format="PNG")
    return buffer.getvalue()
