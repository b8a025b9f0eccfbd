"""Phantom family B: a second synthetic AO-OCT generator, designed apart from family A.

A model that only fits the generator it was trained on is no use on a real retina, so the
appliance is always measured on two generators that make their choices independently. This one
shares no physics code with ``gpu.phantom`` (family A); only the returned ``Phantom`` container
is common, so that training and scoring read both alike. Where A chose one thing, B chose
another:

- mosaic: A jitters a lattice and pushes cones apart; B relaxes random points by soft
  repulsion, with a density gradient across the field (the eccentricity changes along x).
- density: A follows Curcio 1990's table; B a power law, 32 000 · (e / 2°)^-0.72 per mm².
- cones: A adds Gaussian spots to the speckle; B puts point reflectors inside the tissue and
  images everything through one PSF.
- reflectance: A log-normal with 3 % dim cones; B gamma, with cones dark at IS/OS only, at COST
  only or at both, and 15 % flickering from B-scan to B-scan.
- rods: A none; B beyond 2° rods between the cones and a rod outer-segment tip (ROST) band
  a few micrometres below COST.
- speckle and PSF: A a Gaussian field blurred by a Gaussian PSF; B sparse scatterers through a
  circular pupil (an Airy PSF) and a raised-cosine source spectrum.
- intensity: A linear amplitude; B linear, log (dB) or 8-bit log (in the uint16 container).
- sampling: A square 1 µm pixels; B fast and slow pitch 0.5-1.5 µm each, axial 0.8-1.2 µm.
- layers: A gentle waves; B a random smooth relief, a larger tilt, sometimes a drusen-like
  dome lifting the RPE and everything above it.
- motion: A a random walk, one saccade and a sine pulse; B drift as slow sines, tremor, up to
  two saccades, respiration and pulse.

Axes are the OPT convention (B-scans = slow axis y, depth z, A-lines = fast axis x).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy import fft
from scipy.spatial import cKDTree

from gpu.phantom import Phantom

INTENSITY_MAPPINGS = ("linear", "log", "8bit")
SURFACES = ("ELM", "ISOS", "COST", "RPE", "BM")
ROD_ONSET_DEG = 2.0
RELAXATION_ROUNDS = 12     # more rounds crystallise the mosaic (> 60 % six-sided)
# COST cone tips are the brighter reflection in AO-OCT; IS/OS a little weaker.
BAND_GAIN = {"ISOS": 1.0, "COST": 1.25}
REFLECTOR_CONTRAST = 4.0  # a cone of reflectance 1 peaks as bright as tissue this reflective
Y_OVERSAMPLING = 2        # the static retina is built at half the B-scan pitch along y


@dataclass(frozen=True)
class FamilyBSpec:
    seed: int = 0
    b_scans: int = 96
    depth: int = 160
    a_lines: int = 128
    fast_pitch_um: float = 1.0           # between A-lines (x)
    slow_pitch_um: float = 1.0           # between B-scans (y)
    axial_pitch_um: float = 1.0
    eccentricity_deg: float = 3.0        # at the field's centre
    eccentricity_span_deg: float = 0.3   # change across the field along x
    noise: float = 0.1                   # detector noise relative to the mean cone amplitude
    motion_um: float = 3.0               # scale of the lateral drift
    intensity: str = "linear"
    psf_fwhm_um: float = 2.4             # lateral intensity PSF
    axial_fwhm_um: float = 3.0
    family: ClassVar[str] = "B"

    @property
    def spacing_um(self) -> tuple[float, float, float]:
        """(B-scan pitch, axial, A-line spacing), the order of the pipeline's spacing."""
        return (self.slow_pitch_um, self.axial_pitch_um, self.fast_pitch_um)


def hexagonal_spacing_um(density_per_mm2):
    """Centre-to-centre distance of a hexagonal mosaic of this density (per mm²)."""
    return np.sqrt(2 / (np.sqrt(3) * np.asarray(density_per_mm2) / 1e6))


def density_per_mm2(eccentricity_deg) -> np.ndarray:
    """Cone density of family B: a power law, not family A's table."""
    return 32000.0 * (np.maximum(eccentricity_deg, 0.2) / 2.0) ** -0.72


def rod_density_per_mm2(eccentricity_deg) -> np.ndarray:
    """Rods appear near 2° and climb steeply (Curcio 1990's rod-free zone and slope)."""
    e = np.asarray(eccentricity_deg, dtype=float)
    return np.where(e > ROD_ONSET_DEG, 25000.0 * np.clip(e - ROD_ONSET_DEG, 0, 10), 0.0)


