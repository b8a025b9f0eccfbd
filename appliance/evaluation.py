"""``aomas train`` and ``aomas evaluate``: the bootstrap cone model, scored on phantoms.

Training seeds and evaluation seeds never overlap: accuracy claims come from phantoms the
model has not seen. Everything here is synthetic; the model card says so.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from pathlib import Path

import numpy as np

from appliance.exceptions import AomasError
from appliance.models import ModelRecord, load_network, write_model
from gpu.cone_model import CHANNELS, DROPOUT, FEATURES
from gpu.predictor import TorchPredictor
from gpu.training import make_sample, phantom_spec, score, train

TRAIN_SEEDS = range(100, 124)
HELD_OUT_SEEDS = range(1, 7)
MODEL_ID = "cones-bootstrap-v1"


def parse_seeds(text: str) -> list[int]:
    """'1-10' or '1,4,9' or a mix: '1-3,8'."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            seeds += list(range(int(low), int(high or low) + 1))
    except ValueError:
        raise AomasError(f"seeds must look like 1-10 or 1,4,9, not {text!r}") from None
    return seeds


def train_bootstrap(out_dir: Path, *, iterations: int, train_seeds: list[int],
                    held_out_seeds: list[int],
                    log: Callable[[str], None] = print) -> tuple[ModelRecord, list[dict]]:
    overlap = set(train_seeds) & set(held_out_seeds)
    if overlap:
        raise AomasError(f"training and held-out seeds overlap ({sorted(overlap)}): "
                         "accuracy must be measured on unseen phantoms")
    import monai
    import torch

    log(f"making {len(train_seeds)} training phantoms")
    samples = [make_sample(phantom_spec(seed)) for seed in train_seeds]
    network = train(samples, iterations=iterations, log=log)
    log(f"scoring on {len(held_out_seeds)} held-out phantoms")
    rows = score(TorchPredictor(network), [make_sample(phantom_spec(s)) for s in held_out_seeds])
    card = {
        "model_id": MODEL_ID,
        "task": "Cone photoreceptor detection on AO-OCT en-face images (IS/OS and COST).",
        "architecture": f"MONAI BasicUNet, 2-D, {len(CHANNELS)} input channels, features "
                        f"{FEATURES}, dropout {DROPOUT}; local maxima of the "
                        "probability map are the cone centres.",
        "trained_on": "Synthetic phantoms only (`aomas phantom` physics), preprocessed by the "
                      "appliance's own pipeline. No patient data.",
        "training_seeds": list(train_seeds),
        "held_out_seeds": list(held_out_seeds),
        "training": {"iterations": iterations, "batch": 16, "patch_px": 64,
                     "loss": "Dice + cross-entropy", "optimiser": "Adam 3e-3, cosine",
                     "torch": torch.__version__, "monai": monai.__version__,
                     "python": platform.python_version()},
        "held_out_metrics": rows,
        "held_out_summary": summarise(rows),
        "intended_use": "Bootstrap for the appliance until a site registers a model trained "
                        "on its own labelled data; research use.",
        "limitations": [
            "Trained and measured on synthetic phantoms only; accuracy on real AO-OCT is "
            "unknown until measured on labelled data.",
            "Phantom mosaics are more regular (70-90 % six-sided Voronoi cells) than "
            "typical in vivo mosaics (about 50 %).",
            "Eccentricity 1.5-8 degrees, 1 um pixels; other sampling is untested.",
        ],
    }
    return write_model(out_dir, network, card), rows


def evaluate(record: ModelRecord, seeds: list[int]) -> list[dict]:
    predictor = TorchPredictor(load_network(record))
    return score(predictor, [make_sample(phantom_spec(seed)) for seed in seeds])


def summarise(rows: list[dict]) -> dict:
    return {
        "f1_mean": round(float(np.mean([r["f1"] for r in rows])), 4),
        "f1_min": round(float(np.min([r["f1"] for r in rows])), 4),
        "density_error_percent_max_abs": round(
            float(np.max([abs(r["density_error_percent"]) for r in rows])), 2),
        "hexagonal_difference_points_max_abs": round(float(np.max(
            [abs(r["hexagonal_found"] - r["hexagonal_true"]) for r in rows])), 2),
    }


def table(rows: list[dict]) -> str:
    header = (f"{'seed':>5}{'ecc°':>6}{'noise':>7}{'motion':>7}{'F1':>7}{'prec':>7}"
              f"{'recall':>7}{'density':>9}{'found':>9}{'err %':>7}{'hex':>6}{'found':>6}")
    lines = [header]
    for r in rows:
        lines.append(f"{r['seed']:>5}{r['eccentricity_deg']:>6.1f}{r['noise']:>7.3f}"
                     f"{r['motion_um']:>7.1f}{r['f1']:>7.3f}{r['precision']:>7.3f}"
                     f"{r['recall']:>7.3f}{r['density_true']:>9.0f}{r['density_found']:>9.0f}"
                     f"{r['density_error_percent']:>7.2f}{r['hexagonal_true']:>6.1f}"
                     f"{r['hexagonal_found']:>6.1f}")
    summary = summarise(rows)
    lines.append(f"F1 mean {summary['f1_mean']:.3f} (min {summary['f1_min']:.3f}); "
                 f"max |density error| {summary['density_error_percent_max_abs']:.2f} %; "
                 f"max |hexagonality difference| "
                 f"{summary['hexagonal_difference_points_max_abs']:.1f} points")
    return "\n".join(lines)
