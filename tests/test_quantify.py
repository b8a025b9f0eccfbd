"""Cone mosaic measurements on mosaics whose answers are known."""

from __future__ import annotations

import numpy as np

from gpu.quantify import match_detections, mosaic_metrics, regional_metrics


def hexagonal_lattice(spacing: float, size: float) -> np.ndarray:
    rows = int(size / (spacing * np.sqrt(3) / 2)) + 2
    columns = int(size / spacing) + 2
    j, i = np.mgrid[0:rows, 0:columns]
    points = np.column_stack([((i + 0.5 * (j % 2)) * spacing).ravel(),
                              (j * spacing * np.sqrt(3) / 2).ravel()])
    return points[(points[:, 0] < size) & (points[:, 1] < size)]


def test_a_perfect_hexagonal_mosaic():
    spacing = 7.0
    metrics = mosaic_metrics(hexagonal_lattice(spacing, 200.0), (200.0, 200.0))
    expected_density = 2 / (np.sqrt(3) * (spacing / 1000) ** 2)
    assert abs(metrics["cone_density_per_mm2"] - expected_density) / expected_density < 0.03
    assert abs(metrics["nnd_mean_um"] - spacing) < 1e-6
    assert metrics["nnd_sd_um"] < 1e-6
    assert metrics["hexagonal_percent"] == 100.0


def test_a_random_mosaic_is_far_from_hexagonal():
    points = np.random.default_rng(0).uniform(0, 200, (800, 2))
    metrics = mosaic_metrics(points, (200.0, 200.0))
    assert 20 < metrics["hexagonal_percent"] < 40  # Poisson-Voronoi: about 29 %
    assert abs(metrics["cone_density_per_mm2"] - 800 / 0.04) / 20000 < 0.1


def test_regions_tile_the_field():
    regions = regional_metrics(hexagonal_lattice(7.0, 200.0), (200.0, 200.0), grid=(2, 2))
    assert len(regions) == 4
    assert all(r["hexagonal_percent"] == 100.0 for r in regions)
    assert sum(r["cone_count"] for r in regions) == len(hexagonal_lattice(7.0, 200.0))


def test_matching_counts_hits_misses_and_false_alarms():
    truth = hexagonal_lattice(7.0, 100.0)
    detected = np.vstack([truth[:-5] + 0.8, [[500.0, 500.0], [600.0, 600.0]]])
    result = match_detections(detected, truth, radius=0.75 * 7.0)
    assert result["true_positives"] == len(truth) - 5
    assert result["recall"] < 1 and result["precision"] < 1 and 0.9 < result["f1"] < 1
