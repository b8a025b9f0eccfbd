"""Per-B-scan eye motion: estimation by sub-pixel phase correlation, and correction.

Each B-scan b is taken to be displaced as a whole by ``s_b`` (pixels) along one axis. Pairs of
nearby B-scans (b, b+k), k = 1..max_lag, give relative shifts ``s_{b+k} - s_b`` by phase
correlation of 1-D profiles; a robust least-squares fit over all pairs (Huber weights) turns
them into absolute shifts, so one bad pair cannot drag its neighbours. Absolute position is
unobservable: the shifts are returned with zero mean.

Which profiles: along depth, the mean axial profile of each B-scan (layers are smooth, speckle
averages out); across A-lines, the en-face rows at the cone bands (cones are what moves
laterally, and the same cones appear in neighbouring B-scans).
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from gpu.subpixel import parabola_offset

WHITENING = 0.6      # 1 = pure phase correlation; less keeps the peak robust to speckle
HUBER_PX = 0.5       # residuals beyond this are down-weighted
# A neighbour pair is doubtful when its peak is weak and its shift far from its neighbours'.
# (Not caught: a strong wrong peak one cone spacing away, where the mosaic is regular.)
DOUBT_STRENGTH, DOUBT_DEVIATION_PX, DOUBT_NEIGHBOURS, DOUBT_RADIUS_PX = 0.7, 2.0, 3, 2
ARBITER_RADIUS_PX = 1
FAR_SUPPORT_MARGIN = 1.3


def relative_shifts(profile_sets, xp: ModuleType, lag: int, max_shift: int,
                    centre=None, radius: int | None = None):
    """Shift of B-scan b+lag relative to b, for every b, and each peak's strength.

    ``profile_sets`` is a list of (n_b_scans, length) arrays that share one shift per B-scan
    (several cone-band rows, say); their cross-power spectra are pooled before the peak is
    found. A positive shift means b+lag's content lies further along the axis. With
    ``centre`` (one value per pair) and ``radius``, each peak is searched only that close to
    its centre.
    """
    length = profile_sets[0].shape[1]
    size = 2 * length  # zero-padded: no wrap-around between the two ends
    pooled = 0
    for profiles in profile_sets:
        a = profiles[:-lag] - profiles[:-lag].mean(axis=1, keepdims=True)
        b = profiles[lag:] - profiles[lag:].mean(axis=1, keepdims=True)
        pooled = pooled + xp.conj(xp.fft.rfft(a, size)) * xp.fft.rfft(b, size)
    pooled = pooled / (xp.abs(pooled) ** WHITENING + 1e-12)
    corr = xp.fft.irfft(pooled, size)
    # Lags -max_shift..max_shift, in order.
    window = xp.concatenate([corr[:, size - max_shift:], corr[:, : max_shift + 1]], axis=1)
    scale = xp.abs(window).mean(axis=1) + 1e-12   # before masking: strengths stay comparable
    if centre is not None:
        lags = xp.arange(-max_shift, max_shift + 1)[None, :]
        allowed = xp.abs(lags - xp.asarray(centre)[:, None]) <= radius
        window = xp.where(allowed, window, window.min())
    peak = xp.clip(xp.argmax(window, axis=1), 1, window.shape[1] - 2)
    rows = xp.arange(window.shape[0])
    left, centre, right = window[rows, peak - 1], window[rows, peak], window[rows, peak + 1]
    shift = peak - max_shift + parabola_offset(left, centre, right, xp)
    return shift, centre / scale


def estimate_shifts(profile_sets, xp: ModuleType, *, max_lag: int = 1,
                    max_shift: int = 16) -> np.ndarray:
    """Absolute per-B-scan shifts (pixels, zero mean) from pooled profile sets.

    Use ``max_lag`` > 1 only where structure persists over several B-scans (the layers, for
    axial motion); cones decorrelate within ~2 µm, so lateral uses neighbour pairs alone.
    """
    n = profile_sets[0].shape[0]
    equations = []  # (b, b + lag, measured shift, weight)
    for lag in range(1, min(max_lag, n - 1) + 1):
        shift, strength = relative_shifts(profile_sets, xp, lag, max_shift)
        shift, strength = _cpu(shift), _cpu(strength)
        if lag == 1:
            shift = _recheck_doubtful_pairs(profile_sets, xp, shift, strength, max_shift)
        for b in range(n - lag):
            equations.append((b, b + lag, shift[b], strength[b] / lag))
    return _solve(n, equations)


def _recheck_doubtful_pairs(profile_sets, xp: ModuleType, shift: np.ndarray,
                            strength: np.ndarray, max_shift: int) -> np.ndarray:
    """Decide again a pair whose peak is weak and whose shift is far from its neighbours'.

    Either the eye jumped (a microsaccade: the shift is real) or speckle and a regular mosaic
    made a wrong peak win. B-scans two apart straddle the same gap, so they arbitrate: under
    each hypothesis (the far shift, or the best peak near the neighbours' motion) the two
    pairs (b-1, b+1) and (b, b+2) must show the neighbour's shift plus this one, and the
    hypothesis whose expected peaks are stronger there wins.
    """
    local = _running_median(shift, DOUBT_NEIGHBOURS)
    doubtful = ((strength < DOUBT_STRENGTH * np.median(strength))
                & (np.abs(shift - local) > DOUBT_DEVIATION_PX))
    if not doubtful.any() or len(shift) < 3:
        return shift
    nearby, _ = relative_shifts(profile_sets, xp, 1, max_shift,
                                centre=np.rint(local).astype(int), radius=DOUBT_RADIUS_PX)
    nearby = _cpu(nearby)
    far_support = _two_apart_support(profile_sets, xp, shift, shift, max_shift)
    near_support = _two_apart_support(profile_sets, xp, shift, nearby, max_shift)
    # Eye motion between two B-scans is small unless the eye jumped: the far shift stands
    # only where the pairs two apart clearly side with it.
    return np.where(doubtful & (FAR_SUPPORT_MARGIN * near_support > far_support), nearby, shift)


def _two_apart_support(profile_sets, xp: ModuleType, shift: np.ndarray,
                       hypothesis: np.ndarray, max_shift: int) -> np.ndarray:
    """For each gap b (between B-scans b and b+1): the correlation strength of the two pairs
    two apart that straddle it, each searched where ``hypothesis[b]`` puts its peak."""
    gaps = len(shift)
    # Pair i of lag 2 joins B-scans i and i+2: it straddles gaps i and i+1.
    as_first_gap = hypothesis[:-1] + shift[1:]    # pair i = b: expected s_b + s_b+1
    as_second_gap = shift[:-1] + hypothesis[1:]   # pair i = b-1: expected s_b-1 + s_b
    support = np.zeros(gaps)
    for expected, straddled in ((as_first_gap, slice(0, gaps - 1)),
                                (as_second_gap, slice(1, gaps))):
        _, found = relative_shifts(profile_sets, xp, 2, max_shift,
                                   centre=np.rint(expected).astype(int),
                                   radius=ARBITER_RADIUS_PX)
        support[straddled] += _cpu(found)
    return support


def _running_median(values: np.ndarray, half: int) -> np.ndarray:
    """Median of each value's neighbours within ``half`` (not itself: an outlier must not
    vote for itself, which edge padding would make it do at the ends)."""
    n = len(values)
    return np.array([np.median(np.r_[values[max(i - half, 0):i], values[i + 1:i + 1 + half]])
                     if n > 1 else values[i] for i in range(n)])


def _solve(n: int, equations: list[tuple[int, int, float, float]]) -> np.ndarray:
    first = np.array([e[0] for e in equations])
    second = np.array([e[1] for e in equations])
    measured = np.array([e[2] for e in equations])
    weight = np.clip(np.array([e[3] for e in equations]), 1e-6, None)
    design = np.zeros((len(equations) + 1, n))
    design[np.arange(len(equations)), second] = 1.0
    design[np.arange(len(equations)), first] = -1.0
    design[-1, :] = 1.0  # gauge: zero mean
    target = np.append(measured, 0.0)
    robust = np.ones(len(equations))
    for _ in range(5):
        w = np.sqrt(np.append(weight * robust, weight.sum()))
        solution, *_ = np.linalg.lstsq(design * w[:, None], target * w, rcond=None)
        residual = np.abs(design[:-1] @ solution - measured)
        robust = np.where(residual <= HUBER_PX, 1.0, HUBER_PX / np.maximum(residual, 1e-12))
    return solution - solution.mean()


def shift_b_scans(volume, shifts_px, axis: int, xp: ModuleType, ndimage: ModuleType):
    """Move each B-scan's content back by its shift along ``axis`` (1 = depth, 2 = A-lines),
    in place, one B-scan at a time (the extra memory is one B-scan).

    Linear interpolation: it neither rings nor invents detail; samples from outside the B-scan
    take the nearest edge value.
    """
    scratch = xp.empty_like(volume[0])
    for b, shift in enumerate(_cpu(shifts_px).tolist()):
        offset = (-shift, 0.0) if axis == 1 else (0.0, -shift)
        ndimage.shift(volume[b], offset, output=scratch, order=1, mode="nearest")
        volume[b] = scratch
    return volume


def _cpu(array) -> np.ndarray:
    return array.get() if hasattr(array, "get") else np.asarray(array)


def motion_summary(shifts_px: np.ndarray, axial_um: float, lateral_um: float) -> dict:
    """RMS and largest absolute shift per axis, in micrometres, of (b_scans, 2) shifts."""
    axial, lateral = shifts_px[:, 0] * axial_um, shifts_px[:, 1] * lateral_um
    return {"axial_rms_um": round(float(np.sqrt(np.mean(axial ** 2))), 3),
            "lateral_rms_um": round(float(np.sqrt(np.mean(lateral ** 2))), 3),
            "axial_max_abs_um": round(float(np.abs(axial).max()), 3),
            "lateral_max_abs_um": round(float(np.abs(lateral).max()), 3)}