def make_phantom_b(spec: FamilyBSpec) -> Phantom:
    if spec.intensity not in INTENSITY_MAPPINGS:
        raise ValueError(f"intensity must be one of {INTENSITY_MAPPINGS}, not {spec.intensity!r}")
    rng = np.random.default_rng([spec.seed, 0xB])
    shifts = _motion(spec, rng)
    margin = float(np.abs(shifts[:, :2]).max()) + 10.0
    width = spec.a_lines * spec.fast_pitch_um
    height = spec.b_scans * spec.slow_pitch_um
    x_range, y_range = (-margin, width + margin), (-margin, height + margin)

    def eccentricity(x_um):
        return spec.eccentricity_deg + spec.eccentricity_span_deg * (x_um / width - 0.5)

    cones = _relaxed_mosaic(rng, x_range, y_range,
                            lambda x: density_per_mm2(eccentricity(x)))
    rods = _rods(rng, cones, x_range, y_range, lambda x: rod_density_per_mm2(eccentricity(x)))
    isos, cost, flicker = _reflectances(rng, len(cones))

    # The static retina on a grid: x at the A-line spacing, y at half the B-scan pitch, z at
    # the axial pitch; eye motion then picks rows and shifts them.
    grid = _Grid(spec, x_range, y_range)
    surface = _surfaces(spec, rng, width, height)
    depth_at = {name: surface(name, grid.x[None, :], grid.y[:, None]) for name in SURFACES}
    depth_at["ROST"] = surface("ROST", grid.x[None, :], grid.y[:, None])
    scatter = _diffuse_tissue(spec, rng, grid, depth_at, has_rods=len(rods) > 0)
    transfer = _transfer(spec, grid)
    # A point reflector's peak after the PSF is mean(H) of its amplitude; white tissue keeps
    # mean(H²) of its power. This gain makes a reflectance of 1 peak as bright as tissue of
    # reflectivity REFLECTOR_CONTRAST.
    gain = np.sqrt(REFLECTOR_CONTRAST * 2 * float(np.mean(transfer ** 2))) / float(
        np.mean(transfer))
    for name, reflectance in (("ISOS", isos), ("COST", cost)):
        grid.add_reflectors(scatter, cones, reflectance * BAND_GAIN[name], surface, name,
                            rng, gain)
    if len(rods):
        rod_isos = 0.2 * rng.gamma(3.0, 1 / 3.0, len(rods))
        rod_tips = 0.4 * rng.gamma(3.0, 1 / 3.0, len(rods))
        grid.add_reflectors(scatter, rods, rod_isos, surface, "ISOS", rng, gain)
        grid.add_reflectors(scatter, rods, rod_tips, surface, "ROST", rng, gain)
    field = fft.ifftn(fft.fftn(scatter, workers=2) * transfer, workers=2).astype(np.complex64)
    del scatter

    noise_amplitude = spec.noise * _mean_cone_amplitude(grid, field, cones, surface)
    volume, flicker_b_scans = _scan(spec, grid, field, shifts, cones, flicker, noise_amplitude,
                                    rng)
    voxels = _intensity_mapping(spec, rng, volume)

    x = np.arange(spec.a_lines) * spec.fast_pitch_um
    y = np.arange(spec.b_scans) * spec.slow_pitch_um
    seen_x, seen_y = x[None, :] + shifts[:, 0:1], y[:, None] + shifts[:, 1:2]
    observed = {name: (surface(name, seen_x, seen_y) + shifts[:, 2:3]) / spec.axial_pitch_um
                for name in SURFACES}
    motion_free = {name: surface(name, x[None, :], y[:, None]) / spec.axial_pitch_um
                   for name in SURFACES}
    inside = ((cones[:, 0] >= 0) & (cones[:, 0] < width)
              & (cones[:, 1] >= 0) & (cones[:, 1] < height))
    kinds = _cone_kinds(isos, cost, flicker_b_scans)
    table = [{"id": i, "x_um": round(float(cx), 4), "y_um": round(float(cy), 4),
              "isos_reflectance": round(float(isos[i]), 4),
              "cost_reflectance": round(float(cost[i]), 4), "kind": kinds[i]}
             for i, (cx, cy) in enumerate(cones) if inside[i]]
    area_mm2 = width * height / 1e6
    mean_density = float(density_per_mm2(eccentricity(np.linspace(0, width, 64))).mean())
    summary = {
        "family": "B",
        "eccentricity_deg": spec.eccentricity_deg,
        "cone_count": int(inside.sum()),
        "cone_density_per_mm2": round(float(inside.sum()) / area_mm2, 1),
        "model_density_per_mm2": round(mean_density, 1),
        "cone_spacing_um": round(float(hexagonal_spacing_um(mean_density)), 3),
        "rod_count": int(((rods[:, 0] >= 0) & (rods[:, 0] < width) & (rods[:, 1] >= 0)
                          & (rods[:, 1] < height)).sum()) if len(rods) else 0,
        "intensity": spec.intensity,
        "field_um": [width, height],
    }
    return Phantom(spec=spec, voxels=voxels, cones_um=cones[inside], cone_table=table,
                   shifts_um=shifts, surfaces_px=observed,
                   surfaces_motion_free_px=motion_free, summary=summary)


