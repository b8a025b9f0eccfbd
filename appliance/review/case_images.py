"""Pictures of a run for the case view: the en-face mosaic with its cones, any corrected B-scan
with the layer surfaces, and maps of cone density and outer-segment length; also the
adjudication page's mask comparison, and the one PNG encoder the appliance uses.

Drawn on the server as PNGs from the run's stored arrays (no plotting library, no script on the
page beyond a frame slider). Arrays of recently viewed runs stay in memory; the corrected volume
is read from the run's derived OPT, the one object that holds it.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from scipy import ndimage

from appliance.run_result import Arrays
from appliance.storage import ObjectStore

SURFACE_COLOURS = {"ELM": (80, 200, 255), "ISOS": (0, 255, 0), "COST": (255, 200, 0),
                   "RPE": (255, 60, 60)}
# Anchors of a perceptually ordered scale (viridis), low to high.
SCALE_ANCHORS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98],
                          [253, 231, 37]], float)
DENSITY_CELL_PX = 16


def png_bytes(pixels: np.ndarray, compress_level: int = 6) -> bytes:
    """An 8-bit grey (h, w) or RGB (h, w, 3) array as PNG file bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", compress_level=compress_level)
    return buffer.getvalue()


def to_8bit(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, (1, 99.5))
    return (np.clip((image - low) / max(high - low, 1e-6), 0, 1) * 255).astype(np.uint8)


def draw_surfaces(b_scan: np.ndarray, surfaces_px: dict[str, np.ndarray],
                  frame: int) -> np.ndarray:
    """An RGB copy of the grey ``b_scan`` with each surface of ``frame`` as a coloured line."""
    rgb = np.stack([to_8bit(b_scan)] * 3, axis=-1)
    columns = np.arange(rgb.shape[1])
    for name, colour in SURFACE_COLOURS.items():
        rows = np.clip(np.rint(surfaces_px[name][frame]).astype(int), 0, rgb.shape[0] - 1)
        rgb[rows, columns] = colour
    return rgb


def enface_with_cones(enface: np.ndarray, cones_px: np.ndarray, scale: int = 3) -> bytes:
    """The en-face image enlarged ``scale`` times, a red dot at every cone centre."""
    grey = np.kron(to_8bit(enface), np.ones((scale, scale), np.uint8))
    rgb = np.stack([grey] * 3, axis=-1)
    centres = np.rint((np.asarray(cones_px).reshape(-1, 2) + 0.5) * scale - 0.5).astype(int)
    for dr, dc in ((0, 0), (0, 1), (1, 0), (1, 1)):
        rows = np.clip(centres[:, 0] + dr - 1, 0, rgb.shape[0] - 1)
        cols = np.clip(centres[:, 1] + dc - 1, 0, rgb.shape[1] - 1)
        rgb[rows, cols] = (255, 40, 40)
    return png_bytes(rgb)


def heat_map(values: np.ndarray, low: float, high: float, scale: int = 3) -> bytes:
    """``values`` on the colour scale from ``low`` to ``high``; NaN cells grey."""
    position = np.clip((values - low) / max(high - low, 1e-9), 0, 1) * (len(SCALE_ANCHORS) - 1)
    position = np.nan_to_num(position)
    lower = np.floor(position).astype(int).clip(0, len(SCALE_ANCHORS) - 2)
    weight = (position - lower)[..., None]
    rgb = (SCALE_ANCHORS[lower] * (1 - weight) + SCALE_ANCHORS[lower + 1] * weight)
    rgb[np.isnan(values)] = 128
    return png_bytes(np.kron(rgb.astype(np.uint8), np.ones((scale, scale, 1), np.uint8)))


