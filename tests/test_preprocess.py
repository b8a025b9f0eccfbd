"""Preprocessing against phantom ground truth (issue 3 goals; thresholds a little looser).

Conventions: a shift is the displacement of a B-scan's content (axial: down; lateral: towards
higher A-line numbers). The phantom records the tissue position each A-line saw, so its lateral
content displacement is -dx. Absolute position is unobservable; errors are compared after
removing the mean.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from appliance.demo.study import write_phantom_study
from gpu.layers import NoPhotoreceptorLayer, detect_surfaces, normalise
from gpu.phantom import PhantomSpec
from gpu.scoring import detrended_rms
from gpu.training import phantom_spec, prepare
from tests.conftest import storescu

SEEDS = (3, 4, 5, 6)   # seed 3 and 6 each contain one mis-registered B-scan pair: kept on purpose
SURFACE_MAE_PX = 0.75  # goal: 1 px
PAIR_ERROR_PX = 0.25   # median B-scan-to-B-scan residual; measured 0.10-0.13
AXIAL_RESIDUAL_PX = 0.6  # goal 0.5; measured 0.26-0.50 after removing a quadratic


@pytest.fixture(scope="module")
def processed():
    return [prepare(PhantomSpec(seed=seed)) for seed in SEEDS]


def true_shifts(phantom) -> np.ndarray:
    return np.column_stack([phantom.shifts_um[:, 2], -phantom.shifts_um[:, 0]])


def pair_error(estimated: np.ndarray, truth: np.ndarray) -> float:
    """Median error of the B-scan-to-B-scan motion (what blurs and tears the en-face image)."""
    return float(np.median(np.abs(np.diff(estimated - truth))))


def test_lateral_motion_between_neighbouring_b_scans_is_recovered(processed):
    for phantom, result in processed:
        truth = true_shifts(phantom)[:, 1]
        assert pair_error(result.shifts_px[:, 1], truth) <= PAIR_ERROR_PX
        # The check can fail: leaving the motion uncorrected does.
        assert pair_error(np.zeros_like(truth), truth) > PAIR_ERROR_PX


@pytest.mark.parametrize("seed", [4, 5])
def test_a_microsaccade_is_kept_not_smoothed_away(seed):
    # These varied phantoms jump by 5-6 µm between two B-scans; the weak peak of that pair
    # once made the estimator re-search near the neighbours' motion and lose the jump.
    phantom, result = prepare(phantom_spec(seed))
    truth = np.diff(true_shifts(phantom)[:, 1])
    jump = int(np.argmax(np.abs(truth)))
    assert abs(truth[jump]) > 4.0
    assert abs(np.diff(result.shifts_px[:, 1])[jump] - truth[jump]) < 0.5


def test_axial_motion_is_recovered(processed):
    for phantom, result in processed:
        truth = true_shifts(phantom)[:, 0]
        assert pair_error(result.shifts_px[:, 0], truth) <= PAIR_ERROR_PX
        # Less a quadratic over B-scans: retinal tilt and curvature along the slow axis cannot
        # be told from slow axial motion, so correction flattens them too.
        residual = detrended_rms(result.shifts_px[:, 0] - truth, degree=2)
        assert residual <= AXIAL_RESIDUAL_PX
        assert detrended_rms(-truth, degree=2) > residual  # uncorrected motion is worse


def test_surfaces_are_found_within_a_pixel(processed):
    for phantom, result in processed:
        shifts = result.shifts_px
        a_lines = np.arange(phantom.voxels.shape[2])
        for name in ("ELM", "ISOS", "COST", "RPE"):
            # Back into the raw frame: a feature at corrected (z, x) was at (z + sz, x + sx).
            raw = np.stack([np.interp(a_lines - shifts[b, 1], a_lines, result.surfaces_px[name][b])
                            + shifts[b, 0] for b in range(len(shifts))])
            error = np.abs(raw - phantom.surfaces_px[name])[:, 8:-8].mean()
            assert error <= SURFACE_MAE_PX, (phantom.spec.seed, name, error)


def test_enface_shows_the_cones_where_the_truth_has_them(processed):
    phantom, result = processed[1]
    enface = result.enface["ISOS"]
    cones = phantom.cones_um  # motion-free frame; en-face is motion-corrected up to its mean
    shift = -result.shifts_px[:, 1].mean() + true_shifts(phantom)[:, 1].mean()
    rows = np.clip(np.rint(cones[:, 1]).astype(int), 0, enface.shape[0] - 1)
    cols = np.clip(np.rint(cones[:, 0] + shift).astype(int), 0, enface.shape[1] - 1)
    assert enface[rows, cols].mean() > 1.3 * enface.mean()


def test_a_volume_without_photoreceptors_is_refused():
    noise = np.random.default_rng(0).rayleigh(1000, (32, 160, 64)).astype(np.uint16)
    with pytest.raises(NoPhotoreceptorLayer, match="no photoreceptor layer"):
        detect_surfaces(normalise(noise, np), 1.0, 1.0, np, ndimage)


def test_a_phantom_over_dicom_gets_motion_layers_cones_and_a_qc_snapshot(box, tmp_path):
    truth = write_phantom_study(tmp_path / "p", PhantomSpec(seed=8, b_scans=64, depth=160,
                                                            a_lines=96))
    box.start()
    assert storescu(box.dicom_port, tmp_path / "p" / "dicom").returncode == 0
    run = box.wait_for_run(truth["series_instance_uid"], timeout=120)
    assert run["state"] == "SUCCEEDED", run["reason"]
    result = json.loads(run["result"])
    expected_os = truth["summary"]["outer_segment_length_um"]
    assert abs(result["layers"]["outer_segment_length_um"] - expected_os) < 1.5
    assert result["motion"]["axial_rms_um"] > 0.5  # the phantom moved, and it was measured
    true_density = truth["summary"]["cone_density_per_mm2"]
    found = result["cones"]["cone_density_per_mm2"]
    assert abs(found - true_density) / true_density < 0.10, (found, true_density)
    assert len(result["cone_regions"]) == 4 and len(result["most_uncertain_tiles"]) == 5
    assert len(result["layers"]["regions"]) == 4
    # The layer network and the surface detector read the same layers.
    assert min(result["layer_segmentation"]["agreement_dice"].values()) > 0.9
    assert json.loads(run["manifest"])["model"]["id"] == "aomas-bootstrap-v3"
    png = box.data_dir / "objects" / result["artifacts"]["qc_png"][:2] / \
        result["artifacts"]["qc_png"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("kind, reason", [
    ("small", "too small to analyse"), ("noise", "no photoreceptor layer")])
def test_unusable_volumes_fail_with_a_reason(box, tmp_path, kind, reason):
    from dicom.opt import OptStudy, uid_from, write_opt

    rng = np.random.default_rng(1)
    voxels = (rng.integers(0, 4000, (8, 160, 64)) if kind == "small"
              else rng.rayleigh(1000, (32, 160, 64))).astype(np.uint16)
    series = uid_from("unusable", kind)
    study = OptStudy(patient_name="UNUSABLE^" + kind.upper(), patient_id="U-1",
                     study_instance_uid=uid_from("unusable-study"), series_instance_uid=series,
                     frame_of_reference_uid=uid_from("unusable-for", kind))
    paths = write_opt(voxels, (0.001, 0.001, 0.001), study, tmp_path / kind)
    box.start()
    assert storescu(box.dicom_port, *paths).returncode == 0
    run = box.wait_for_run(series, timeout=60)
    assert run["state"] == "FAILED"
    assert reason in run["reason"]


def test_the_gpu_path_imports_without_cuda_and_falls_back(monkeypatch):
    import gpu.xp

    monkeypatch.setenv("AOMAS_GPU", "off")
    assert gpu.xp.array_module() is np
    monkeypatch.setenv("AOMAS_GPU", "auto")
    expected = gpu.xp.cupy_or_none() or np  # NumPy on a machine without a usable GPU
    assert gpu.xp.array_module() is expected
    assert gpu.xp.ndimage_for(np) is ndimage