def _motion(spec: FamilyBSpec, rng: np.random.Generator) -> np.ndarray:
    """(dx, dy, dz) µm per B-scan: drift as a few slow sines, tremor, saccades; respiration and
    pulse axially. y is rounded to the grid's rows, so the recorded shift is exact."""
    t = np.arange(spec.b_scans) / spec.b_scans
    lateral = np.zeros((spec.b_scans, 2))
    for axis, scale in ((0, 1.0), (1, 0.3)):
        for _ in range(3):
            period = rng.uniform(0.4, 2.0)
            lateral[:, axis] += scale * spec.motion_um * rng.uniform(0.2, 0.6) * np.sin(
                2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
        lateral[:, axis] += scale * rng.normal(0, 0.08 * spec.motion_um, spec.b_scans)
    for _ in range(rng.integers(0, 3) if spec.motion_um > 0 else 0):
        at = rng.integers(spec.b_scans // 5, 4 * spec.b_scans // 5)
        lateral[at:, 0] += rng.uniform(-1.5, 1.5) * spec.motion_um
    lateral -= lateral.mean(axis=0)
    step = spec.slow_pitch_um / Y_OVERSAMPLING
    lateral[:, 1] = np.round(lateral[:, 1] / step) * step
    seconds = np.arange(spec.b_scans) * rng.uniform(0.003, 0.008)
    axial = (rng.uniform(1.0, 5.0) * np.sin(2 * np.pi * 0.25 * seconds + rng.uniform(0, 6.3))
             + rng.uniform(0.5, 2.5) * np.sin(2 * np.pi * rng.uniform(1, 1.6) * seconds
                                              + rng.uniform(0, 6.3)))
    return np.column_stack([lateral, axial - axial.mean()])


def _relaxed_mosaic(rng, x_range, y_range, density_at) -> np.ndarray:
    """Random points at the local density, relaxed by soft repulsion until packed but not
    crystalline (about half the Voronoi cells six-sided)."""
    xs = np.linspace(*x_range, 256)
    local = density_at(xs) / 1e6                       # per µm²
    height = y_range[1] - y_range[0]
    count = int(np.trapezoid(local, xs) * height)
    # Inverse-CDF sampling of x follows the density gradient.
    cdf = np.concatenate([[0], np.cumsum((local[1:] + local[:-1]) / 2 * np.diff(xs))])
    x = np.interp(rng.random(count) * cdf[-1], cdf, xs)
    points = np.column_stack([x, rng.uniform(*y_range, count)])
    for _ in range(RELAXATION_ROUNDS):
        reach = 0.9 * hexagonal_spacing_um(density_at(points[:, 0]))
        pairs = cKDTree(points).query_pairs(float(reach.max()), output_type="ndarray")
        apart = points[pairs[:, 1]] - points[pairs[:, 0]]
        distance = np.maximum(np.hypot(apart[:, 0], apart[:, 1]), 1e-6)
        wanted = 0.5 * (reach[pairs[:, 0]] + reach[pairs[:, 1]])
        overlap = np.clip(wanted - distance, 0, None)
        push = (0.35 * overlap / distance)[:, None] * apart
        np.add.at(points, pairs[:, 0], -push)
        np.add.at(points, pairs[:, 1], push)
        points[:, 0] = np.clip(points[:, 0], *x_range)
        points[:, 1] = np.clip(points[:, 1], *y_range)
    return points


def _rods(rng, cones, x_range, y_range, rod_density_at) -> np.ndarray:
    """Rods in the gaps between cones: candidates at the local rod density, kept where they
    are clear of every cone's inner segment and of each other."""
    xs = np.linspace(*x_range, 64)
    expected = float(np.trapezoid(rod_density_at(xs) / 1e6, xs) * (y_range[1] - y_range[0]))
    if expected < 1:
        return np.zeros((0, 2))
    count = int(expected * 1.6)
    candidates = np.column_stack([rng.uniform(*x_range, count), rng.uniform(*y_range, count)])
    keep = rng.random(count) < rod_density_at(candidates[:, 0]) / rod_density_at(xs).max()
    candidates = candidates[keep]
    cone_distance = cKDTree(cones).query(candidates)[0]
    candidates = candidates[cone_distance > 2.2]
    taken = np.zeros(len(candidates), bool)
    tree = cKDTree(candidates)
    blocked = np.zeros(len(candidates), bool)
    for index in rng.permutation(len(candidates)):
        if blocked[index]:
            continue
        taken[index] = True
        blocked[tree.query_ball_point(candidates[index], 1.6)] = True
    return candidates[taken]


def _reflectances(rng, n: int):
    """IS/OS and COST reflectances (gamma, correlated), with cones dark at one band or both,
    and a flickering fraction whose brightness changes from B-scan to B-scan."""
    common = rng.gamma(2.0, 0.5, n)
    isos = common * rng.gamma(6.0, 1 / 6.0, n)
    cost = common * rng.gamma(6.0, 1 / 6.0, n)
    kind = rng.random(n)
    isos[kind < 0.08] *= 0.15                       # dark at IS/OS, visible at COST
    cost[(kind >= 0.08) & (kind < 0.16)] *= 0.15    # the reverse
    both = (kind >= 0.16) & (kind < 0.19)
    isos[both] *= 0.1
    cost[both] *= 0.1
    flicker = rng.random(n) < 0.15
    return isos, cost, flicker


def _cone_kinds(isos, cost, flicker_b_scans) -> list[str]:
    median_isos, median_cost = np.median(isos), np.median(cost)
    kinds = []
    for i in range(len(isos)):
        dark_isos, dark_cost = isos[i] < 0.25 * median_isos, cost[i] < 0.25 * median_cost
        kind = ("dark" if dark_isos and dark_cost else "dark_isos" if dark_isos
                else "dark_cost" if dark_cost else "normal")
        kinds.append(kind + ("+flicker" if flicker_b_scans[i] else ""))
    return kinds


class _Grid:
    """The static retina's sampling grid and the reflectors placed on it."""

    def __init__(self, spec: FamilyBSpec, x_range, y_range):
        self.spec = spec
        self.x = np.arange(x_range[0], x_range[1], spec.fast_pitch_um)
        self.y_step = spec.slow_pitch_um / Y_OVERSAMPLING
        self.y = np.arange(y_range[0], y_range[1], self.y_step)
        self.z = np.arange(spec.depth) * spec.axial_pitch_um
        self.shape = (len(self.y), spec.depth, len(self.x))

    def index_of(self, points: np.ndarray):
        column = np.clip(np.rint((points[:, 0] - self.x[0]) / self.spec.fast_pitch_um),
                         0, len(self.x) - 1).astype(int)
        row = np.clip(np.rint((points[:, 1] - self.y[0]) / self.y_step),
                      0, len(self.y) - 1).astype(int)
        return row, column

    def add_reflectors(self, scatter, points, reflectance, surface, name, rng,
                       gain: float) -> None:
        """Each point a coherent reflector at the surface's depth (split between the two
        nearest depths so it sits at its true sub-pixel depth)."""
        row, column = self.index_of(points)
        depth_um = surface(name, self.x[column], self.y[row])
        z = depth_um / self.spec.axial_pitch_um
        z0 = np.clip(np.floor(z).astype(int), 0, self.spec.depth - 2)
        fraction = np.clip(z - z0, 0, 1)
        amplitude = gain * np.sqrt(reflectance) * np.exp(2j * np.pi * rng.random(len(points)))
        np.add.at(scatter, (row, z0, column), amplitude * (1 - fraction))
        np.add.at(scatter, (row, z0 + 1, column), amplitude * fraction)


def _surfaces(spec: FamilyBSpec, rng, width: float, height: float):
    """Surfaces (µm below the top) as a plane with a random smooth relief and, in a third of
    the volumes, a drusen-like dome that lifts the RPE and the layers above it."""
    tilt = rng.uniform(-0.08, 0.08, 2)
    relief_modes = [(rng.normal(0, 0.9), rng.uniform(-1, 1, 2) / rng.uniform(60, 200),
                     rng.uniform(0, 2 * np.pi)) for _ in range(4)]
    dome = None
    if rng.random() < 1 / 3:
        dome = (rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height,
                rng.uniform(15, 40), rng.uniform(2.0, 6.0))
    inner_segment = rng.uniform(24.0, 31.0)
    outer_segment = 30.0 - 7.0 * min(spec.eccentricity_deg / 6.0, 1.0) + rng.uniform(-2, 2)
    cost_to_rpe = rng.uniform(11.0, 16.0)
    offsets = {"ELM": 0.0, "ISOS": inner_segment, "COST": inner_segment + outer_segment}
    offsets["RPE"] = offsets["COST"] + cost_to_rpe
    offsets["BM"] = offsets["RPE"] + rng.uniform(10.0, 17.0)
    # Rod outer-segment tips: a band between COST and the RPE, deeper than the cones' tips.
    offsets["ROST"] = offsets["COST"] + rng.uniform(5.0, 0.6 * cost_to_rpe)
    depth_um = spec.depth * spec.axial_pitch_um
    room = depth_um - offsets["BM"]
    if room < 30.0:
        raise ValueError(f"a depth of {depth_um:.0f} µm cannot hold family B's outer retina "
                         f"({offsets['BM']:.0f} µm from ELM to BM, plus room for motion)")
    top = room * rng.uniform(0.3, 0.5)

    def surface(name: str, x, y):
        x, y = np.asarray(x, float), np.asarray(y, float)
        base = top + tilt[0] * (x - width / 2) + tilt[1] * (y - height / 2)
        for amplitude, (kx, ky), phase in relief_modes:
            base = base + amplitude * np.sin(2 * np.pi * (kx * x + ky * y) + phase)
        if dome is not None:
            cx, cy, radius, lift = dome
            base = base - lift * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius ** 2))
        return base + offsets[name]

    return surface


