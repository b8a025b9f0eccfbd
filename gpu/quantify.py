"""Cone mosaic measurements from cone centres: density, nearest-neighbour distance, Voronoi
hexagonality; for the whole field and for a regular grid of regions.

Edge handling: cones near the field's edge have neighbours that were never imaged, so every
statistic is taken over the cones at least one mean spacing inside the field (their Voronoi
cells and nearest neighbours are then determined by imaged cones), and density is their count
over that inner area.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import KDTree, Voronoi


def to_um(points_px, pixel_um: tuple[float, float]) -> np.ndarray:
    """En-face (row, column) pixel positions as (x, y) micrometres, the order every
    measurement here takes; ``pixel_um`` is a pixel's (row, column) size: (B-scan pitch, A-line
    spacing). The one place a cone's pixels become micrometres."""
    points = np.asarray(points_px, float).reshape(-1, 2)
    return np.column_stack([points[:, 1] * pixel_um[1], points[:, 0] * pixel_um[0]])


def field_size_um(shape: tuple[int, int], pixel_um: tuple[float, float]) -> tuple[float, float]:
    """(width, height) in micrometres of an en-face image of ``shape`` (rows, columns)."""
    return shape[1] * pixel_um[1], shape[0] * pixel_um[0]


def cone_measurements(cones_px: np.ndarray, shape: tuple[int, int],
                      pixel_um: tuple[float, float],
                      grid: tuple[int, int]) -> tuple[dict, list[dict]]:
    """``mosaic_metrics`` of cones found on an en-face image, for the field and each region."""
    points_um, field_um = to_um(cones_px, pixel_um), field_size_um(shape, pixel_um)
    return mosaic_metrics(points_um, field_um), regional_metrics(points_um, field_um, grid)


def mosaic_metrics(points_um: np.ndarray, field_um: tuple[float, float]) -> dict:
    """``points_um`` is (n, 2) as (x, y); ``field_um`` is (width, height) from (0, 0)."""
    width, height = field_um
    if len(points_um) < 8:
        return {"cone_count": int(len(points_um)), "cone_density_per_mm2": None,
                "nnd_mean_um": None, "nnd_sd_um": None, "hexagonal_percent": None}
    nearest = KDTree(points_um).query(points_um, k=2)[0][:, 1]
    margin = float(np.median(nearest))
    inner = ((points_um[:, 0] >= margin) & (points_um[:, 0] <= width - margin)
             & (points_um[:, 1] >= margin) & (points_um[:, 1] <= height - margin))
    inner_area_mm2 = max(width - 2 * margin, 0) * max(height - 2 * margin, 0) / 1e6
    return {
        "cone_count": int(len(points_um)),
        "cone_density_per_mm2": round(float(inner.sum() / inner_area_mm2), 1)
        if inner_area_mm2 > 0 else None,
        "nnd_mean_um": round(float(nearest[inner].mean()), 3) if inner.any() else None,
        "nnd_sd_um": round(float(nearest[inner].std()), 3) if inner.any() else None,
        "hexagonal_percent": _hexagonal_percent(points_um, inner),
    }


def _hexagonal_percent(points_um: np.ndarray, inner: np.ndarray) -> float | None:
    """Percent of inner cones whose Voronoi cell has six sides (border cells excluded)."""
    if inner.sum() < 3:
        return None
    voronoi = Voronoi(points_um)
    sides = []
    for index in np.flatnonzero(inner):
        region = voronoi.regions[voronoi.point_region[index]]
        if not region or -1 in region:
            continue  # unbounded: a border cell after all
        sides.append(len(region))
    if not sides:
        return None
    return round(100.0 * float(np.mean(np.array(sides) == 6)), 2)


def grid_cells(shape: tuple[int, int], grid: tuple[int, int]):
    """(row, column, row slice, column slice) of each cell of a columns × rows grid over an
    image of ``shape``, row by row: the regions every regional measurement uses."""
    height, width = shape
    columns, rows = grid
    for row in range(rows):
        for column in range(columns):
            yield (row, column,
                   slice(row * height // rows, (row + 1) * height // rows),
                   slice(column * width // columns, (column + 1) * width // columns))


def regional_metrics(points_um: np.ndarray, field_um: tuple[float, float],
                     grid: tuple[int, int] = (2, 2)) -> list[dict]:
    """``mosaic_metrics`` for each cell of a columns × rows grid over the field."""
    width, height = field_um
    columns, rows = grid
    regions = []
    for row in range(rows):
        for column in range(columns):
            x0, y0 = column * width / columns, row * height / rows
            inside = ((points_um[:, 0] >= x0) & (points_um[:, 0] < x0 + width / columns)
                      & (points_um[:, 1] >= y0) & (points_um[:, 1] < y0 + height / rows))
            local = points_um[inside] - [x0, y0]
            regions.append({"row": row, "column": column, "origin_um": [x0, y0],
                            **mosaic_metrics(local, (width / columns, height / rows))})
    return regions


def match_detections(detected: np.ndarray, truth: np.ndarray, radius: float) -> dict:
    """One-to-one matching within ``radius``: true positives, precision, recall, F1."""
    detected_correct, _ = matched(detected, truth, radius)
    if len(detected) == 0 or len(truth) == 0:
        return {"true_positives": 0, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    hits = int(detected_correct.sum())
    precision, recall = hits / len(detected), hits / len(truth)
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return {"true_positives": hits, "precision": round(precision, 4),
            "recall": round(recall, 4), "f1": round(f1, 4)}


def matched(detected: np.ndarray, truth: np.ndarray,
            radius: float) -> tuple[np.ndarray, np.ndarray]:
    """The one-to-one matching within ``radius`` (least total distance): which detections
    found a true point, and which true points were found."""
    from scipy.optimize import linear_sum_assignment

    detected_correct = np.zeros(len(detected), bool)
    truth_found = np.zeros(len(truth), bool)
    if len(detected) == 0 or len(truth) == 0:
        return detected_correct, truth_found
    distance = np.sqrt(((detected[:, None, :] - truth[None, :, :]) ** 2).sum(-1))
    cost = np.where(distance <= radius, distance, 1e6)
    rows, cols = linear_sum_assignment(cost)
    hit = cost[rows, cols] <= radius
    detected_correct[rows[hit]] = True
    truth_found[cols[hit]] = True
    return detected_correct, truth_found
