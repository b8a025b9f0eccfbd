"""The run result is one declared type: what the pipeline returns is what the worker stores and
every reader gets back, its review tiles are stored once (the tiles table), and a result
recorded by an older version still reads."""

from __future__ import annotations

import json

import pytest

from appliance.run_result import Arrays, RunResult, json_path


def test_the_stored_result_reads_back_as_the_same_result(run_outputs):
    typed = run_outputs["run_result"]
    stored = json.loads(json.dumps(typed.to_json(), sort_keys=True))   # as runs.succeed does
    again = RunResult.from_json(stored)
    assert again == typed and again.to_json() == typed.to_json()
    assert again.output("report").kind == "report" and again.artifacts.preprocessed_npz
    assert again.volume.enface_pixel_um == (1.0, 1.0) and again.volume.axial_um == 1.0
    with pytest.raises(KeyError, match="no cone_seg_labelmap output"):
        again.output("cone_seg_labelmap")


def test_the_review_tiles_are_stored_once(run_outputs):
    typed = run_outputs["run_result"]
    assert typed.review_tiles is not None and len(typed.review_tiles.tiles) > 0
    assert "review_tiles" not in run_outputs["result"]     # the tiles table is their home
    assert "tiles" not in run_outputs["npz"].files
    declared = {Arrays.SHIFTS_PX, Arrays.CONE_PROBABILITY, Arrays.CONE_UNCERTAINTY,
                Arrays.CONES_PX, Arrays.LAYER_LABELS, Arrays.B_SCAN_CONFIDENCE,
                *(Arrays.surface(name) for name in ("ELM", "ISOS", "COST", "RPE", "BM")),
                Arrays.enface("ISOS"), Arrays.enface("COST"),
                *(Arrays.thickness(name) for name in ("inner_segment_um",
                                                      "outer_segment_length_um", "rpe_um"))}
    assert set(run_outputs["npz"].files) == declared


def test_a_result_recorded_before_the_declaration_still_reads(run_outputs):
    older = dict(run_outputs["result"])
    for later in ("cone_scale", "spectral_spacing"):
        del older[later]
    older["needs_review"] = {k: v for k, v in older["needs_review"].items()
                             if k in ("flag", "reasons", "expected_detection_error")}
    older["review_tiles"] = {"tile_px": 32, "enface_shape": [24, 64], "tiles": []}
    result = RunResult.from_json(older)
    assert result.cone_scale is None and result.spectral_spacing is None
    assert result.needs_review.spectral_check == "not run" and result.review_tiles is None


def test_a_json_path_names_a_declared_field():
    assert json_path("artifacts", "preprocessed_npz") == "$.artifacts.preprocessed_npz"
    with pytest.raises(KeyError, match="artifacts.npz is not a field"):
        json_path("artifacts", "npz")
