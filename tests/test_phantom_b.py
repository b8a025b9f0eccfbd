"""Phantom family B, the independently designed generator, and the preprocessing that must hold
on it: a log-compressed volume linearised, COST found above a rod-tip band."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from dicom.volume import read_volume
from gpu import layers
from gpu.phantom_b import FamilyBSpec, density_per_mm2, make_phantom_b
from gpu.quantify import mosaic_metrics
from gpu.training import family_b_spec, prepare, true_surfaces_px
from tests.conftest import AOMAS

EDGE = slice(8, -8)   # A-lines at the edge, where correction shifted in no data
SURFACE_MAE_MAX_PX = 0.75
# BM is found ~1 px below its truth in both families: the steepest fall of the slab lies past
# Bruch's membrane's thin bright line. A known gap (issue 13), bounded here so it grows no worse.
BM_MAE_MAX_PX = 1.2


def surface_errors(spec: FamilyBSpec) -> dict[str, float]:
    phantom, prepared = prepare(spec)
    truth = true_surfaces_px(phantom, prepared)
    return {name: float(np.abs(prepared.surfaces_px[name] - truth[name])[:, EDGE].mean())
            for name in truth}


def test_mosaic_density_disorder_rods_and_cone_kinds():
    for eccentricity in (1.5, 4.0, 10.0):
        phantom = make_phantom_b(FamilyBSpec(seed=1, b_scans=128, a_lines=160,
                                             eccentricity_deg=eccentricity, motion_um=0))
        model = phantom.summary["model_density_per_mm2"]
        assert model == pytest.approx(float(density_per_mm2(eccentricity)), rel=0.02)
        measured = phantom.summary["cone_density_per_mm2"]
        assert abs(measured / model - 1) < 0.08, (eccentricity, measured, model)
        metrics = mosaic_metrics(phantom.cones_um, tuple(phantom.summary["field_um"]))
        # More disordered than family A's lattice: about half the cells six-sided.
        assert 40 <= metrics["hexagonal_percent"] <= 58, metrics
        kinds = {cone["kind"] for cone in phantom.cone_table}
        assert {"normal", "dark_isos", "dark_cost"} <= kinds
        assert any(kind.endswith("+flicker") for kind in kinds)
        rods = phantom.summary["rod_count"]
        if eccentricity < 2:
            assert rods == 0
        else:
            assert rods > phantom.summary["cone_count"]


def test_same_seed_same_volume():
    spec = FamilyBSpec(seed=5, b_scans=32, a_lines=64, intensity="log")
    assert np.array_equal(make_phantom_b(spec).voxels, make_phantom_b(spec).voxels)
    other = FamilyBSpec(seed=6, b_scans=32, a_lines=64, intensity="log")
    assert not np.array_equal(make_phantom_b(spec).voxels, make_phantom_b(other).voxels)


def test_intensity_mappings_are_told_apart():
    for mapping, log_compressed in (("linear", False), ("log", True), ("8bit", True)):
        voxels = make_phantom_b(FamilyBSpec(seed=2, b_scans=48, intensity=mapping)).voxels
        assert voxels.dtype == np.uint16
        assert layers.is_log_compressed(voxels, np) is log_compressed, mapping
        if mapping == "8bit":
            assert voxels.max() <= 255


def test_a_log_compressed_volume_is_linearised_before_its_surfaces(monkeypatch):
    spec = FamilyBSpec(seed=1, eccentricity_deg=3.0, intensity="log", fast_pitch_um=0.8,
                       slow_pitch_um=1.2)
    errors = surface_errors(spec)
    assert max(errors[name] for name in ("ELM", "ISOS", "COST", "RPE")) <= SURFACE_MAE_MAX_PX, \
        errors
    assert errors["BM"] <= BM_MAE_MAX_PX, errors
    linearised = prepare(spec)[1].band_contrast
    # Without linearising, the log folds the bands nearly flat: a fraction of the contrast
    # is left, and the slab's edges are found less well.
    monkeypatch.setattr(layers, "LOG_SKEWNESS_BELOW", -10.0)
    assert prepare(spec)[1].band_contrast < 0.25 * linearised
    folded = surface_errors(spec)
    assert folded["RPE"] > errors["RPE"] and folded["BM"] > errors["BM"], (folded, errors)


@pytest.mark.parametrize("eccentricity", [6.0, 10.0])
def test_cost_is_found_above_the_rod_tip_band(monkeypatch, eccentricity):
    spec = FamilyBSpec(seed=1, eccentricity_deg=eccentricity,
                       intensity="8bit" if eccentricity < 8 else "linear",
                       fast_pitch_um=1.2 if eccentricity < 8 else 1.5,
                       slow_pitch_um=1.0 if eccentricity < 8 else 1.5)
    errors = surface_errors(spec)
    assert max(errors[name] for name in ("ELM", "ISOS", "COST")) <= SURFACE_MAE_MAX_PX, errors
    # The brightest peak instead of the shallowest clear one: COST lands on the rod tips.
    monkeypatch.setattr(layers, "SHALLOWEST_PEAK_FRACTION", 1.0)
    assert surface_errors(spec)["COST"] > 2.0


def test_aomas_phantom_family_b_writes_anisotropic_opt(tmp_path):
    out = tmp_path / "b"
    done = subprocess.run(
        [AOMAS, "phantom", "--out", str(out), "--seed", "3",
         "--family", "B", "--intensity", "8bit", "--pitch-um", "0.8x1.2",
         "--size", "48x160x96"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "family B" in done.stdout
    volume = read_volume(sorted((out / "dicom").glob("*.dcm")))
    assert volume.voxels.shape == (48, 160, 96)
    assert volume.spacing_mm == pytest.approx((0.0012, 0.001, 0.0008))
    truth = json.loads((out / "ground_truth.json").read_text())
    assert truth["spec"]["family"] == "B" and truth["summary"]["intensity"] == "8bit"
    refused = subprocess.run(
        [AOMAS, "phantom", "--out", str(tmp_path / "a"),
         "--intensity", "log"], capture_output=True, text=True)
    assert refused.returncode != 0 and "family B" in refused.stderr


@pytest.mark.parametrize("seed", [5, 13])
def test_surfaces_where_cost_outshines_or_merges_with_the_rpe(seed):
    # Training draws that once broke the RPE search: at 1.7° COST is brighter than the RPE
    # slab (seed 5, refused outright); at 6.5° COST, the rod tips and the RPE merge into one
    # bright complex (seed 13, every surface one layer too shallow).
    errors = surface_errors(family_b_spec(seed))
    assert max(errors[name] for name in ("ELM", "ISOS", "COST", "RPE")) <= SURFACE_MAE_MAX_PX, \
        errors
    assert errors["BM"] <= BM_MAE_MAX_PX, errors
