"""A synthetic AO-OCT volume of the outer retina with exact ground truth.

Method (shared/research/domain.md §2.6 and §3.2): cones on a jittered, slightly anisotropic
hexagonal lattice whose density follows Curcio 1990 at the chosen eccentricity, jittered enough
that about half the Voronoi cells are six-sided (as in vivo) but never closer than 0.75 of the
spacing (inner segments are packed, not stacked); smooth layer
surfaces (ELM, IS/OS, COST, RPE, BM); a complex field of diffuse speckle plus coherent cone
reflections at IS/OS and COST, blurred by the axial and lateral point-spread functions; detector
noise; and per-B-scan eye motion applied by *sampling* the static retina at displaced positions,
so the recorded shifts and surfaces are exact.

Axes follow the OPT convention: (B-scans = slow axis y, depth z, A-lines = fast axis x).
Everything here is arrays in, arrays out: no DICOM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from scipy import ndimage

# Curcio 1990 (Watson 2014 digitisation), mean over the four meridians: degrees → cones/mm².
CURCIO_ECCENTRICITY_DEG = np.array([0.0, 0.18, 0.36, 0.71, 1.07, 1.43, 1.79, 2.50, 3.57, 7.14,
                                    10.71, 17.86, 25.0])
CURCIO_DENSITY_PER_MM2 = np.array([196890, 150794, 112372, 72032, 52237, 40879, 33826, 25241,
                                   18379, 11189, 8299, 5951, 5116], dtype=float)

SURFACES = ("ELM", "ISOS", "COST", "RPE", "BM")
B_SCAN_PERIOD_S = 0.005
REFERENCE_B_SCANS = 128
AXIAL_PSF_FWHM_UM = 2.6
LATERAL_PSF_FWHM_UM = 2.5
FWHM_TO_SIGMA = 1 / (2 * np.sqrt(2 * np.log(2)))
# Cone reflections against the diffuse background: IS/OS and COST are the brightest bands.
CONE_GAIN = 1.8
MIN_SEPARATION = 0.75  # of the spacing: no two cone centres closer (packed inner segments)


@dataclass(frozen=True)
class PhantomSpec:
    seed: int = 0
    b_scans: int = 128
    depth: int = 160
    a_lines: int = 128
    lateral_spacing_um: float = 1.0     # between A-lines (x) and between B-scans (y)
    axial_spacing_um: float = 1.0
    eccentricity_deg: float = 3.0
    motion_um: float = 3.0              # RMS lateral drift over 128 B-scans (+ a microsaccade)
    axial_motion_um: float = 4.0        # amplitude of the pulsatile axial motion
    noise: float = 0.08                 # detector noise relative to the mean cone reflection
    jitter: float = 0.25                # lattice jitter as a fraction of cone spacing: with the
                                        # minimum separation, ~52 % of Voronoi cells six-sided
    dark_cone_fraction: float = 0.03
    # Which generator, and what it stores: constants of the family, not parameters.
    family: ClassVar[str] = "A"
    intensity: ClassVar[str] = "linear"

    @property
    def spacing_um(self) -> tuple[float, float, float]:
        """(B-scan pitch, axial, A-line spacing), the order of the pipeline's spacing."""
        return (self.lateral_spacing_um, self.axial_spacing_um, self.lateral_spacing_um)


@dataclass
class Phantom:
    spec: PhantomSpec                   # or gpu.phantom_b.FamilyBSpec: both have spacing_um
    voxels: np.ndarray                  # uint16 (b_scans, depth, a_lines)
    cones_um: np.ndarray                # (n, 2) x, y in the motion-free retinal frame
    cone_table: list[dict]
    shifts_um: np.ndarray               # (b_scans, 3) dx, dy, dz applied to each B-scan
    surfaces_px: dict[str, np.ndarray]  # observed depth of each surface, (b_scans, a_lines)
    surfaces_motion_free_px: dict[str, np.ndarray]
    summary: dict = field(default_factory=dict)


def curcio_density_per_mm2(eccentricity_deg: float) -> float:
    return float(np.interp(eccentricity_deg, CURCIO_ECCENTRICITY_DEG, CURCIO_DENSITY_PER_MM2))


def hexagonal_spacing_um(density_per_mm2: float) -> float:
    """Centre-to-centre distance of a hexagonal lattice with this density."""
    return float(np.sqrt(2 / (np.sqrt(3) * density_per_mm2)) * 1000)


def outer_segment_length_um(eccentricity_deg: float) -> float:
    # ~35 µm near the fovea falling to ~22 µm parafoveally (domain.md §3.2).
    return 22.0 + 13.0 * np.exp(-eccentricity_deg / 2.0)