def cone_density_map(cones_px: np.ndarray, shape: tuple[int, int],
                     pixel_um: tuple[float, float],
                     cell_px: int = DENSITY_CELL_PX) -> np.ndarray:
    """Cones per mm² in square cells of ``cell_px`` en-face pixels, expanded back to ``shape``
    so that the map lies over the image; ``pixel_um`` is (B-scan pitch, A-line spacing)."""
    rows, columns = -(-shape[0] // cell_px), -(-shape[1] // cell_px)
    cells = np.clip(np.floor(np.asarray(cones_px).reshape(-1, 2) / cell_px).astype(int),
                    0, [rows - 1, columns - 1])
    counts = np.zeros((rows, columns))
    np.add.at(counts, (cells[:, 0], cells[:, 1]), 1)
    # Edge cells are partial: divide by the area each actually covers.
    heights = np.minimum(cell_px, shape[0] - np.arange(rows) * cell_px)
    widths = np.minimum(cell_px, shape[1] - np.arange(columns) * cell_px)
    area_mm2 = np.outer(heights * pixel_um[0], widths * pixel_um[1]) / 1e6
    density = counts / area_mm2
    return ndimage.zoom(density, cell_px, order=0)[: shape[0], : shape[1]]


def maps(arrays: RunArrays, pixel_um: tuple[float, float],
         ) -> dict[str, tuple[np.ndarray, float, float]]:
    """The cone density and outer-segment length maps, each with the ends of its colour scale
    (2nd and 98th percentile, so one outlier does not wash a map out); ``pixel_um`` is an
    en-face pixel's (row, column) size."""
    values = {"density": cone_density_map(arrays[Arrays.CONES_PX],
                                          arrays[Arrays.enface("ISOS")].shape, pixel_um),
              "thickness": arrays[Arrays.thickness("outer_segment_length_um")]}
    ranged = {}
    for name, map_values in values.items():
        low, high = (float(v) for v in np.nanpercentile(map_values, [2, 98]))
        ranged[name] = (map_values, low, max(high, low + 1e-6))
    return ranged


def comparison(enface: np.ndarray, first: np.ndarray, second: np.ndarray,
               scale: int = 8) -> bytes:
    """Two raters' masks on an en-face tile, three panels: the first rater's (green), the
    second's (blue), and where they differ (green = first only, blue = second only, white =
    both)."""
    grey = (np.repeat(enface[..., None], 3, axis=2) * 180).astype(np.uint8)
    green, blue, white = np.array([40, 220, 40]), np.array([60, 120, 255]), np.array([255] * 3)

    def overlay(*layers: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        panel = grey.copy()
        for mask, colour in layers:
            panel[mask] = (0.4 * panel[mask] + 0.6 * colour).astype(np.uint8)
        return panel

    gap = np.full((enface.shape[0], 2, 3), 255, np.uint8)
    panels = np.concatenate([
        overlay((first, green)), gap, overlay((second, blue)), gap,
        overlay((first & ~second, green), (second & ~first, blue), (first & second, white))],
        axis=1)
    return png_bytes(np.kron(panels, np.ones((scale, scale, 1), np.uint8)))


class RunArrays:
    """A run's preprocessed arrays, each read from its NPZ the first time it is asked for and
    kept: the tile editor, the case view and a review each read only the members they use (not
    a 512³ run's label volume). Content-addressed, so a kept array never goes stale."""

    def __init__(self, path: Path):
        self.path = path
        self._arrays: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._arrays:  # two threads may both read it once; same bytes
            with np.load(self.path) as npz:
                self._arrays[name] = npz[name]
        return self._arrays[name]


@functools.lru_cache(maxsize=16)
def run_arrays(store: ObjectStore, npz_sha256: str) -> RunArrays:
    """The arrays of recently viewed runs, shared by every page and API route."""
    return RunArrays(store.path_for(npz_sha256))


@functools.lru_cache(maxsize=2)
def corrected_volume(store: ObjectStore, derived_opt_sha256: str) -> np.ndarray:
    """(b_scans, depth, a_lines) from the run's derived OPT; two runs at most in memory."""
    pixels = pydicom.dcmread(store.path_for(derived_opt_sha256)).pixel_array
    return pixels if pixels.ndim == 3 else pixels[np.newaxis]
