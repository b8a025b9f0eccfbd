"""Calibrated cone confidences, and the chance that a tile of the en-face image holds an error.

The cone network's probability at a detected centre is not the chance that the detection is a
cone: far from the fovea it finds speckle grains between sparse cones with as much conviction
as the cones. A two-parameter logistic map of the peak's logit (Platt scaling: a temperature
and a bias), fitted on a calibration split of phantoms that is neither training nor
evaluation data, turns it into one.

The map is fitted on every *candidate*: each local maximum of the probability map above
``CANDIDATE_FLOOR``, labelled by whether it matches a true cone. Those above the detection
threshold are the detections; those below are cones the detector may have missed. A tile's
error probability is then the chance that at least one of its detections is false or at least
one of its candidates below threshold is a missed cone (taken as independent):
1 - prod(confidence of each detection) * prod(1 - confidence of each sub-threshold candidate).
A missed cone that leaves no candidate at all is not seen; the evaluation measures how well
the number ranks real errors anyway (tile AUROC).

Metrics are torchmetrics' (expected calibration error, 15 equal-width bins; AUROC), not
hand-written ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from gpu.cone_model import PEAK_THRESHOLD, peaks

CANDIDATE_FLOOR = 0.05
TILE_PX = 32              # the review queue's en-face tiles
REVIEW_THRESHOLD = 0.3    # the queue's default: tiles likelier than this to hold an error
ECE_BINS = 15
BOOTSTRAP_RESAMPLES = 1000


@dataclass(frozen=True)
class Calibration:
    """confidence = sigmoid(logit(p) / temperature + bias); identity by default."""
    temperature: float = 1.0
    bias: float = 0.0

    def confidence(self, probability: np.ndarray) -> np.ndarray:
        p = np.clip(np.asarray(probability, np.float64), 1e-6, 1 - 1e-6)
        return 1.0 / (1.0 + np.exp(-(np.log(p / (1 - p)) / self.temperature + self.bias)))

    def as_dict(self) -> dict:
        return {key: round(value, 5) for key, value in asdict(self).items()}

    @classmethod
    def from_card(cls, card: dict) -> Calibration:
        """The model card's detection calibration; identity for a card without one."""
        fitted = card.get("calibration", {}).get("detection")
        return cls(**fitted["map"]) if fitted else cls()


@dataclass(frozen=True)
class Candidates:
    """The probability map's candidates: (row, column) centres, peak probability, and the
    calibrated probability that each is a cone."""
    centres: np.ndarray
    peak: np.ndarray
    confidence: np.ndarray

    @property
    def detected(self) -> np.ndarray:
        return self.peak > PEAK_THRESHOLD


