"""The QC snapshot stored with every run: a corrected B-scan beside the IS/OS en-face image."""

from __future__ import annotations

import numpy as np

from appliance.review.case_images import draw_surfaces, png_bytes, to_8bit

GAP_PX = 8


def snapshot_png(corrected: np.ndarray, surfaces_px: dict[str, np.ndarray],
                 enface_isos: np.ndarray) -> bytes:
    middle = corrected.shape[0] // 2
    b_scan = draw_surfaces(corrected[middle], surfaces_px, middle)
    enface = np.stack([to_8bit(enface_isos)] * 3, axis=-1)
    height = max(b_scan.shape[0], enface.shape[0])
    canvas = np.zeros((height, b_scan.shape[1] + GAP_PX + enface.shape[1], 3), np.uint8)
    canvas[: b_scan.shape[0], : b_scan.shape[1]] = b_scan
    canvas[: enface.shape[0], b_scan.shape[1] + GAP_PX:] = enface
    return png_bytes(canvas)