def make_phantom(spec: PhantomSpec) -> Phantom:
    rng = np.random.default_rng(spec.seed)
    width_um = spec.a_lines * spec.lateral_spacing_um
    height_um = spec.b_scans * spec.lateral_spacing_um
    shifts = _eye_motion(spec, rng)
    margin = float(np.abs(shifts[:, :2]).max()) + 12.0

    density = curcio_density_per_mm2(spec.eccentricity_deg)
    cones = _cone_mosaic(rng, hexagonal_spacing_um(density), spec.jitter,
                         (-margin, width_um + margin), (-margin, height_um + margin))
    n = len(cones)
    isos_reflectance = rng.lognormal(0.0, 0.35, n)
    cost_reflectance = rng.lognormal(0.0, 0.35, n)
    dark = rng.random(n) < spec.dark_cone_fraction
    isos_reflectance[dark] *= 0.1
    cost_reflectance[dark] *= 0.1

    # Tissue positions seen by each A-line of each B-scan.
    x = np.arange(spec.a_lines) * spec.lateral_spacing_um
    y = np.arange(spec.b_scans) * spec.lateral_spacing_um
    seen_x = x[np.newaxis, :] + shifts[:, 0:1]
    seen_y = y[:, np.newaxis] + shifts[:, 1:2]

    surface_fn = _surface_model(spec, rng)
    motion_free = {name: surface_fn(name, x[np.newaxis, :], y[:, np.newaxis]) for name in SURFACES}
    observed = {name: surface_fn(name, seen_x, seen_y) + shifts[:, 2:3] for name in SURFACES}

    spot_sigma = LATERAL_PSF_FWHM_UM * FWHM_TO_SIGMA
    grid = _ConeMap(cones, (-margin, width_um + margin), (-margin, height_um + margin), spot_sigma)
    isos_map = grid.sample(isos_reflectance, seen_x, seen_y)
    cost_map = grid.sample(cost_reflectance, seen_x, seen_y)

    field_ = _complex_field(spec, rng, observed, isos_map, cost_map)
    amplitude = np.abs(field_)
    scale = 30000.0 / np.percentile(amplitude, 99.9)
    voxels = np.clip(amplitude * scale, 0, 65535).astype(np.uint16)

    to_px = 1.0 / spec.axial_spacing_um
    inside = ((cones[:, 0] >= 0) & (cones[:, 0] < width_um)
              & (cones[:, 1] >= 0) & (cones[:, 1] < height_um))
    os_length = outer_segment_length_um(spec.eccentricity_deg)
    cone_table = [
        {"id": i, "x_um": round(float(cx), 4), "y_um": round(float(cy), 4),
         "isos_reflectance": round(float(isos_reflectance[i]), 4),
         "cost_reflectance": round(float(cost_reflectance[i]), 4), "dark": bool(dark[i]),
         "os_length_um": round(os_length, 3)}
        for i, (cx, cy) in enumerate(cones) if inside[i]
    ]
    area_mm2 = width_um * height_um / 1e6
    summary = {
        "eccentricity_deg": spec.eccentricity_deg,
        "curcio_density_per_mm2": round(density, 1),
        "cone_count": int(inside.sum()),
        "cone_density_per_mm2": round(float(inside.sum()) / area_mm2, 1),
        "cone_spacing_um": round(hexagonal_spacing_um(density), 3),
        "outer_segment_length_um": round(os_length, 3),
        "field_um": [width_um, height_um],
        "residual_motion_free_of": "shifts_um is the exact displacement applied to each B-scan",
    }
    return Phantom(
        spec=spec, voxels=voxels, cones_um=cones[inside], cone_table=cone_table,
        shifts_um=shifts,
        surfaces_px={k: v * to_px for k, v in observed.items()},
        surfaces_motion_free_px={k: v * to_px for k, v in motion_free.items()},
        summary=summary,
    )


