"""The bootstrap model's two networks on held-out phantoms (issue 3 goals, thresholds a little
looser), and proof that these checks fail when the networks are not trained."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open

from appliance.evaluation import TRAIN_SEEDS
from appliance.exceptions import ConfigurationError
from appliance.registry import BOOTSTRAP_DIR, WEIGHTS, load_network, model_record
from appliance.storage import sha256_of
from gpu import cone_model, layer_model
from gpu.calibration import Calibration, assess, review_tiles
from gpu.predictor import TorchPredictor
from gpu.scoring import score_cones, score_layers
from gpu.training import make_sample, phantom_spec, train

HELD_OUT = (21, 22, 23)    # not training seeds, not the model card's held-out seeds either
F1_MIN = 0.93              # goal 0.95
DENSITY_ERROR_MAX = 6.0    # percent; goal 5
HEXAGONAL_POINTS_MAX = 12  # goal 10
LAYER_DICE_MIN = 0.95      # no goal in the issue; measured 0.98-0.99


def cones() -> TorchPredictor:
    return TorchPredictor(load_network(model_record(), "cones"), cone_model.IO)


@pytest.fixture(scope="module")
def samples():
    assert not set(HELD_OUT) & set(TRAIN_SEEDS)
    return [make_sample(phantom_spec(seed)) for seed in HELD_OUT]


def meets_goals(rows) -> bool:
    f1 = min(r["f1"] for r in rows)
    density_error = max(abs(r["density_error_percent"]) for r in rows)
    hexagonal = max(abs(r["hexagonal_found"] - r["hexagonal_true"]) for r in rows)
    return f1 >= F1_MIN and density_error <= DENSITY_ERROR_MAX and \
        hexagonal <= HEXAGONAL_POINTS_MAX


def test_the_bootstrap_model_finds_the_cones(samples):
    rows = score_cones(cones(), samples)
    assert meets_goals(rows), rows


def test_an_untrained_network_does_not(samples):
    torch.manual_seed(0)
    rows = score_cones(TorchPredictor(cone_model.build_network().eval(), cone_model.IO),
                       samples)
    assert not meets_goals(rows)
    assert min(r["f1"] for r in rows) < 0.5


def worst_dice(rows) -> float:
    return min(v for r in rows for k, v in r.items() if k.startswith("dice_"))


def test_the_layer_network_labels_the_layers_and_an_untrained_one_does_not(samples):
    trained = TorchPredictor(load_network(model_record(), "layers"), layer_model.IO)
    assert worst_dice(score_layers(trained, samples)) >= LAYER_DICE_MIN
    torch.manual_seed(0)
    untrained = TorchPredictor(layer_model.build_network().eval(), layer_model.IO)
    assert worst_dice(score_layers(untrained, samples)) < 0.5


def test_the_model_card_tells_the_truth():
    card = json.loads((BOOTSTRAP_DIR / "model_card.json").read_text())
    assert "Synthetic phantoms only" in card["trained_on"]
    assert not set(card["training_seeds"]) & set(card["held_out_seeds"])
    assert card["weights_sha256"] == sha256_of(BOOTSTRAP_DIR / WEIGHTS)[0]
    assert card["training_families"] == ["A", "B"]
    assert not set(card["calibration"]["detection"]["seeds"]) & (
        set(card["training_seeds"]) | set(card["held_out_seeds"]))
    assert card["held_out_summary"]["A"]["f1_min"] >= 0.95
    assert min(card["held_out_summary"][f]["layer_dice_min"] for f in "AB") >= 0.93
    # Family B is reported whatever it shows (its worst condition is far below family A's).
    assert card["held_out_summary"]["B"]["f1_min"] > 0
    for family in "AB":
        detection = card["held_out_calibration"][family]["detection"]
        assert detection["ece"] <= 0.05 and detection["ece_95"][0] <= detection["ece"]
    assert card["limitations"]
    with safe_open(BOOTSTRAP_DIR / WEIGHTS, "pt") as weights:   # tensors only, no pickle
        assert {key.split(".")[0] for key in weights.keys()} == {"cones", "layers"}
    assert not list(BOOTSTRAP_DIR.glob("*.pt"))


def test_weights_are_checked_on_every_load_and_a_pickle_is_refused(tmp_path):
    changed = tmp_path / "changed"
    shutil.copytree(BOOTSTRAP_DIR, changed)
    record = model_record(str(changed))
    with (changed / WEIGHTS).open("r+b") as weights:   # one byte of one tensor, after the header
        weights.seek(-3, 2)
        byte = weights.read(1)
        weights.seek(-3, 2)
        weights.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ConfigurationError, match="changed since they were recorded"):
        load_network(record, "cones")
    pickled = tmp_path / "pickled"
    shutil.copytree(BOOTSTRAP_DIR, pickled)
    torch.save({"cones": {}}, pickled / WEIGHTS)   # a pickle under the expected name
    with pytest.raises(ConfigurationError, match="not a safetensors file"):
        load_network(model_record(str(pickled)), "cones")


@pytest.mark.parametrize("network", ["cones", "layers"])
def test_training_is_deterministic(network):
    tiny = [make_sample(phantom_spec(seed)) for seed in (200, 201)]
    first = train(network, tiny, iterations=3, batch_size=2, log=lambda _: None).state_dict()
    second = train(network, tiny, iterations=3, batch_size=2, log=lambda _: None).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_monte_carlo_dropout_gives_uncertainty_and_ranked_tiles(samples):
    predictor = cones()
    mean, spread = predictor.predict_with_uncertainty(samples[0].image, samples=4)
    assert mean.shape == spread.shape == samples[0].target.shape
    assert spread.max() > 0 and np.all(spread >= 0)
    tiles = review_tiles(assess(mean, Calibration()), spread, 32)
    assert len(tiles) == 4 * 4 or len(tiles) == int(np.ceil(mean.shape[0] / 32)) * int(
        np.ceil(mean.shape[1] / 32))
    values = [t["error_probability"] for t in tiles]
    assert values == sorted(values, reverse=True)
    assert all(0 <= v <= 1 for v in values) and any(t["mean_uncertainty"] > 0 for t in tiles)


def test_monte_carlo_dropout_is_reproducible_and_leaves_the_random_state_alone(samples):
    predictor = cones()
    state = torch.random.get_rng_state()
    first = predictor.predict_with_uncertainty(samples[0].image, samples=3)
    second = predictor.predict_with_uncertainty(samples[0].image, samples=3)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("name, module", [("cones", cone_model), ("layers", layer_model)])
def test_the_onnx_export_for_tensorrt_computes_what_torch_does(tmp_path, name, module):
    import onnxruntime

    from gpu.predictor import INPUT_NAME, export_onnx

    network = load_network(model_record(), name)
    export_onnx(network, module.IO, tmp_path / f"{name}.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / f"{name}.onnx"),
                                           providers=["CPUExecutionProvider"])
    shape = (3, module.IO.in_channels, *module.IO.patch_px)
    batch = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    with torch.no_grad():
        expected = network(torch.from_numpy(batch)).numpy()
    exported = session.run(None, {INPUT_NAME: batch})[0]
    assert exported.shape == expected.shape == (3, module.IO.out_channels, *module.IO.patch_px)
    assert np.abs(exported - expected).max() < 1e-4


def test_test_time_augmentation_maps_every_view_back(samples):
    from gpu.predictor import dihedral_average

    predictor = cones()
    mean, spread = dihedral_average(predictor.predict, samples[0].image)
    plain = predictor.predict(samples[0].image)
    # Views mapped back land where the cones are: the average agrees with the plain map.
    assert np.corrcoef(mean.ravel(), plain.ravel())[0, 1] > 0.95
    assert spread.shape == plain.shape and spread.min() >= 0