def _diffuse_tissue(spec, rng, grid: _Grid, depth_at: dict, has_rods: bool) -> np.ndarray:
    """Sparse random scatterers whose mean reflectivity follows the layers."""
    z = grid.z[None, :, None]
    at = {name: d[:, None, :] for name, d in depth_at.items()}

    def thin(name, width=1.0):
        return np.exp(-0.5 * ((z - at[name]) / width) ** 2)

    reflectivity = (0.04 * (z < at["ELM"]) + 0.45 * thin("ELM", 0.8)
                    + 0.05 * ((z > at["ELM"]) & (z < at["ISOS"]))
                    + 0.015 * ((z > at["ISOS"]) & (z < at["COST"]))
                    + 0.08 * thin("COST", 2.5) * 0.5
                    + 0.70 * ((z >= at["RPE"]) & (z < at["BM"])) * (0.6 + 0.4 * np.clip(
                        (z - at["RPE"]) / np.maximum(at["BM"] - at["RPE"], 1), 0, 1))
                    + 0.30 * thin("BM", 1.2)
                    + 0.15 * (z >= at["BM"]) * np.exp(-np.clip(z - at["BM"], 0, None) / 30.0))
    if has_rods:
        reflectivity = reflectivity + 0.05 * thin("ROST", 2.0)
    occupied = rng.random(grid.shape) < 0.35
    amplitude = rng.exponential(1.0, grid.shape) * occupied
    phase = np.exp(2j * np.pi * rng.random(grid.shape))
    return (np.sqrt(reflectivity / 0.35) * amplitude * phase).astype(np.complex64)


