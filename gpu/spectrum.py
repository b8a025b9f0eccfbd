"""The cone mosaic's spacing from the en-face power spectrum, without the model.

A packed mosaic puts a ring into the power spectrum of its image at the inverse of its modal
row spacing ("Yellott's ring"; Yellott 1982, Cooper et al. 2013 use it for cone spacing in
AO images). The ring is found here as the largest local bump of the log radial power profile
above its own broad trend, so that the steady fall of the spectrum through the point-spread
function and the rise of slow intensity changes towards zero frequency do not pull the peak.

Steps: each en-face image is flattened (minus its local mean, over its local standard
deviation, ``FLATTEN_UM``), windowed and transformed; IS/OS and COST are summed (the cones are
in both, the speckle of one is not the other's). Frequencies are in cycles per micrometre from
each axis's own pitch, so anisotropic sampling (fast ≠ slow pitch) lands on one ring. The
radial profile is taken on a logarithmic frequency axis, and its trend is a Gaussian smoothing
``TREND_WIDTH`` wide in log frequency (a quadratic trend is removed exactly).

From the ring to a density: a hexagonal mosaic of centre spacing s has its first ring at
2 / (√3 s), density 2 / (√3 s²). Disordered mosaics (≈ 50 % six-sided cells, as in vivo beyond
the foveal centre) put the ring higher than a lattice of the same density: on the true
positions of both phantom families the ring lies 0.96-1.23 × the lattice's, so the conversion
divides by the middle of that range (``DISORDER_RING_RATIO``). A density from the spectrum is
a cross-check on the detector, not a measurement in its own right: on unseen phantoms it lay
within -18 … +50 % of the truth, except near the fovea of family B (cones barely larger than
the point-spread function), where it can find a false ring far below the true one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from gpu.quantify import grid_cells

FLATTEN_UM = 10.0            # local mean and contrast removed over this scale
TREND_WIDTH = 0.25           # Gaussian sigma of the trend, in natural-log frequency
PEAK_SMOOTHING = 0.04        # and of the profile itself: a few Fourier samples per bin
LONGEST_ROW_SPACING_UM = 15.0   # search band: cones up to ~17 µm apart (beyond 12°) ...
HIGHEST_FRACTION_OF_NYQUIST = 0.92   # ... down to what the coarser pitch still samples
MIN_PROMINENCE = 0.3         # of the ring above its trend (natural log); below: not resolved
MIN_CONES_IN_FIELD = 30      # fewer cones than this at the ring's density: too small a field
DISORDER_RING_RATIO = 1.08   # ring of a disordered mosaic / ring of a lattice, same density
# The run's cross-check: the detected density may lie within x(1 + this) of the spectrum's
# either way. On 60 unseen phantoms of both families (seeds 1-30) the spectrum's field density
# was 0.82-1.50 x the truth where it resolved a ring, so this flags 1 of 45 runs the detector
# got right (within 15 %) and catches a doubled count; a region's spectrum (a quarter of the
# cones) is too noisy to flag on and is reported only.
DENSITY_TOLERANCE = 0.5
PROFILE_BINS = 160
ZERO_PADDING = 2


@dataclass(frozen=True)
class MosaicSpacing:
    """What the spectrum says of one region: ``resolved`` False means it found no ring it can
    stand behind (and says why), and the spacing and density are then None."""
    resolved: bool
    reason: str = ""
    ring_cycles_per_um: float | None = None
    row_spacing_um: float | None = None
    cone_spacing_um: float | None = None
    density_per_mm2: float | None = None
    prominence: float = 0.0

    def as_dict(self) -> dict:
        return {key: round(value, 4) if isinstance(value, float) else value
                for key, value in asdict(self).items()}


def mosaic_spacing(images: list[np.ndarray], pixel_um: tuple[float, float]) -> MosaicSpacing:
    """The ring in ``images`` (en-face images of one region, rows = B-scans), sampled at
    ``pixel_um`` = (B-scan pitch, A-line spacing) in micrometres."""
    rings = ring_candidates(images, pixel_um)
    if not rings:
        return MosaicSpacing(False, "no ring in the spectrum between the longest spacing "
                                    "searched and the sampling limit")
    ring, prominence = max(rings, key=lambda candidate: candidate[1])
    if prominence < MIN_PROMINENCE:
        return MosaicSpacing(False, f"the ring stands {prominence:.2f} above the spectrum's "
                                    f"trend, below {MIN_PROMINENCE}", prominence=prominence)
    density = ring_density_per_mm2(ring)
    field_mm2 = images[0].shape[0] * pixel_um[0] * images[0].shape[1] * pixel_um[1] / 1e6
    if density * field_mm2 < MIN_CONES_IN_FIELD:
        return MosaicSpacing(False, f"the region holds about {density * field_mm2:.0f} cones "
                                    f"at the ring's spacing, fewer than {MIN_CONES_IN_FIELD}",
                             prominence=prominence)
    return MosaicSpacing(True, "", ring, 1 / ring, ring_cone_spacing_um(ring), density,
                         prominence)


def ring_candidates(images: list[np.ndarray], pixel_um: tuple[float, float],
                    min_prominence: float = 0.0) -> list[tuple[float, float]]:
    """Every local bump of the spectrum in the search band standing at least
    ``min_prominence`` above its trend: (ring in cycles/µm, prominence), lowest ring first.
    The largest is the mosaic's ring when one dominates; where rods or speckle put a ring of
    their own beside it (far from the fovea), the cones' may be a smaller one (gpu.scale)."""
    log_f, log_power, nyquist = radial_profile(images, pixel_um)
    step = log_f[1] - log_f[0]
    smooth = ndimage.gaussian_filter1d(log_power, PEAK_SMOOTHING / step, mode="nearest")
    bump = smooth - ndimage.gaussian_filter1d(log_power, TREND_WIDTH / step, mode="nearest")
    band = np.nonzero((log_f >= -np.log(LONGEST_ROW_SPACING_UM))
                      & (log_f <= np.log(HIGHEST_FRACTION_OF_NYQUIST * nyquist)))[0]
    inner = band[1:-1]
    maxima = inner[(bump[inner] > bump[inner - 1]) & (bump[inner] >= bump[inner + 1])]
    return [(float(np.exp(log_f[peak] + _vertex_offset(bump[peak - 1: peak + 2]) * step)),
             float(bump[peak]))
            for peak in maxima if bump[peak] >= min_prominence]


