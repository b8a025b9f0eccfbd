"""Intensity normalisation and the outer-retina surfaces: ELM, IS/OS, COST, RPE, BM.

Detection works on a speckle-smoothed copy of the (axially motion-corrected) volume, one A-line
at a time, but each surface is searched in a window set by anatomy relative to the surface found
before it, so a bright neighbour band cannot capture it:

1. BM: the end of the thick bright RPE-BM slab, the deepest bright structure (a slab detector
   finds it, the steepest fall near it gives the depth);
2. RPE: the slab's top 6–25 µm above BM (found the same way, at the steepest rise);
3. COST: the shallowest clear peak 3–20 µm above the RPE (rod tips make a deeper one);
4. IS/OS: the brightest peak 15–38 µm above COST (outer segments are 22–35 µm long);
5. ELM: the brightest peak 12–35 µm above IS/OS (the inner-segment length).

Depths are refined to sub-pixel by a parabola through the peak, then each surface map is
median-filtered across B-scans and A-lines to remove isolated misses.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np

from gpu.subpixel import parabola_offset

SURFACES = ("ELM", "ISOS", "COST", "RPE", "BM")
# (surface found before, µm from it to the window's near end, to its far end); negative = above.
SEARCH_UM = {"RPE": ("BM", -25.0, -6.0), "COST": ("RPE", -20.0, -3.0),
             "ISOS": ("COST", -38.0, -15.0), "ELM": ("ISOS", -35.0, -12.0)}
LATERAL_SMOOTHING_UM = 5.0
BM_WINDOW_UM = 14.0         # BM is searched this far either side of its volume-wide depth
SLAB_DEPTHS = 16
SLAB_SMOOTHING_SAMPLES = 3.0  # on the surface grid (about 3 µm a sample): ~9 µm sigma
MIN_BAND_CONTRAST = 1.5     # IS/OS and COST intensity against the outer-segment floor
LOG_SKEWNESS_BELOW = 0.3    # histogram skewness under which a volume is log-compressed
LOG_RANGE_DB = 50.0
# COST is the shallowest clear peak above the RPE, not the brightest: beyond ~2° the rods'
# outer-segment tips (ROST) make a second band a few micrometres deeper, as bright or brighter.
SHALLOWEST_PEAK_FRACTION = 0.12


class NoPhotoreceptorLayer(ValueError):
    """The volume shows no IS/OS and COST bands above a bright RPE."""


@dataclass(frozen=True)
class Surfaces:
    depth_px: dict            # name -> (b_scans, a_lines) depth in pixels (sub-pixel)
    band_contrast: float      # IS/OS and COST brightness over the outer-segment floor


def normalise(volume, xp: ModuleType):
    """Square-root amplitude (tames speckle's long tail), scaled so the 99th percentile is 1.

    Scanners store linear amplitude, or log amplitude (dB, often 8-bit): a log-compressed
    volume is turned back into linear amplitude first (see ``is_log_compressed``).
    Returns the one full-size float32 copy that preprocessing then works on in place.
    """
    amplitude = volume.astype(xp.float32)
    if is_log_compressed(amplitude, xp):
        # The display range is not recorded; assume LOG_RANGE_DB. A wrong guess only bends the
        # intensities by a mild power law (40 or 55 dB for 50: exponent 0.8 or 1.1).
        top = xp.maximum(xp.percentile(amplitude[::2, ::2, ::2], 99.99), 1e-6)
        amplitude /= top
        amplitude -= 1
        amplitude *= LOG_RANGE_DB / 20 * float(np.log(10))
        xp.exp(amplitude, out=amplitude)
    xp.sqrt(amplitude, out=amplitude)
    # A percentile of every eighth voxel: the whole volume's would sort a copy of it.
    scale = xp.percentile(amplitude[::2, ::2, ::2], 99.0)
    amplitude /= xp.maximum(scale, 1e-6)
    return amplitude


def is_log_compressed(volume, xp: ModuleType) -> bool:
    """Linear OCT amplitude is speckle-distributed (Rayleigh-like) with a long bright tail, so
    its histogram is skewed to the right (+1 to +3 on phantoms and scans); log compression folds
    the tail in and skews it to the left (about -1). No DICOM attribute says which it is."""
    sample = volume[::2, ::2, ::2].astype(xp.float32).ravel()
    centred = sample - sample.mean()
    spread = float(xp.sqrt(xp.mean(centred ** 2)))
    if spread == 0:
        return False
    return float(xp.mean(centred ** 3)) / spread ** 3 < LOG_SKEWNESS_BELOW


def detect_surfaces(volume, axial_um: float, lateral_um: float, xp: ModuleType,
                    ndimage: ModuleType) -> Surfaces:
    """Surfaces of a normalised, axially aligned volume (b_scans, depth, a_lines)."""
    smooth, step = _smoothed_intensity(volume, axial_um, lateral_um, ndimage, xp)
    depth = volume.shape[1]
    z = xp.arange(depth, dtype=xp.float32)[None, :, None]
    # Central difference: an edge's steepest point lands on the edge, not half a pixel off.
    gradient = xp.gradient(smooth, axis=1)

    # The RPE-Bruch's membrane complex is the one thick bright slab, and the deepest: below
    # it lies the darker choroid. Its end (BM) is found first, because above it the slab can
    # merge with COST and the rod tips where cones are sparse, while nothing bright follows it.
    # The slab detector (the dimmest of the 8 µm inside the slab minus the mean of the 8 µm
    # outside it) answers most strongly at the slab's edges and only weakly at thin bands.
    half = max(int(round(8.0 / axial_um)), 2)
    window = BM_WINDOW_UM / axial_um
    slab_end = _slab_response(smooth[:, ::-1], half, xp, ndimage)[:, ::-1]
    bm_global = float(xp.argmax(slab_end.mean(axis=(0, 2))))
    everywhere = xp.full((smooth.shape[0], smooth.shape[2]), bm_global, xp.float32)
    coarse_bm = _clean(_peak_in_window(slab_end, z, everywhere - window, everywhere + window,
                                       xp), ndimage)
    del slab_end
    # The slab is diffuse speckle, so its edges are found on a wider lateral average than the
    # cone bands need: the steepest fall and rise, a little outside the detector's answers
    # (its inner window must clear the edge's blur first).
    wide = (SLAB_SMOOTHING_SAMPLES, 0, SLAB_SMOOTHING_SAMPLES)
    slab_gradient = ndimage.gaussian_filter(gradient, wide)
    found = {"BM": _peak_in_window(-slab_gradient, z, coarse_bm - 2 / axial_um,
                                   coarse_bm + 6 / axial_um, xp)}
    lo, hi = _window(found, "RPE", axial_um)
    slab_top = _slab_response(smooth, half, xp, ndimage)
    coarse_rpe = _clean(_peak_in_window(slab_top, z, lo, hi, xp), ndimage)
    del slab_top
    found["RPE"] = _peak_in_window(slab_gradient, z, coarse_rpe - 6 / axial_um,
                                   coarse_rpe + 2 / axial_um, xp)
    del slab_gradient
    for name in ("COST", "ISOS", "ELM"):
        lo, hi = _window(found, name, axial_um)
        found[name] = _peak_in_window(smooth, z, lo, hi, xp,
                                      shallowest=SHALLOWEST_PEAK_FRACTION if name == "COST"
                                      else None)

    contrast = _band_contrast(smooth, found, xp)
    if contrast < MIN_BAND_CONTRAST:
        raise NoPhotoreceptorLayer(
            f"no photoreceptor layer: the IS/OS and COST bands are only {contrast:.2f}x "
            "brighter than the outer segments between them (need "
            f"{MIN_BAND_CONTRAST}x); is this an outer-retina AO-OCT volume?")
    shape = (volume.shape[0], volume.shape[2])
    depth_px = {name: _upsample(_clean(found[name], ndimage), step, shape, xp, ndimage)
                for name in SURFACES}
    return Surfaces(depth_px=depth_px, band_contrast=contrast)


def _smoothed_intensity(volume, axial_um: float, lateral_um: float, ndimage: ModuleType,
                        xp: ModuleType):
    """Intensity averaged laterally over about one cone spacing, on a coarser lateral grid.

    Intensity, not the square-root amplitude the volume holds: averaging energy lets the
    sparse, bright, coherent cone reflections at COST outweigh the diffuse interdigitation
    zone a few micrometres below it, which wins at low cone densities otherwise. Over ~5 µm an
    A-line between two cones still sees the cone bands, and surfaces bend over ~100 µm, so the
    smoothing costs no accuracy; it leaves no finer lateral detail either, so the surfaces are
    found on every step-th B-scan and A-line (a ninth of the memory) and interpolated back.
    """
    lateral = LATERAL_SMOOTHING_UM / lateral_um
    step = max(int(round(lateral / 1.7)), 1)
    # Across B-scans and A-lines, a slab of depths at a time, each axis subsampled as soon as
    # it is smoothed: no full-size temporary is ever made.
    b_scans, depth, a_lines = volume.shape
    smooth = xp.empty((len(range(0, b_scans, step)), depth, len(range(0, a_lines, step))),
                      xp.float32)
    for top in range(0, depth, SLAB_DEPTHS):
        intensity = volume[:, top:top + SLAB_DEPTHS] ** 2
        intensity *= intensity
        across = _blur_every(intensity, lateral, 2, step, xp)
        smooth[:, top:top + SLAB_DEPTHS] = _blur_every(across, lateral, 0, step, xp)
    smooth = ndimage.gaussian_filter1d(smooth, 0.7 / axial_um, axis=1)
    return xp.ascontiguousarray(smooth), step


def _blur_every(array, sigma: float, axis: int, step: int, xp: ModuleType):
    """A Gaussian blur along ``axis`` computed only at every step-th sample (edge samples
    repeat): the full-resolution blurred array is never made."""
    radius = int(4 * sigma + 0.5)
    weights = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    weights /= weights.sum()
    length = array.shape[axis]
    centres = xp.arange(0, length, step)
    blurred = None
    for offset, weight in zip(range(-radius, radius + 1), weights.tolist(), strict=True):
        term = xp.take(array, xp.clip(centres + offset, 0, length - 1), axis=axis)
        term *= weight
        if blurred is None:
            blurred = term
        else:
            blurred += term
    return blurred


def _upsample(surface, step: int, shape: tuple[int, int], xp: ModuleType, ndimage: ModuleType):
    """A surface found on every step-th B-scan and A-line, back on the full grid."""
    if step == 1:
        return surface
    b = xp.arange(shape[0], dtype=xp.float32)[:, None] / step
    x = xp.arange(shape[1], dtype=xp.float32)[None, :] / step
    coords = xp.stack(xp.broadcast_arrays(b, x))
    return ndimage.map_coordinates(surface, coords, order=1, mode="nearest")


def _window(found: dict, name: str, axial_um: float):
    """Per-A-line depths between which ``name`` is searched (SEARCH_UM)."""
    reference, near, far = SEARCH_UM[name]
    return (found[reference] + min(near, far) / axial_um,
            found[reference] + max(near, far) / axial_um)


def _peak_in_window(values, z, lo, hi, xp: ModuleType, shallowest: float | None = None):
    """Sub-pixel depth of the maximum of ``values`` between per-A-line depths lo and hi.

    With ``shallowest`` (a fraction), the shallowest local maximum that rises that fraction of
    the way from the window's floor to its top instead; where none does, the top.
    """
    lo = xp.clip(lo, 1, values.shape[1] - 2)[:, None, :]
    hi = xp.clip(hi, 1, values.shape[1] - 2)[:, None, :]
    inside = (z >= lo) & (z <= hi)
    masked = xp.where(inside, values, -xp.inf)
    index = xp.argmax(masked, axis=1)                       # (b_scans, a_lines)
    if shallowest is not None:
        top = masked.max(axis=1, keepdims=True)
        floor = xp.where(inside, values, xp.inf).min(axis=1, keepdims=True)
        rising = values > xp.concatenate([values[:, :1], values[:, :-1]], axis=1)
        falling = values >= xp.concatenate([values[:, 1:], values[:, -1:]], axis=1)
        clear = inside & rising & falling & (values - floor >= shallowest * (top - floor))
        index = xp.where(clear.any(axis=1), xp.argmax(clear, axis=1), index)
    return _refined(values, index, xp)


def _refined(values, index, xp: ModuleType):
    """Integer peak depths moved to the vertex of a parabola through their neighbours."""
    index = xp.clip(index, 1, values.shape[1] - 2)
    take = lambda offset: xp.take_along_axis(values, (index + offset)[:, None, :], 1)[:, 0]  # noqa: E731
    return index + parabola_offset(take(-1), take(0), take(1), xp)


def _slab_response(smooth, half: int, xp: ModuleType, ndimage: ModuleType):
    """How well each depth opens a thick bright slab: the dimmest of the ``half`` samples
    below it minus the mean of the ``half`` above it (reversed in depth: how well it closes
    one). A thin band, however bright (COST outshines the RPE where cones are dense), has a
    dim sample within ``half`` of its top; the RPE slab (10 µm and more) has none."""
    # The origin moves minimum_filter1d's centred window so depth z sees z .. z + half - 1.
    below = ndimage.minimum_filter1d(smooth, half, axis=1, mode="nearest", origin=-(half // 2))
    below -= _mean_above(smooth, half, xp)
    return below


def _mean_above(smooth, half: int, xp: ModuleType):
    """Mean of the ``half`` samples above each depth (the top ones repeat the first)."""
    b_scans, depth, a_lines = smooth.shape
    cumulative = xp.zeros((b_scans, depth + 1, a_lines), smooth.dtype)   # c[k] = sum of s[:k]
    xp.cumsum(smooth, axis=1, out=cumulative[:, 1:])
    above = xp.empty_like(smooth)
    above[:, half:] = cumulative[:, half:depth] - cumulative[:, :depth - half]
    above[:, :half] = smooth[:, :1] * half
    above /= half
    return above


def _clean(surface, ndimage: ModuleType):
    return ndimage.median_filter(surface, size=(3, 3), mode="nearest")


def _band_contrast(smooth, depth_px: dict, xp: ModuleType) -> float:
    def at(depth):
        index = xp.clip(xp.rint(depth).astype(xp.int64), 0, smooth.shape[1] - 1)
        return xp.take_along_axis(smooth, index[:, None, :], 1)[:, 0]

    bands = 0.5 * (at(depth_px["ISOS"]) + at(depth_px["COST"]))
    floor = at(0.5 * (depth_px["ISOS"] + depth_px["COST"]))
    return float(xp.median(bands) / xp.maximum(xp.median(floor), 1e-6))
