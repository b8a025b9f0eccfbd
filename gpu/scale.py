"""Scale-aware cone detection: the detector looks again at its own scale when the spectrum
holds a mosaic coarser than what it counted.

A detector learns cones of the sizes it was trained on. Where cones are much larger in pixels
(far from the fovea, or at a fine pixel pitch), the rods and the grains of speckle between
them can be of that size, and it counts them too: two or three times the cones there are. The
en-face spectrum gives the mosaic's spacing without the model (gpu.spectrum), so the image can
be resampled until a cone spans ``CANONICAL_PX_PER_CONE`` pixels on each axis, the detector run
there, and its maps brought back onto the image's own pixel grid (so centres, tiles and the SEG
need no second geometry).

Which ring: where rods lie between large cones, the spectrum holds the rods' ring beside the
cones', often the larger of the two. So every ring of the spectrum with ``MIN_PROMINENCE``
counts as a candidate spacing, and a candidate is believed only when the detector, run at that
candidate's canonical scale, counts the density the candidate implies (within the run's
tolerance): a scale the image and the detector agree on. Of those, the coarsest wins (a rod
ring read as cones would count the rods again). The detector's own answer stands when no
candidate is coarser than it by more than the tolerance, when the cones are already at about
the canonical size (only shrinking: enlarging invents detail the detector then finds), or when
no candidate is confirmed.

Why only then, not on every run: on 40 unseen phantoms of both families (seeds 1-20)
resampling every image to 7 pixels per cone changed F1 by -0.06 … +0.04 where the detector was
right, and far worse wherever the spectrum's largest ring was wrong. With the rule above, the
same 40 phantoms change on one run (F1 0.855 → 0.843); family B at 6-12° and 0.5 µm pixels,
where the bootstrap model counted +60 … +221 % too many, goes from F1 0.48-0.71 to 0.84-0.92.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from gpu.cone_model import centroids
from gpu.predictor import Predictor
from gpu.quantify import field_size_um, mosaic_metrics, to_um
from gpu.spectrum import (
    DENSITY_TOLERANCE,
    ring_candidates,
    ring_cone_spacing_um,
    ring_density_per_mm2,
)

# Cone spacing in pixels the detector is run at: the bootstrap model's training phantoms hold
# 3-19 pixels per cone (median 8); of 6, 7 and 8, 7 lost least on phantoms it was right on.
CANONICAL_PX_PER_CONE = 7.0
SMALLEST_SHRINK = 0.95       # zoom factors above this on both axes: not worth a second pass
SMALLEST_IMAGE_PX = 16       # a resampled image is never made smaller than this on an axis
MIN_PROMINENCE = 0.15        # of a candidate ring (gpu.spectrum's own ring needs 0.3)


@dataclass(frozen=True)
class ScaleChoice:
    """At which scale the run's cones were detected, and why. ``zoom`` is (rows, columns) of
    the image the detector saw relative to the en-face image (1, 1: the image itself)."""
    rescaled: bool
    zoom: tuple[float, float] = (1.0, 1.0)
    reason: str = "no ring of the spectrum is coarser than the detector's count"
    cone_spacing_um: float | None = None    # the candidate the detector confirmed
    candidates: tuple[tuple[float, float], ...] = ()   # (cone spacing µm, density ratio) tried

    def as_dict(self) -> dict:
        return {key: _rounded(value) for key, value in asdict(self).items()}


def _rounded(value):
    if isinstance(value, float):
        return round(value, 3)
    return [_rounded(v) for v in value] if isinstance(value, tuple | list) else value


def canonical_zoom(cone_spacing_um: float, pixel_um: tuple[float, float]) -> tuple[float, float]:
    """Zoom (rows, columns) that makes a cone span ``CANONICAL_PX_PER_CONE`` pixels on each
    axis, never above 1."""
    return tuple(min(1.0, CANONICAL_PX_PER_CONE * pitch / cone_spacing_um)
                 for pitch in pixel_um)


def resample(image: np.ndarray, zoom: tuple[float, float]) -> np.ndarray:
    """(channels, rows, columns) resampled by ``zoom`` per axis (pixel centres aligned, each
    channel low-passed first so that shrinking does not alias speckle into cone-sized
    blobs)."""
    shape = tuple(max(int(round(n * z)), SMALLEST_IMAGE_PX)
                  for n, z in zip(image.shape[1:], zoom, strict=True))
    sigma = [max(0.0, (1 / z - 1) / 2) for z in zoom]
    grid = _grid(shape, [1 / z for z in zoom])
    return np.stack([ndimage.map_coordinates(ndimage.gaussian_filter(channel, sigma), grid,
                                             order=1, mode="nearest")
                     for channel in image]).astype(np.float32)


def restore(resampled: np.ndarray, shape: tuple[int, int],
            zoom: tuple[float, float]) -> np.ndarray:
    """A (rows, columns) map of a resampled image back onto the image's own ``shape``."""
    return ndimage.map_coordinates(resampled, _grid(shape, zoom), order=1,
                                   mode="nearest").astype(np.float32)


