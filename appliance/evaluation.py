"""``aomas train`` and ``aomas evaluate``: the bootstrap model, scored on phantoms.

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
from gpu import cone_model, layer_model
from gpu.layers import NoPhotoreceptorLayer
from gpu.predictor import TorchPredictor
from gpu.scoring import score_cones, score_layers
from gpu.training import family_b_spec, make_sample, phantom_spec, train

TRAIN_SEEDS = range(100, 124)
HELD_OUT_SEEDS = range(1, 7)
MODEL_ID = "aomas-bootstrap-v2"
SURFACES = ("ELM", "ISOS", "COST", "RPE", "BM")


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
    networks = {name: train(name, samples, iterations=iterations, log=log)
                for name in ("cones", "layers")}
    del samples
    log(f"scoring on {len(held_out_seeds)} held-out phantoms")
    rows = score(networks, [make_sample(phantom_spec(s)) for s in held_out_seeds])
    card = {
        "model_id": MODEL_ID,
        "task": "Cone photoreceptor detection on AO-OCT en-face images (IS/OS and COST), and "
                "photoreceptor/RPE layer labelling on B-scans.",
        "architecture": {
            "cones": f"MONAI BasicUNet, 2-D, {cone_model.IO.in_channels} input channels "
                     f"({', '.join(cone_model.CHANNELS)} en-face), features "
                     f"{cone_model.FEATURES}, dropout {cone_model.DROPOUT}, patch "
                     f"{cone_model.IO.patch_px}; local maxima of the probability map are the "
                     "cone centres.",
            "layers": f"MONAI BasicUNet, 2-D, 1 input channel (B-scan), "
                      f"{len(layer_model.CLASSES)} classes {layer_model.CLASSES}, features "
                      f"{layer_model.FEATURES}, dropout {layer_model.DROPOUT}, patch "
                      f"{layer_model.IO.patch_px} (depth x A-lines).",
        },
        "trained_on": "Synthetic phantoms only (`aomas phantom` physics), preprocessed by the "
                      "appliance's own pipeline. No patient data.",
        "training_seeds": list(train_seeds),
        "held_out_seeds": list(held_out_seeds),
        "training": {"iterations_per_network": iterations, "batch": 16,
                     "augmentation": "cones: rotations and flips; layers: left-right flips",
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
            "Phantom mosaics are jittered hexagonal lattices with a minimum cone separation "
            "(about 43-62 % six-sided Voronoi cells, as in vivo); no rods, no dark or "
            "missing-cone patches beyond 3 % dim cones, no vessels' shadows.",
            "Eccentricity 1.5-8 degrees, 1 um pixels; other sampling is untested.",
            "Layers: healthy outer retina only (no drusen, detachments or atrophy); the "
            "interdigitation zone between COST and RPE is labelled background.",
        ],
    }
    return write_model(out_dir, networks, card), rows


SPEC_OF_FAMILY = {"A": phantom_spec, "B": family_b_spec}


def evaluate(record: ModelRecord, seeds: list[int], families=("A",)) -> list[dict]:
    """One row per phantom; a phantom the preprocessing refuses is a row with ``refused``
    (a failed condition, reported, never dropped)."""
    networks = {name: load_network(record, name) for name in ("cones", "layers")}
    rows = []
    for family in families:
        for seed in seeds:
            spec = SPEC_OF_FAMILY[family](seed)
            try:
                sample = make_sample(spec)
            except NoPhotoreceptorLayer as error:
                rows.append({"family": family, "seed": seed,
                             "eccentricity_deg": spec.eccentricity_deg, "refused": str(error)})
                continue
            rows += score(networks, [sample])
    return rows


def score(networks: dict, samples) -> list[dict]:
    """One row per phantom: cones, layer labels, and the preprocessing, against the truth."""
    cones = TorchPredictor(networks["cones"], cone_model.IO)
    layers = TorchPredictor(networks["layers"], layer_model.IO)
    rows = []
    for sample in samples:  # one at a time: a sample holds a good part of a volume
        rows.append({**score_cones(cones, [sample])[0], **score_layers(layers, [sample])[0],
                     **sample.preprocessing_errors})
    return rows


def summarise(rows: list[dict]) -> dict:
    def worst(values) -> float:
        return round(float(np.max(np.abs(values))), 3)

    def column(key: str) -> list:
        return [r[key] for r in rows]

    return {
        "f1_mean": round(float(np.mean(column("f1"))), 4),
        "f1_min": round(float(np.min(column("f1"))), 4),
        "density_error_percent_max_abs": worst(column("density_error_percent")),
        "hexagonal_difference_points_max_abs": worst(
            [r["hexagonal_found"] - r["hexagonal_true"] for r in rows]),
        "layer_dice_min": round(float(np.min([column(f"dice_{name}")
                                              for name in layer_model.CLASSES[1:]])), 4),
        "surface_mae_px_max": worst([column(f"{name}_mae_px") for name in SURFACES[:4]]),
        "bm_mae_px_max": worst(column("BM_mae_px")),
        "axial_residual_px_max": worst(column("axial_residual_px")),
        "lateral_residual_px_max": worst(column("lateral_residual_px")),
        "lateral_mean_removed_px_max": worst(column("lateral_mean_removed_px")),
    }


def table(rows: list[dict]) -> str:
    refused = [r for r in rows if "refused" in r]
    rows = [r for r in rows if "refused" not in r]
    header = (f"{'fam':>3}{'seed':>5}{'mapping':>8}{'pitch µm':>10}{'ecc°':>6}{'noise':>7}"
              f"{'motion':>7}{'F1':>7}{'prec':>7}"
              f"{'recall':>7}{'density':>9}{'found':>9}{'err %':>7}{'hex':>6}{'found':>6}")
    lines = [header]
    for r in rows:
        pitch = "x".join(f"{p:g}" for p in r["pixel_um"][::-1])
        lines.append(f"{r['family']:>3}{r['seed']:>5}{r['intensity']:>8}"
                     f"{pitch:>10}{r['eccentricity_deg']:>6.1f}{r['noise']:>7.3f}"
                     f"{r['motion_um']:>7.1f}{r['f1']:>7.3f}{r['precision']:>7.3f}"
                     f"{r['recall']:>7.3f}{r['density_true']:>9.0f}{r['density_found']:>9.0f}"
                     f"{r['density_error_percent']:>7.2f}{r['hexagonal_true']:>6.1f}"
                     f"{r['hexagonal_found']:>6.1f}")
    lines += ["", f"{'fam':>3}{'seed':>5}" + "".join(f"{name:>7}" for name in SURFACES)
              + f"{'axial':>7}{'lateral':>8}{'(mean)':>8}{'IS':>7}{'OS':>7}{'RPE':>7}"]
    for r in rows:
        lines.append(f"{r['family']:>3}{r['seed']:>5}"
                     + "".join(f"{r[name + '_mae_px']:>7.2f}" for name in SURFACES)
                     + f"{r['axial_residual_px']:>7.2f}{r['lateral_residual_px']:>8.2f}"
                     f"{r['lateral_mean_removed_px']:>8.2f}{r['dice_inner_segment']:>7.3f}"
                     f"{r['dice_outer_segment']:>7.3f}{r['dice_rpe']:>7.3f}")
    lines.append("surfaces: mean absolute error (px); motion: residual RMS (px; axial less a "
                 "quadratic, lateral less a line, (mean): less its mean only); layer Dice")
    for family in sorted({r["family"] for r in rows}):
        lines.append(f"family {family}: "
                     + summary_line([r for r in rows if r["family"] == family]))
    for r in refused:
        lines.append(f"family {r['family']} seed {r['seed']} ({r['eccentricity_deg']:.1f}°) "
                     f"REFUSED: {r['refused']}")
    return "\n".join(lines)


def summary_line(rows: list[dict]) -> str:
    """The worst condition, not the mean, of each figure (and the mean F1 beside its min)."""
    summary = summarise(rows)
    return (f"F1 mean {summary['f1_mean']:.3f} (min {summary['f1_min']:.3f}); "
            f"max |density error| {summary['density_error_percent_max_abs']:.2f} %; "
            f"max |hexagonality difference| "
            f"{summary['hexagonal_difference_points_max_abs']:.1f} points; "
            f"min layer Dice {summary['layer_dice_min']:.3f}; max surface MAE "
            f"{summary['surface_mae_px_max']:.2f} px (BM {summary['bm_mae_px_max']:.2f}); "
            f"max residual motion axial {summary['axial_residual_px_max']:.2f} px, lateral "
            f"{summary['lateral_residual_px_max']:.2f} px")
