"""Sub-pixel refinement of a sampled peak."""

from __future__ import annotations

from types import ModuleType


def parabola_offset(left, centre, right, xp: ModuleType):
    """Offset (-0.5..0.5) of the vertex of the parabola through three samples around a peak;
    0 where the samples do not curve downwards."""
    curvature = left - 2 * centre + right
    safe = xp.where(curvature < 0, curvature, -1.0)
    offset = xp.where(curvature < 0, 0.5 * (left - right) / safe, 0.0)
    return xp.clip(offset, -0.5, 0.5)