def _transfer(spec: FamilyBSpec, grid: _Grid) -> np.ndarray:
    """The coherent transfer function: a circular lateral pupil (an Airy PSF) times a
    raised-cosine axial transfer (a smooth source spectrum)."""
    fy = np.fft.fftfreq(grid.shape[0], grid.y_step)[:, None, None]
    fz = np.fft.fftfreq(grid.shape[1], spec.axial_pitch_um)[None, :, None]
    fx = np.fft.fftfreq(grid.shape[2], spec.fast_pitch_um)[None, None, :]
    # Airy intensity FWHM ≈ 0.514 / cutoff (cutoff = NA / λ in cycles/µm).
    cutoff = 0.514 / spec.psf_fwhm_um
    pupil = (np.hypot(fx, fy) <= cutoff).astype(np.float32)
    # A Hann window in fz: its PSF's intensity FWHM is about 1 / half-width.
    half_width = 1.0 / spec.axial_fwhm_um
    axial = np.where(np.abs(fz) < half_width, 0.5 + 0.5 * np.cos(np.pi * fz / half_width), 0)
    return pupil * axial.astype(np.float32)


def _mean_cone_amplitude(grid: _Grid, field, cones, surface) -> float:
    """The imaged cones' mean IS/OS amplitude: the unit of ``spec.noise``. Measured, because a
    reflector's peak after the PSF depends on the pupil, the pitch and its neighbours."""
    row, column = grid.index_of(cones)
    z = np.rint(surface("ISOS", grid.x[column], grid.y[row]) / grid.spec.axial_pitch_um)
    z = np.clip(z.astype(int), 1, grid.spec.depth - 2)
    peaks = np.max([np.abs(field[row, z + d, column]) for d in (-1, 0, 1)], axis=0)
    return float(peaks.mean())