def _grid(shape: tuple[int, int], step: list[float] | tuple[float, float]) -> np.ndarray:
    """Source coordinates of each output pixel centre, ``step`` source pixels apart."""
    rows = (np.arange(shape[0]) + 0.5) * step[0] - 0.5
    columns = (np.arange(shape[1]) + 0.5) * step[1] - 0.5
    return np.stack(np.meshgrid(rows, columns, indexing="ij"))


def detect(predictor: Predictor, image: np.ndarray, pixel_um: tuple[float, float],
           uncertainty_samples: int = 0
           ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, ScaleChoice]:
    """Cone probability, its uncertainty (None for ``uncertainty_samples`` 0), centres (row,
    column) and the scale they came from, on the pixel grid of the network input ``image``
    (channels, rows, columns) sampled at ``pixel_um`` (B-scan pitch, A-line spacing)."""
    shape = image.shape[1:]
    probability, uncertainty = _maps(predictor, image, uncertainty_samples)
    centres = centroids(probability)
    density = _density(centres, shape, pixel_um)
    coarser = [ring for ring, _ in ring_candidates(list(image), pixel_um, MIN_PROMINENCE)
               if density and density / ring_density_per_mm2(ring) > 1 + DENSITY_TOLERANCE]
    tried, shrinks = [], False
    for ring in sorted(coarser):            # coarsest first
        spacing_um = ring_cone_spacing_um(ring)
        zoom = canonical_zoom(spacing_um, pixel_um)
        if min(zoom) > SMALLEST_SHRINK:
            continue
        shrinks = True
        probe = restore(predictor.predict(resample(image, zoom)), shape, zoom)
        ratio = (_density(centroids(probe), shape, pixel_um) or 0) / ring_density_per_mm2(ring)
        tried.append((round(spacing_um, 2), round(ratio, 3)))
        if 1 / (1 + DENSITY_TOLERANCE) <= ratio <= 1 + DENSITY_TOLERANCE:
            probability, uncertainty = (
                None if m is None else restore(m, shape, zoom)
                for m in _maps(predictor, resample(image, zoom), uncertainty_samples))
            return probability, uncertainty, centroids(probability), ScaleChoice(
                True, zoom, f"the spectrum holds a mosaic {spacing_um:.1f} µm apart, sparser "
                            "than the detector counted at the image's own scale, and the "
                            "detector confirms it there",
                spacing_um, tuple(tried))
    if not coarser:
        return probability, uncertainty, centres, ScaleChoice(False)
    reason = ("the detector did not confirm any coarser ring of the spectrum at its own scale"
              if shrinks else "the spectrum's coarser rings put cones at about the "
                              "detector's own scale already")
    return probability, uncertainty, centres, ScaleChoice(False, reason=reason,
                                                          candidates=tuple(tried))


def _maps(predictor: Predictor, image: np.ndarray, samples: int):
    if samples <= 0:
        return predictor.predict(image), None
    return predictor.predict_with_uncertainty(image, samples=samples)


def _density(centres: np.ndarray, shape: tuple[int, int],
             pixel_um: tuple[float, float]) -> float | None:
    """Density as the run measures it (gpu.quantify), of (row, column) centres."""
    return mosaic_metrics(to_um(centres, pixel_um),
                          field_size_um(shape, pixel_um))["cone_density_per_mm2"]