def ring_density_per_mm2(ring_cycles_per_um: float) -> float:
    """The cone density a ring implies, for a disordered mosaic (``DISORDER_RING_RATIO``)."""
    return float(np.sqrt(3) / 2 * (ring_cycles_per_um / DISORDER_RING_RATIO) ** 2 * 1e6)


def ring_cone_spacing_um(ring_cycles_per_um: float) -> float:
    """Centre spacing of the hexagonal lattice whose first ring this is."""
    return float(2 / (np.sqrt(3) * ring_cycles_per_um))


def radial_profile(images: list[np.ndarray], pixel_um: tuple[float, float]):
    """(natural-log frequency in cycles/µm, log of the mean power there, Nyquist frequency
    of the coarser axis) of the summed flattened images."""
    shape = images[0].shape
    window = np.outer(np.hanning(shape[0]), np.hanning(shape[1]))
    padded = (ZERO_PADDING * shape[0], ZERO_PADDING * shape[1])
    transform = sum(np.fft.fft2(flatten(image, pixel_um) * window, s=padded) for image in images)
    power = np.abs(transform) ** 2
    frequency = np.hypot(np.fft.fftfreq(padded[0], d=pixel_um[0])[:, None],
                         np.fft.fftfreq(padded[1], d=pixel_um[1])[None, :])
    nyquist = 0.5 / max(pixel_um)
    lowest = 0.5 / max(shape[0] * pixel_um[0], shape[1] * pixel_um[1])
    edges = np.exp(np.linspace(np.log(lowest), np.log(nyquist), PROFILE_BINS + 1))
    index = np.digitize(frequency.ravel(), edges) - 1
    inside = (index >= 0) & (index < PROFILE_BINS)
    counts = np.bincount(index[inside], minlength=PROFILE_BINS)
    sums = np.bincount(index[inside], power.ravel()[inside], PROFILE_BINS)
    log_f = 0.5 * (np.log(edges[1:]) + np.log(edges[:-1]))
    filled = counts > 0
    # The finest log bins at low frequency hold no sample of the grid: interpolate across.
    log_power = np.interp(log_f, log_f[filled],
                          np.log(np.maximum(sums[filled] / counts[filled], 1e-30)))
    return log_f, log_power, nyquist


def flatten(image: np.ndarray, pixel_um: tuple[float, float]) -> np.ndarray:
    """Local contrast: minus the local mean, over the local standard deviation."""
    image = np.asarray(image, np.float64)
    sigma = (FLATTEN_UM / pixel_um[0], FLATTEN_UM / pixel_um[1])
    detail = image - ndimage.gaussian_filter(image, sigma, mode="reflect")
    spread = np.sqrt(ndimage.gaussian_filter(detail * detail, sigma, mode="reflect"))
    flat = detail / np.maximum(spread, 1e-9 * max(float(spread.max()), 1e-30))
    return flat - flat.mean()


def _vertex_offset(three: np.ndarray) -> float:
    """Sub-bin position of a parabola's vertex through three neighbouring values."""
    below, centre, above = three
    curvature = below - 2 * centre + above
    return 0.0 if curvature == 0 else float(np.clip(0.5 * (below - above) / curvature, -1, 1))


def regional_spacing(enface: dict[str, np.ndarray], pixel_um: tuple[float, float],
                     grid: tuple[int, int]) -> dict:
    """The ring of the whole field and of each grid cell (columns x rows, as the regional
    cone measurements), from the IS/OS and COST en-face images."""
    images = [enface[name] for name in ("ISOS", "COST")]
    regions = [{"row": row, "column": column,
                **mosaic_spacing([image[b, a] for image in images], pixel_um).as_dict()}
               for row, column, b, a in grid_cells(images[0].shape, grid)]
    return {"field": mosaic_spacing(images, pixel_um).as_dict(), "regions": regions}


def density_ratio(detected_per_mm2: float | None, spacing: dict) -> float | None:
    """Detected density over the spectrum's; None where the spectrum resolved no ring."""
    if not spacing["resolved"] or not detected_per_mm2:
        return None
    return detected_per_mm2 / spacing["density_per_mm2"]


def disagrees(ratio: float | None) -> bool:
    """Whether a detected/spectral density ratio lies beyond ``DENSITY_TOLERANCE`` either way."""
    return ratio is not None and not 1 / (1 + DENSITY_TOLERANCE) <= ratio <= 1 + DENSITY_TOLERANCE
