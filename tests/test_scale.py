"""Scale-aware cone detection (issue 13, point 1): the resampling keeps geometry on both
axes, the detector looks again at the canonical scale where the bundled model counts rods and
speckle between large cones (family B far from the fovea at a fine pitch), and nothing changes
where it was right or where the detector does not confirm the spectrum's sparser ring."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from appliance.pipeline import needs_review
from appliance.registry import load_network, model_record
from gpu import cone_model
from gpu.phantom import PhantomSpec
from gpu.phantom_b import FamilyBSpec
from gpu.predictor import TorchPredictor
from gpu.scale import detect, resample, restore
from gpu.scoring import score_cone_map
from gpu.training import family_b_spec, make_sample

NO_ERRORS = {"expected_false": 0, "expected_missed": 0, "percent": 0.0}
# Large cones at 0.5-0.6 µm pixels: 20+ pixels per cone, rods between them (the training
# draws of seeds 3 and 4, moved out there).
OVERCOUNTED = [
    dataclasses.replace(family_b_spec(3), b_scans=128, a_lines=160, eccentricity_deg=10.0,
                        fast_pitch_um=0.5, slow_pitch_um=0.5),
    dataclasses.replace(family_b_spec(4), b_scans=128, a_lines=160, eccentricity_deg=12.0,
                        fast_pitch_um=0.5, slow_pitch_um=0.6),
]
RIGHT = [PhantomSpec(seed=2, b_scans=128, a_lines=128, eccentricity_deg=3.0),
         FamilyBSpec(seed=18, b_scans=96, a_lines=128, eccentricity_deg=1.7, fast_pitch_um=0.95,
                     slow_pitch_um=1.06)]


@pytest.fixture(scope="module")
def predictor():
    return TorchPredictor(load_network(model_record(), "cones"), cone_model.IO)


def test_resampling_and_restoring_keeps_a_point_where_it_was():
    rows, columns = np.mgrid[0:120, 0:150]
    image = np.exp(-((rows - 61.3) ** 2 + (columns - 40.7) ** 2) / (2 * 6.0 ** 2))[None]
    zoom = (0.4, 0.7)
    small = resample(image.astype(np.float32), zoom)
    assert small.shape == (1, 48, 105)
    peak = np.unravel_index(np.argmax(small[0]), small.shape[1:])
    assert abs(peak[0] - ((61.3 + 0.5) * 0.4 - 0.5)) <= 0.5
    assert abs(peak[1] - ((40.7 + 0.5) * 0.7 - 0.5)) <= 0.5
    back = restore(small[0], image.shape[1:], zoom)
    weights = back * (back > 0.5 * back.max())
    centre = [(weights * axis).sum() / weights.sum() for axis in (rows, columns)]
    assert np.allclose(centre, (61.3, 40.7), atol=0.3)


@pytest.mark.parametrize("spec", OVERCOUNTED, ids=lambda s: f"B-{s.eccentricity_deg:g}deg")
def test_large_cones_are_detected_at_the_canonical_scale(predictor, spec):
    sample = make_sample(spec)
    native = score_cone_map(predictor.predict(sample.image), sample)
    assert native["density_error_percent"] > 100 and native["f1"] < 0.6   # the failure
    probability, uncertainty, centres, choice = detect(predictor, sample.image,
                                                       sample.pixel_um, uncertainty_samples=2)
    assert choice.rescaled and max(choice.zoom) < 0.5, choice
    assert probability.shape == uncertainty.shape == sample.image.shape[1:]
    scored = score_cone_map(probability, sample)
    assert scored["f1"] >= 0.8 and abs(scored["density_error_percent"]) <= 15, scored
    assert len(centres) == len(cone_model.centroids(probability))
    review = needs_review(NO_ERRORS, spectral={"resolved": False, "reason": "-"},
                          cone_scale=choice.as_dict())
    assert review["flag"] and "resampled" in review["reasons"][0]


@pytest.mark.parametrize("spec", RIGHT, ids=lambda s: f"{s.family}-{s.eccentricity_deg:g}deg")
def test_nothing_changes_where_the_detector_was_right(predictor, spec):
    sample = make_sample(spec)
    probability, _, _, choice = detect(predictor, sample.image, sample.pixel_um)
    assert not choice.rescaled
    assert np.array_equal(probability, predictor.predict(sample.image))
    assert not needs_review(NO_ERRORS, cone_scale=choice.as_dict())["flag"]


class GridPredictor:
    """A broken detector: a cone every 4 pixels of whatever image it is given, so it
    overcounts at every scale and can confirm no ring. (The bundled model with every faint bump
    taken for a cone, p ** 0.05, is not this: it confirms the rods' ring at 10°. A rescued run
    is only as good as the detector at the canonical scale, hence always flagged for review.)"""

    def predict(self, image):
        rows, columns = np.mgrid[0:image.shape[1], 0:image.shape[2]]
        return (0.5 + 0.5 * np.cos(np.pi * rows / 2) * np.cos(np.pi * columns / 2)).astype(
            np.float32)


def test_a_sparser_ring_the_detector_does_not_confirm_changes_nothing():
    sample = make_sample(OVERCOUNTED[0])
    grid = GridPredictor()
    probability, _, centres, choice = detect(grid, sample.image, sample.pixel_um)
    assert len(centres) > 1000                 # about twenty times the cones there are
    assert not choice.rescaled and choice.candidates, choice
    assert all(ratio > 1.5 for _, ratio in choice.candidates)
    assert "did not confirm" in choice.reason
    assert np.array_equal(probability, grid.predict(sample.image))