def _scan(spec, grid: _Grid, field, shifts, cones, flicker, noise_amplitude: float, rng):
    """Each B-scan reads one row of the static field, displaced by the eye: y by picking the
    row, x and z by exact Fourier shifts. Flickering cones change brightness per B-scan."""
    volume = np.empty((spec.b_scans, spec.depth, spec.a_lines), np.complex64)
    fx = np.fft.fftfreq(len(grid.x), spec.fast_pitch_um)
    fz = np.fft.fftfreq(spec.depth, spec.axial_pitch_um)
    first = int(np.rint((0 - grid.x[0]) / spec.fast_pitch_um))
    flicker_b_scans = np.zeros(len(cones), bool)
    flicker_gain = np.zeros((spec.b_scans, len(cones)))
    flicker_gain[:, flicker] = rng.uniform(-0.6, 0.6, (spec.b_scans, int(flicker.sum())))
    row_of, column_of = grid.index_of(cones)
    for b in range(spec.b_scans):
        dx, dy, dz = shifts[b]
        row = int(np.rint((b * spec.slow_pitch_um + dy - grid.y[0]) / grid.y_step))
        line = field[row].copy()
        # Flicker: scale the cone reflections this B-scan sees by re-adding a fraction of them
        # (their PSF-imaged spot, approximated at the cone's column in this row).
        here = flicker & (row_of == row)
        flicker_b_scans |= here
        # The eye displaced by +dx shows tissue from x + dx at x (content moves by -dx);
        # axial motion +dz pushes the content deeper (+dz), as family A records it.
        line = fft.ifft(fft.fft(line, axis=1, workers=2)
                        * np.exp(2j * np.pi * fx * dx)[None, :], axis=1, workers=2)
        line = fft.ifft(fft.fft(line, axis=0, workers=2)
                        * np.exp(-2j * np.pi * fz * dz)[:, None], axis=0, workers=2)
        window = line[:, first:first + spec.a_lines]
        if here.any():
            columns = column_of[here] - first
            ok = (columns >= 0) & (columns < spec.a_lines)
            gain = 1 + flicker_gain[b, here][ok]
            window[:, columns[ok]] *= gain[None, :]
        volume[b] = window
    noise = noise_amplitude * (rng.normal(size=volume.shape)
                               + 1j * rng.normal(size=volume.shape))
    return volume + (noise / np.sqrt(2)).astype(np.complex64), flicker_b_scans


def _intensity_mapping(spec: FamilyBSpec, rng, volume: np.ndarray) -> np.ndarray:
    """What the scanner stores: linear amplitude, log amplitude in dB, or 8-bit log."""
    amplitude = np.abs(volume)
    reference = float(np.percentile(amplitude, 99.9))
    if spec.intensity == "linear":
        return np.clip(amplitude / reference * 30000, 0, 65535).astype(np.uint16)
    decibels = 20 * np.log10(np.maximum(amplitude / reference, 1e-6))
    floor = -rng.uniform(40, 55)                     # the display's dynamic range
    scaled = np.clip((decibels - floor) / (3 - floor), 0, 1)
    if spec.intensity == "log":
        return np.rint(scaled * 60000).astype(np.uint16)
    return np.rint(scaled * 255).astype(np.uint16)   # 8-bit values in the uint16 container

