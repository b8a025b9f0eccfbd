"""Calibration (issue 13, point 4-5): the metric against torchmetrics' own arithmetic on cases
worked by hand, the Platt fit recovering a known map, tile error probabilities, and the bundled
model's calibrated confidences and review tiles on phantoms it never saw."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.evaluation import CALIBRATION_SEEDS, HELD_OUT_SEEDS, TRAIN_SEEDS, fit_calibration
from appliance.pipeline import needs_review
from appliance.registry import load_network, model_card, model_record
from gpu import calibration, cone_model
from gpu.calibration import Calibration
from gpu.predictor import TorchPredictor
from gpu.scoring import REVIEW_THRESHOLD, score_calibration, score_cone_map
from gpu.training import family_b_spec, make_sample, phantom_spec

# Neither training, calibration nor the card's held-out seeds.
UNSEEN = {"A": (31, 32), "B": (31, 32, 33, 34)}
DETECTION_ECE_MAX = 0.08   # goal 0.05


def test_ece_by_hand():
    confidence = np.full(1000, 0.9)
    assert calibration.expected_calibration_error(confidence, np.arange(1000) < 900) == \
        pytest.approx(0.0, abs=1e-4)
    assert calibration.expected_calibration_error(confidence, np.arange(1000) < 500) == \
        pytest.approx(0.4, abs=1e-4)
    # Two bins, each off by 0.1, weighted by their share.
    two = np.r_[np.full(300, 0.2), np.full(700, 0.8)]
    correct = np.r_[np.arange(300) < 90, np.arange(700) < 490]
    assert calibration.expected_calibration_error(two, correct) == pytest.approx(0.1, abs=1e-4)
    interval = calibration.ece_with_interval(two, correct)
    assert interval["ece_95"][0] <= interval["ece"] <= interval["ece_95"][1]


def test_platt_fit_recovers_a_known_map():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.02, 0.98, 20_000)
    truth = Calibration(temperature=2.0, bias=-0.7)
    labels = rng.random(p.size) < truth.confidence(p)
    fitted = calibration.fit(p, labels)
    assert fitted.temperature == pytest.approx(2.0, rel=0.1)
    assert fitted.bias == pytest.approx(-0.7, abs=0.1)
    assert calibration.expected_calibration_error(fitted.confidence(p), labels) < 0.02
    assert calibration.expected_calibration_error(p, labels) > 0.1


def test_tile_error_probability_combines_false_and_missed_cones():
    centres = np.array([[5.0, 5.0], [5.0, 40.0], [40.0, 5.0]])
    peak = np.array([0.9, 0.9, 0.2])          # two detections, one candidate below threshold
    confidence = np.array([0.99, 0.6, 0.5])   # P(each candidate is a cone)
    error = calibration.tile_error_probability(
        calibration.Candidates(centres, peak, confidence), (64, 64), 32)
    assert error[0, 0] == pytest.approx(0.01)  # a likely-true detection
    assert error[0, 1] == pytest.approx(0.4)   # a doubtful detection
    assert error[1, 0] == pytest.approx(0.5)   # a candidate that may be a missed cone
    assert error[1, 1] == 0.0                  # nothing there


@pytest.fixture(scope="module")
def bundled():
    record = model_record()
    return record, TorchPredictor(load_network(record, "cones"), cone_model.IO)


@pytest.fixture(scope="module")
def unseen_maps(bundled):
    _, predictor = bundled
    used = set(TRAIN_SEEDS) | set(CALIBRATION_SEEDS) | set(HELD_OUT_SEEDS)
    spec_of = {"A": phantom_spec, "B": family_b_spec}
    maps = []
    for family, seeds in UNSEEN.items():
        assert not set(seeds) & used
        for seed in seeds:
            sample = make_sample(spec_of[family](seed))
            maps.append((predictor.predict(sample.image), sample))
    return maps


def pooled_ece(maps, fitted: Calibration) -> float:
    confidence, correct = [], []
    for probability, sample in maps:
        _, items = score_calibration(probability, sample, fitted)
        confidence.append(items["confidence"])
        correct.append(items["correct"])
    return calibration.expected_calibration_error(np.concatenate(confidence),
                                                  np.concatenate(correct))


def test_the_bundled_model_is_calibrated_and_its_raw_probabilities_are_not(bundled,
                                                                           unseen_maps):
    record, _ = bundled
    fitted = Calibration.from_card(model_card(record))
    assert fitted != Calibration(), "the bundled model card holds no calibration"
    assert pooled_ece(unseen_maps, fitted) <= DETECTION_ECE_MAX
    assert pooled_ece(unseen_maps, Calibration()) > DETECTION_ECE_MAX


def test_calibration_is_refitted_from_the_calibration_split(bundled):
    record, _ = bundled
    samples = [make_sample(phantom_spec(CALIBRATION_SEEDS[0])),
               make_sample(family_b_spec(CALIBRATION_SEEDS[0]))]
    refitted = fit_calibration(load_network(record, "cones"), samples)
    card = Calibration.from_card(model_card(record))
    # Two of the card's sixteen phantoms: the same map, roughly.
    assert refitted.temperature == pytest.approx(card.temperature, rel=0.5)


def test_the_review_queue_holds_the_tiles_with_errors(bundled, unseen_maps):
    record, _ = bundled
    fitted = Calibration.from_card(model_card(record))
    scores, errors = [], []
    for probability, sample in unseen_maps:
        _, items = score_calibration(probability, sample, fitted)
        scores.append(items["tile_score"])
        errors.append(items["tile_error"])
    score, error = np.concatenate(scores), np.concatenate(errors)
    flagged = score >= REVIEW_THRESHOLD
    assert error.any() and flagged.any(), "the default review queue would be empty"
    # The queue is worth a labeller's time: at least the threshold's share of its tiles are
    # wrong, and it ranks tiles with errors above those without.
    assert error[flagged].mean() >= REVIEW_THRESHOLD
    assert calibration.auroc(score, error) >= 0.7


def test_needs_review_is_raised_where_the_model_expects_errors():
    assert not needs_review({"expected_false": 2.0, "expected_missed": 1.0, "percent": 1.5})["flag"]
    raised = needs_review({"expected_false": 9.0, "expected_missed": 30.0, "percent": 12.4})
    assert raised["flag"] and "12.4 %" in raised["reasons"][0]


def test_needs_review_tells_the_models_good_volumes_from_its_poor_ones(bundled, unseen_maps):
    # Family A volumes the model handles (F1 ≥ 0.98) pass; family B volumes where it misses
    # many cones are flagged. The check needs no ground truth; the truth only judges it.
    record, _ = bundled
    fitted = Calibration.from_card(model_card(record))
    for probability, sample in unseen_maps:
        flag = needs_review(calibration.expected_detection_errors(
            calibration.assess(probability, fitted)))["flag"]
        f1 = score_cone_map(probability, sample)["f1"]
        if f1 < 0.9:
            assert flag, (sample.spec, f1)
        if f1 > 0.97:
            assert not flag, (sample.spec, f1)
