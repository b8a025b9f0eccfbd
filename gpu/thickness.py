"""Layer thickness between the outer-retina surfaces: maps, and their means over the field and
over the regions the cone measurements use.

The sub-pixel surfaces (``gpu.layers``) measure finer than counting labelled pixels could.
"""

from __future__ import annotations

import numpy as np

from gpu.quantify import grid_cells, to_um

# Each layer by its top and bottom surface.
THICKNESS_SPANS = {"inner_segment_um": ("ELM", "ISOS"),
                   "outer_segment_length_um": ("ISOS", "COST"), "rpe_um": ("RPE", "BM")}


def thickness_maps_um(surfaces_px: dict[str, np.ndarray], axial_um: float) -> dict:
    """Thickness of each layer between its surfaces, (b_scans, a_lines) in micrometres."""
    return {name: (surfaces_px[bottom] - surfaces_px[top]) * axial_um
            for name, (top, bottom) in THICKNESS_SPANS.items()}


def layer_measurements(thickness: dict[str, np.ndarray], grid: tuple[int, int],
                       pixel_um: tuple[float, float]) -> dict:
    """Mean of each thickness map over the whole field and over a grid (columns x rows) of
    regions; ``pixel_um`` is an en-face pixel's (row, column) size."""
    shape = next(iter(thickness.values())).shape
    regions = []
    for row, column, b, a in grid_cells(shape, grid):
        origin_um = [float(v) for v in to_um([(b.start, a.start)], pixel_um)[0]]
        regions.append({"row": row, "column": column, "origin_um": origin_um,
                        **{name: round(float(m[b, a].mean()), 3)
                           for name, m in thickness.items()}})
    return {**{name: round(float(m.mean()), 3) for name, m in thickness.items()},
            "regions": regions}
