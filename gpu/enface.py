"""En-face projections that follow a surface (not flat slabs): one value per (B-scan, A-line)."""

from __future__ import annotations

from types import ModuleType


def project(volume, depth_px, xp: ModuleType, ndimage: ModuleType, offsets=(-1.0, 0.0, 1.0)):
    """Mean of the volume sampled at ``depth_px + offset`` for each offset (linear interp.)."""
    b_scans, _, a_lines = volume.shape
    b = xp.arange(b_scans, dtype=xp.float32)[:, None]
    x = xp.arange(a_lines, dtype=xp.float32)[None, :]
    depth = xp.asarray(depth_px, dtype=xp.float32)
    total = 0
    for offset in offsets:
        coords = xp.stack(xp.broadcast_arrays(b, depth + offset, x))
        total = total + ndimage.map_coordinates(volume, coords, order=1, mode="nearest")
    return total / len(offsets)
