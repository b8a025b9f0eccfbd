"""Retraining from reviewed labels (issue 16, point 9): a new STAGING version whose card names
its parent, the label versions it learnt from and its gate figures; trained in a process of
its own under a memory cap; never promoted by itself."""

from __future__ import annotations

import time

import numpy as np
import pytest

from appliance import gates, retraining, routing
from appliance.exceptions import AomasError, InvalidInput
from appliance.registry import BOOTSTRAP_DIR, PRODUCTION, register_directory
from gpu.cone_model import cone_target
from tests.conftest import WebApp, png_of

BUNDLED = "aomas-bootstrap-v3"
SHAPE = (64, 64)
QUICK = {"iterations": 5, "phantom_seeds": "100", "calibration_seeds": "200"}


@pytest.fixture
def reviewed(tmp_path, monkeypatch) -> WebApp:
    from appliance.access import accounts

    monkeypatch.setattr(accounts, "SCRYPT", {"n": 2**4, "r": 8, "p": 1})
    web = WebApp(tmp_path, models__evaluation_seeds="1")
    register_directory(web.db, web.store, BOOTSTRAP_DIR, actor="test", stage=PRODUCTION)
    rows, columns = np.mgrid[4:60:8, 4:60:8]
    cones_px = np.column_stack([rows.ravel(), columns.ravel()]).astype(float)
    run_id = web.seed_run(SHAPE, 32, number=20, cones_px=cones_px, model_id=BUNDLED,
                          probability=cone_target(SHAPE, cones_px).astype(np.float32))
    lena = web.client("lena")
    for tile in list(web.db["tiles"].rows_where("run_id = ?", [run_id]))[:2]:
        # The reviewer removes the model's cones in the tile's upper half.
        mask = cone_target((tile["height_px"], tile["width_px"]), cones_px - [
            tile["row_px"], tile["column_px"]]) > 0
        mask[: tile["height_px"] // 2] = False
        assert lena.post("/api/v1/labels", json={"tile_id": tile["tile_id"], "base_version": 0,
                                                 "mask_png": png_of(mask)}).status_code == 201
    return web


def test_a_retrained_version_is_staging_with_its_parent_labels_and_gate(reviewed,
                                                                         monkeypatch):
    web = reviewed
    tiles = retraining.reviewed_tiles(web.db)
    assert len(tiles) == 2
    # The API's action, with the quick settings a test can afford.
    monkeypatch.setattr(retraining, "DEFAULT_PHANTOM_SEEDS", QUICK["phantom_seeds"])
    monkeypatch.setattr(retraining, "DEFAULT_CALIBRATION_SEEDS", QUICK["calibration_seeds"])
    mia = web.client("mia")
    assert web.client("lena").post("/api/v1/models/train-from-reviews",
                                   json={"model_id": "x"}).status_code == 403
    refused = mia.post("/api/v1/models/train-from-reviews", json={"model_id": BUNDLED})
    assert refused.status_code == 422 and "registered already" in refused.get_json()["error"]
    started = mia.post("/api/v1/models/train-from-reviews",
                       json={"model_id": "site-retrained-1", "iterations": 5})
    assert started.status_code == 202, started.get_data(True)
    again = mia.post("/api/v1/models/train-from-reviews",
                     json={"model_id": "site-retrained-2", "iterations": 5})
    assert again.status_code == 200 and not again.get_json()["started"]  # one at a time
    deadline = time.monotonic() + 600
    while (answer := mia.get("/api/v1/models/site-retrained-1")).status_code == 404 or \
            not answer.get_json()["gate_results"]:
        assert time.monotonic() < deadline, "the retraining did not finish"
        time.sleep(1)
    model = answer.get_json()
    assert model["stage"] == "STAGING" and model["parent"] == BUNDLED
    assert model["history"][0]["actor"] == "mia"
    card = model["card"]
    assert card["data_hash"] == retraining.label_data_hash(tiles)
    assert card["label_versions"] == {str(t["tile_id"]): 1 for t in tiles}
    assert set(card["gate_figures"]) >= {"f1_mean", "ece"} and card["evaluation_seeds"] == [1]
    (gate,) = model["gate_results"]
    assert gate["f1_mean"] == card["gate_figures"]["f1_mean"]
    assert gate["evaluation_set_sha256"] == gates.evaluation_set("1")["sha256"]
    # Never promoted by itself: production is still the parent.
    assert routing.pointers(web.db)["production"]["model_id"] == BUNDLED
    # The weights differ from the parent's (the cone network learnt), the layers did not.
    assert model["weights_sha256"] != web.appliance.model.weights_sha256
    with pytest.raises(InvalidInput, match="registered already"):
        retraining.train_from_reviews(web.db, web.store, web.config, actor="mia",
                                      model_id="site-retrained-1", **QUICK)


def test_retraining_is_refused_on_evaluation_seeds_and_stopped_at_its_memory_cap(
        reviewed, tmp_path):
    web = reviewed
    with pytest.raises(InvalidInput, match="evaluation set"):
        retraining.train_from_reviews(web.db, web.store, web.config, actor="mia",
                                      model_id="x", **{**QUICK, "phantom_seeds": "1"})
    capped = WebApp(tmp_path, models__evaluation_seeds="1", models__training_memory_mb=300)
    with pytest.raises(AomasError, match="training_memory_mb"):
        retraining.train_from_reviews(capped.db, capped.store, capped.config, actor="mia",
                                      model_id="too-big", log=lambda _: None, **QUICK)
    assert capped.db["models"].count_where("model_id = 'too-big'") == 0