def _eye_motion(spec: PhantomSpec, rng: np.random.Generator) -> np.ndarray:
    """Per-B-scan (dx, dy, dz) in µm: drift, an occasional microsaccade, pulsatile axial motion."""
    b = spec.b_scans
    # A random walk whose step does not depend on the number of B-scans (drift is a speed):
    # over REFERENCE_B_SCANS its RMS about the mean is about motion_um.
    step_um = spec.motion_um * np.sqrt(6.0 / REFERENCE_B_SCANS)
    drift = np.cumsum(rng.normal(0, step_um, (b, 2)), axis=0)
    drift -= drift.mean(axis=0)
    drift[:, 1] *= 0.25  # slow-axis motion is smaller within one volume
    if spec.motion_um > 0 and rng.random() < 0.5:
        jump_at = rng.integers(b // 4, 3 * b // 4)
        drift[jump_at:, 0] += rng.choice([-1, 1]) * 2 * spec.motion_um
    t = np.arange(b) * B_SCAN_PERIOD_S
    heart_hz = rng.uniform(1.0, 1.5)
    axial = spec.axial_motion_um * (np.sin(2 * np.pi * heart_hz * t + rng.uniform(0, 2 * np.pi))
                                    + 0.3 * np.cumsum(rng.normal(0, 0.2, b)))
    return np.column_stack([drift, axial])


def _cone_mosaic(rng: np.random.Generator, spacing_um: float, jitter: float,
                 x_range: tuple[float, float], y_range: tuple[float, float]) -> np.ndarray:
    """Jittered hexagonal lattice, randomly rotated, ~10 % anisotropic (Curcio & Sloan 1992)."""
    span = max(x_range[1] - x_range[0], y_range[1] - y_range[0]) * 1.5
    n = int(span / spacing_um) + 4
    i, j = np.meshgrid(np.arange(-n, n), np.arange(-n, n))
    points = np.column_stack([(i + 0.5 * (j % 2)).ravel() * spacing_um,
                              (j * np.sqrt(3) / 2).ravel() * spacing_um])
    stretch = 1.05
    points *= [stretch, 1 / stretch]  # keeps density, stretches one axis
    angle = rng.uniform(0, np.pi)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = points @ rotation.T
    points += rng.normal(0, jitter * spacing_um, points.shape)
    points = _keep_apart(points, MIN_SEPARATION * spacing_um)
    points += [np.mean(x_range), np.mean(y_range)]
    keep = ((points[:, 0] >= x_range[0]) & (points[:, 0] < x_range[1])
            & (points[:, 1] >= y_range[0]) & (points[:, 1] < y_range[1]))
    return points[keep]


def _keep_apart(points: np.ndarray, separation_um: float) -> np.ndarray:
    """Push apart cones closer than ``separation_um``: inner segments are packed, not stacked,
    so unbounded Gaussian jitter would put two cones where the retina has room for one."""
    from scipy.spatial import cKDTree

    points = points.copy()
    for _ in range(20):
        pairs = cKDTree(points).query_pairs(separation_um, output_type="ndarray")
        if len(pairs) == 0:
            break
        apart = points[pairs[:, 1]] - points[pairs[:, 0]]
        distance = np.maximum(np.linalg.norm(apart, axis=1, keepdims=True), 1e-6)
        push = 0.5 * (separation_um - distance) * apart / distance
        np.add.at(points, pairs[:, 0], -push)
        np.add.at(points, pairs[:, 1], push)
    return points


def _surface_model(spec: PhantomSpec, rng: np.random.Generator):
    """Smooth analytic surfaces in µm below the top of the volume."""
    depth_um = spec.depth * spec.axial_spacing_um
    tilt = rng.uniform(-0.04, 0.04, 2)
    # Gentle undulations: a retina of ~12 mm radius bends < 1 µm over a 128 µm field.
    waves = [(rng.uniform(0.3, 0.8), rng.uniform(0.002, 0.01), rng.uniform(0.002, 0.01),
              rng.uniform(0, 2 * np.pi)) for _ in range(3)]
    inner_segment = rng.uniform(20.0, 26.0)
    outer_segment = outer_segment_length_um(spec.eccentricity_deg)
    offsets = {"ELM": 0.0, "ISOS": inner_segment, "COST": inner_segment + outer_segment}
    offsets["RPE"] = offsets["COST"] + 10.0
    offsets["BM"] = offsets["RPE"] + 14.0
    room = depth_um - offsets["BM"]
    if room < 30.0:
        raise ValueError(f"a depth of {depth_um:.0f} µm cannot hold the outer retina "
                         f"(ELM to BM is {offsets['BM']:.0f} µm, plus room for motion): "
                         f"use at least {offsets['BM'] + 30:.0f} µm")
    # Place the stack a little above the middle, leaving room for the waves and axial motion.
    elm0 = room * rng.uniform(0.35, 0.5)

    def surface(name: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        base = elm0 + tilt[0] * x + tilt[1] * y
        for amplitude, kx, ky, phase in waves:
            base = base + amplitude * np.cos(2 * np.pi * (kx * x + ky * y) + phase)
        thinning = 0.01 * (x - x.mean()) if name in ("COST", "RPE", "BM") else 0.0
        return base + offsets[name] + thinning

    return surface


class _ConeMap:
    """Cone reflections splatted on a fine en-face grid, then sampled at any (x, y)."""

    STEP_UM = 0.5

    def __init__(self, cones: np.ndarray, x_range, y_range, sigma_um: float):
        self.cones, self.x0, self.y0 = cones, x_range[0], y_range[0]
        self.shape = (int((y_range[1] - y_range[0]) / self.STEP_UM) + 2,
                      int((x_range[1] - x_range[0]) / self.STEP_UM) + 2)
        self.sigma_px = sigma_um / self.STEP_UM

    def sample(self, reflectance: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        grid = np.zeros(self.shape)
        cx = (self.cones[:, 0] - self.x0) / self.STEP_UM
        cy = (self.cones[:, 1] - self.y0) / self.STEP_UM
        ix, iy = np.floor(cx).astype(int), np.floor(cy).astype(int)
        fx, fy = cx - ix, cy - iy
        for dy, wy in ((0, 1 - fy), (1, fy)):       # bilinear splat keeps sub-pixel positions
            for dx, wx in ((0, 1 - fx), (1, fx)):
                np.add.at(grid, (iy + dy, ix + dx), reflectance * wy * wx)
        grid = ndimage.gaussian_filter(grid, self.sigma_px) * (2 * np.pi * self.sigma_px ** 2)
        x, y = np.broadcast_arrays(x, y)
        coords = np.stack([(y - self.y0) / self.STEP_UM, (x - self.x0) / self.STEP_UM])
        return ndimage.map_coordinates(grid, coords, order=1, mode="nearest")


def _complex_field(spec: PhantomSpec, rng: np.random.Generator, surfaces: dict,
                   isos_map: np.ndarray, cost_map: np.ndarray) -> np.ndarray:
    shape = (spec.b_scans, spec.depth, spec.a_lines)
    z = (np.arange(spec.depth) * spec.axial_spacing_um)[np.newaxis, :, np.newaxis]
    at = {name: surf[:, np.newaxis, :] for name, surf in surfaces.items()}
    band_sigma = 1.2

    def band(name: str, offset: float = 0.0, sigma: float = band_sigma) -> np.ndarray:
        return np.exp(-0.5 * ((z - at[name] - offset) / sigma) ** 2)

    def between(top: str, bottom: str) -> np.ndarray:
        return ((z >= at[top]) & (z < at[bottom])).astype(np.float32)

    # Diffuse reflectivity of each layer (relative; domain.md §3.2 bright/dark table).
    diffuse = (0.05 * (z < at["ELM"]) + 0.60 * band("ELM", sigma=1.0)
               + 0.07 * between("ELM", "ISOS") + 0.03 * band("ISOS")
               + 0.03 * between("ISOS", "COST") + 0.15 * band("COST", 6.0, 2.0)
               + 0.55 * between("RPE", "BM") + 0.35 * band("BM", sigma=1.0)
               + 0.20 * (z >= at["BM"]) * np.exp(-np.clip(z - at["BM"], 0, None) / 40.0))
    speckle = (rng.normal(size=shape) + 1j * rng.normal(size=shape)) / np.sqrt(2)
    axial_sigma = AXIAL_PSF_FWHM_UM * FWHM_TO_SIGMA / spec.axial_spacing_um
    lateral_sigma = LATERAL_PSF_FWHM_UM * FWHM_TO_SIGMA / spec.lateral_spacing_um
    sigmas = (0, axial_sigma, lateral_sigma)
    # Blurring the random field by the PSF is what gives speckle its grain size.
    field_ = np.sqrt(diffuse) * speckle
    field_ = (ndimage.gaussian_filter(field_.real, sigmas)
              + 1j * ndimage.gaussian_filter(field_.imag, sigmas))
    field_ *= np.sqrt(diffuse.mean() / max(np.mean(np.abs(field_) ** 2), 1e-12))
    # Cones are coherent waveguides: a bright, speckle-free reflection with its own phase.
    # Their en-face spots already carry the lateral PSF, and band() the axial one.
    phase = np.exp(1j * rng.uniform(0, 2 * np.pi, (2, spec.b_scans, 1, spec.a_lines)))
    field_ = field_ + CONE_GAIN * np.sqrt(isos_map[:, np.newaxis, :]) * band("ISOS") * phase[0]
    field_ = field_ + CONE_GAIN * np.sqrt(cost_map[:, np.newaxis, :]) * band("COST") * phase[1]
    noise = (rng.normal(size=shape) + 1j * rng.normal(size=shape)) * spec.noise / np.sqrt(2)
    return field_ + noise