def candidates(probability: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every local maximum above CANDIDATE_FLOOR: (row, column) centres and peak probability."""
    return peaks(probability, CANDIDATE_FLOOR)


def assess(probability: np.ndarray, fitted: Calibration) -> Candidates:
    """The candidates of a probability map, with their calibrated confidence."""
    centres, peak = candidates(probability)
    return Candidates(centres, peak, fitted.confidence(peak))


def fit(peak_probability: np.ndarray, is_cone: np.ndarray) -> Calibration:
    """The Platt map that minimises the candidates' negative log-likelihood."""
    from scipy.optimize import minimize

    p = np.clip(np.asarray(peak_probability, np.float64), 1e-6, 1 - 1e-6)
    logit, label = np.log(p / (1 - p)), np.asarray(is_cone, np.float64)

    def loss(params):
        z = logit * np.exp(-params[0]) + params[1]     # log-temperature keeps it positive
        # log(1 + e^z) - y·z, written to stay finite for large |z|
        return float(np.mean(np.logaddexp(0, z) - label * z))

    best = minimize(loss, np.zeros(2), method="Nelder-Mead",
                    options={"xatol": 1e-4, "fatol": 1e-7})
    return Calibration(temperature=float(np.exp(best.x[0])), bias=float(best.x[1]))


def tile_error_probability(found: Candidates, shape: tuple[int, int],
                           tile_px: int) -> np.ndarray:
    """(tile rows, tile columns): the chance each tile holds a false or a missed cone."""
    tiles = (-(-shape[0] // tile_px), -(-shape[1] // tile_px))
    log_no_error = np.zeros(tiles)
    if len(found.centres):
        row = np.clip(found.centres[:, 0] // tile_px, 0, tiles[0] - 1).astype(int)
        column = np.clip(found.centres[:, 1] // tile_px, 0, tiles[1] - 1).astype(int)
        right = np.where(found.detected, found.confidence, 1 - found.confidence)
        np.add.at(log_no_error, (row, column), np.log(np.clip(right, 1e-9, 1)))
    return 1 - np.exp(log_no_error)


def review_tiles(found: Candidates, uncertainty: np.ndarray, tile_px: int) -> list[dict]:
    """Every tile of the en-face image with its calibrated error probability and its mean
    Monte Carlo dropout uncertainty, the likeliest to hold an error first."""
    error = tile_error_probability(found, uncertainty.shape, tile_px)
    tiles = []
    for row in range(0, uncertainty.shape[0], tile_px):
        for column in range(0, uncertainty.shape[1], tile_px):
            block = uncertainty[row:row + tile_px, column:column + tile_px]
            tiles.append({"row_px": row, "column_px": column,
                          "error_probability": round(float(error[row // tile_px,
                                                                 column // tile_px]), 5),
                          "mean_uncertainty": round(float(block.mean()), 5)})
    return sorted(tiles, key=lambda tile: -tile["error_probability"])


def expected_detection_errors(found: Candidates) -> dict:
    """The calibrated number of false detections and of missed cones (those that left a
    candidate), and their sum as a percentage of the detections: a run-level uncertainty
    that needs no ground truth. It counts only the misses it can see, so it is a floor."""
    detected = found.detected
    false = float((1 - found.confidence[detected]).sum())
    missed = float(found.confidence[~detected].sum())
    return {"expected_false": round(false, 1), "expected_missed": round(missed, 1),
            "percent": round(100 * (false + missed) / max(int(detected.sum()), 1), 2)}


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray) -> float:
    """15-bin, equal-width, L1 expected calibration error (torchmetrics)."""
    import torch
    from torchmetrics.functional.classification import binary_calibration_error

    if len(confidence) == 0:
        return float("nan")
    return float(binary_calibration_error(
        torch.as_tensor(np.asarray(confidence, np.float32)),
        torch.as_tensor(np.asarray(correct, np.int64)), n_bins=ECE_BINS, norm="l1"))


def ece_with_interval(confidence: np.ndarray, correct: np.ndarray,
                      seed: int = 0) -> dict:
    """ECE and its bootstrap 95 % interval (resampling the items with replacement)."""
    confidence, correct = np.asarray(confidence), np.asarray(correct)
    rng = np.random.default_rng(seed)
    resampled = [expected_calibration_error(confidence[pick], correct[pick])
                 for pick in (rng.integers(0, len(confidence), len(confidence))
                              for _ in range(BOOTSTRAP_RESAMPLES))] if len(confidence) else []
    low, high = np.percentile(resampled, [2.5, 97.5]) if resampled else (np.nan, np.nan)
    return {"ece": round(expected_calibration_error(confidence, correct), 4),
            "ece_95": [round(float(low), 4), round(float(high), 4)], "n": int(len(confidence))}


def auroc(score: np.ndarray, label: np.ndarray) -> float | None:
    """Area under the ROC curve (torchmetrics); None where only one class is present."""
    import torch
    from torchmetrics.functional.classification import binary_auroc

    label = np.asarray(label, np.int64)
    if len(np.unique(label)) < 2:
        return None
    return float(binary_auroc(torch.as_tensor(np.asarray(score, np.float32)),
                              torch.as_tensor(label)))
