"""``aomas train`` and ``aomas evaluate``: the bootstrap model, scored on phantoms.

Training seeds and evaluation seeds never overlap: accuracy claims come from phantoms the
model has not seen. Everything here is synthetic; the model card says so.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import platform
from collections.abc import Callable
from pathlib import Path

import numpy as np

from appliance.exceptions import AomasError
from appliance.pipeline import run_checks
from appliance.registry import ModelRecord, load_network, model_card, write_model
from gpu import calibration, cone_model, layer_model
from gpu.calibration import Calibration
from gpu.layers import NoPhotoreceptorLayer
from gpu.phantoms import FAMILIES
from gpu.predictor import TorchPredictor
from gpu.scale import detect
from gpu.scoring import (
    candidate_labels,
    pooled_calibration,
    score_calibration,
    score_cone_map,
    score_layers,
)
from gpu.training import family_b_spec, make_sample, phantom_spec, train

TRAIN_SEEDS = range(100, 124)
# Phantoms the detection calibration is fitted on: neither training nor evaluation data.
CALIBRATION_SEEDS = range(200, 208)
HELD_OUT_SEEDS = range(1, 7)
MODEL_ID, MODEL_VERSION, MODEL_PARENT = "aomas-bootstrap-v3", "3", "aomas-bootstrap-v2"
SPEC_OF_FAMILY = {"A": phantom_spec, "B": family_b_spec}
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


def phantom_data_hash(families, train_seeds, calibration_seeds) -> str:
    """What the model was fitted on, as one hash: the phantoms regenerate from these."""
    described = {"training_families": list(families), "training_seeds": list(train_seeds),
                 "calibration_seeds": list(calibration_seeds)}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def train_bootstrap(out_dir: Path, *, iterations: int, train_seeds: list[int],
                    held_out_seeds: list[int], families: tuple[str, ...] = ("A", "B"),
                    calibration_seeds: tuple[int, ...] = tuple(CALIBRATION_SEEDS),
                    log: Callable[[str], None] = print
                    ) -> tuple[ModelRecord, list[dict], dict]:
    """Train on ``families``' draws at ``train_seeds``, fit the detection calibration on
    both families' ``calibration_seeds``, and score both families at ``held_out_seeds``
    (so a model trained on one family is always also measured on the other)."""
    seed_sets = {"training": set(train_seeds), "calibration": set(calibration_seeds),
                 "held-out": set(held_out_seeds)}
    for (name, seeds), (other, other_seeds) in itertools.combinations(seed_sets.items(), 2):
        if seeds & other_seeds:
            raise AomasError(f"{name} and {other} seeds overlap ({sorted(seeds & other_seeds)})"
                             ": accuracy must be measured on phantoms the model never saw")
    import monai
    import torch

    log(f"making {len(train_seeds)} training phantoms of family {', '.join(families)}")
    samples = _samples(families, train_seeds, log)
    networks = {name: train(name, samples, iterations=iterations, log=log)
                for name in ("cones", "layers")}
    del samples
    log(f"fitting the detection calibration on {len(calibration_seeds)} phantoms per family")
    fitted = fit_calibration(networks["cones"], _samples(FAMILIES, calibration_seeds, log))
    log(f"scoring on {len(held_out_seeds)} held-out phantoms per family")
    rows, pooled = evaluate_networks(networks, fitted, held_out_seeds, FAMILIES)
    card = {
        "model_id": MODEL_ID, "version": MODEL_VERSION, "parent": MODEL_PARENT,
        "data_hash": phantom_data_hash(families, train_seeds, calibration_seeds),
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
        "trained_on": "Synthetic phantoms only (`aomas phantom --family "
                      f"{'/'.join(families)}`), preprocessed by the appliance's own pipeline. "
                      "No patient data.",
        "training_families": list(families),
        "training_seeds": list(train_seeds),
        "calibration": {"detection": {
            "map": fitted.as_dict(),
            "method": "Platt scaling (temperature and bias on the logit) of the peak "
                      "probability of every local maximum above "
                      f"{calibration.CANDIDATE_FLOOR}, fitted by maximum likelihood against "
                      "'matches a true cone'",
            "families": list(FAMILIES), "seeds": list(calibration_seeds)}},
        "held_out_seeds": list(held_out_seeds),
        "training": {"iterations_per_network": iterations, "batch": 16,
                     "augmentation": "cones: rotations and flips; layers: left-right flips",
                     "loss": "Dice + cross-entropy", "optimiser": "Adam 3e-3, cosine",
                     "torch": torch.__version__, "monai": monai.__version__,
                     "python": platform.python_version()},
        "held_out_metrics": rows,
        "held_out_summary": {family: summarise([r for r in rows if r["family"] == family
                                                and "refused" not in r])
                             for family in FAMILIES},
        "held_out_calibration": pooled,
        "run_checks": run_checks(),
        "intended_use": "Bootstrap for the appliance until a site registers a model trained "
                        "on its own labelled data; research use.",
        "limitations": [
            "Trained and measured on synthetic phantoms only; accuracy on real AO-OCT is "
            "unknown until measured on labelled data.",
            "Family A mosaics are jittered hexagonal lattices (43-62 % six-sided), 1.5-8 "
            "degrees, 1 um pixels; family B mosaics are relaxed random points (45-55 % "
            "six-sided) with rods, dark and flickering cones, 0.5-12 degrees, 0.5-1.5 um "
            "anisotropic pixels, linear/log/8-bit intensities. No vessels' shadows, no "
            "pathology beyond family B's drusen-like domes.",
            "Scale: the network sees cones at whatever size the pixel pitch gives them; "
            "where they are large and sparse it can count rods and speckle grains between "
            "them. A run then detects again at 7 pixels per cone when the en-face spectrum "
            "holds a sparser mosaic that the detector confirms there (gpu/scale.py); "
            "where the spectrum shows no such ring the overcount stands (see "
            "held_out_metrics).",
            "The detection calibration (calibration.detection) is one Platt map for every "
            "condition; per-condition ECE is in held_out_metrics.",
            "Layers: the interdigitation zone between COST and RPE is labelled background.",
        ],
    }
    return write_model(out_dir, networks, card), rows, pooled


def evaluate(record: ModelRecord, seeds: list[int], families=FAMILIES
             ) -> tuple[list[dict], dict]:
    """A registered model on fresh phantoms, with the calibration its card holds (none: the
    raw probabilities, reported as such)."""
    networks = {name: load_network(record, name) for name in ("cones", "layers")}
    return evaluate_networks(networks, Calibration.from_card(model_card(record)), seeds, families)


def _draws(families, seeds):
    """(family, seed, spec, sample) for each phantom; ``sample`` is the reason instead (a
    string) where preprocessing refused the phantom."""
    for family in families:
        for seed in seeds:
            spec = SPEC_OF_FAMILY[family](seed)
            try:
                sample = make_sample(spec)
            except NoPhotoreceptorLayer as error:
                sample = str(error)
            yield family, seed, spec, sample


def _samples(families, seeds, log: Callable[[str], None]) -> list:
    samples = []
    for family, seed, _, sample in _draws(families, seeds):
        if isinstance(sample, str):
            log(f"family {family} seed {seed} left out: {sample}")
        else:
            samples.append(sample)
    return samples


def fit_calibration(cone_network, samples) -> Calibration:
    """The detection calibration, fitted on ``samples``' candidates."""
    predictor = TorchPredictor(cone_network, cone_model.IO)
    peak, is_cone = [], []
    for sample in samples:
        probability = detect(predictor, sample.image, sample.pixel_um)[0]
        labels = candidate_labels(probability, sample)
        peak.append(labels["peak"])
        is_cone.append(labels["is_cone"])
    return calibration.fit(np.concatenate(peak), np.concatenate(is_cone))


def evaluate_networks(networks: dict, fitted: Calibration, seeds, families
                      ) -> tuple[list[dict], dict]:
    """One row per phantom: cones, calibration, layer labels, and the preprocessing, against
    the truth (a refused phantom is a row with ``refused``: a failed condition, reported,
    never dropped); and the calibration pooled per family."""
    cones = TorchPredictor(networks["cones"], cone_model.IO)
    layers = TorchPredictor(networks["layers"], layer_model.IO)
    rows, items = [], {family: [] for family in families}
    # One phantom at a time: a sample holds a good part of a volume.
    for family, seed, spec, sample in _draws(families, seeds):
        if isinstance(sample, str):
            rows.append({"family": family, "seed": seed,
                         "eccentricity_deg": spec.eccentricity_deg, "refused": sample})
            continue
        # As a run detects them (gpu.scale), so that the figures are the appliance's.
        probability, _, _, cone_scale = detect(cones, sample.image, sample.pixel_um)
        calibrated, items_of_sample = score_calibration(probability, sample, fitted)
        items[family].append(items_of_sample)
        rows.append({**score_cone_map(probability, sample), **calibrated,
                     "rescaled_zoom": ([round(z, 3) for z in cone_scale.zoom]
                                       if cone_scale.rescaled else None),
                     **score_layers(layers, [sample])[0], **sample.preprocessing_errors})
    return rows, {family: pooled_calibration(items[family]) for family in families}


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


def table(rows: list[dict], pooled: dict | None = None) -> str:
    refused = [r for r in rows if "refused" in r]
    rows = [r for r in rows if "refused" not in r]
    header = (f"{'fam':>3}{'seed':>5}{'mapping':>8}{'pitch µm':>10}{'ecc°':>6}{'noise':>7}"
              f"{'motion':>7}{'F1':>7}{'prec':>7}"
              f"{'recall':>7}{'density':>9}{'found':>9}{'err %':>7}{'NND':>6}{'found':>6}"
              f"{'hex':>6}{'found':>6}{'ECE':>7}{'AUROC':>7}{'flagged':>9}")
    lines = [header]
    for r in rows:
        pitch = "x".join(f"{p:g}" for p in r["pixel_um"][::-1])
        lines.append(f"{r['family']:>3}{r['seed']:>5}{r['intensity']:>8}"
                     f"{pitch:>10}{r['eccentricity_deg']:>6.1f}{r['noise']:>7.3f}"
                     f"{r['motion_um']:>7.1f}{r['f1']:>7.3f}{r['precision']:>7.3f}"
                     f"{r['recall']:>7.3f}{r['density_true']:>9.0f}{r['density_found']:>9.0f}"
                     f"{r['density_error_percent']:>7.2f}{r['nnd_true_um']:>6.2f}"
                     f"{r['nnd_found_um'] or 0:>6.2f}{r['hexagonal_true']:>6.1f}"
                     f"{r['hexagonal_found'] or 0:>6.1f}{r['detection_ece']:>7.3f}"
                     f"{_or_dash(r['tile_auroc']):>7}"
                     f"{r['tiles_flagged']:>4}/{r['tiles_with_error']:<4}")
    lines += ["", f"{'fam':>3}{'seed':>5}" + "".join(f"{name:>7}" for name in SURFACES)
              + f"{'axial':>7}{'lateral':>8}{'(mean)':>8}{'IS':>7}{'OS':>7}{'RPE':>7}"]
    for r in rows:
        lines.append(f"{r['family']:>3}{r['seed']:>5}"
                     + "".join(f"{r[name + '_mae_px']:>7.2f}" for name in SURFACES)
                     + f"{r['axial_residual_px']:>7.2f}{r['lateral_residual_px']:>8.2f}"
                     f"{r['lateral_mean_removed_px']:>8.2f}{r['dice_inner_segment']:>7.3f}"
                     f"{r['dice_outer_segment']:>7.3f}{r['dice_rpe']:>7.3f}")
    lines += ["", spectral_table(rows)]
    lines.append("surfaces: mean absolute error (px); motion: residual RMS (px; axial less a "
                 "quadratic, lateral less a line, (mean): less its mean only); layer Dice")
    lines.append("cones: ECE = detection-level expected calibration error (15 bins) of the "
                 "calibrated confidence; AUROC = tile error probability for 'tile holds a "
                 "false or missed cone'; flagged = tiles at or above 0.3 / tiles with an error")
    for family in sorted({r["family"] for r in rows}):
        lines.append(f"family {family}: "
                     + summary_line([r for r in rows if r["family"] == family]))
        if pooled and family in pooled:
            lines.append(f"family {family} pooled: " + calibration_line(pooled[family]))
    for r in refused:
        lines.append(f"family {r['family']} seed {r['seed']} ({r['eccentricity_deg']:.1f}°) "
                     f"REFUSED: {r['refused']}")
    return "\n".join(lines)


def spectral_table(rows: list[dict]) -> str:
    """The model-free cross-check per phantom: the spectrum's ring against the ring of the
    true positions, its density against the truth, whether it flagged the run, and the zoom
    (rows x columns) where the cones were detected at a canonical scale (gpu.scale); then how
    often it flagged a run the detector got wrong (density off by more than 15 %) or right."""
    lines = [f"{'fam':>3}{'seed':>5}{'ecc°':>6}{'pitch µm':>12}{'ring err %':>11}"
             f"{'spectral dens err %':>20}{'detected dens err %':>20}{'check':>9}"
             f"{'rescaled':>12}"]
    for r in rows:
        pitch = "x".join(f"{p:g}" for p in r["pixel_um"][::-1])
        check = ("flagged" if r.get("spectral_flag") else "passed") if r.get(
            "spectral_resolved") else "n/a"
        lines.append(f"{r['family']:>3}{r['seed']:>5}{r['eccentricity_deg']:>6.1f}{pitch:>12}"
                     f"{_or_dash(r.get('ring_error_percent'), '.1f'):>11}"
                     f"{_or_dash(r.get('spectral_density_error_percent'), '.1f'):>20}"
                     f"{r['density_error_percent']:>20.1f}{check:>9}"
                     f"{_zoom(r.get('rescaled_zoom')):>12}")
    resolved = [r for r in rows if r.get("spectral_resolved")]
    wrong = [r for r in resolved if abs(r["density_error_percent"]) > 15]
    right = [r for r in resolved if abs(r["density_error_percent"]) <= 15]
    ring = [abs(r["ring_error_percent"]) for r in resolved
            if r.get("ring_error_percent") is not None]
    lines.append(
        f"spectrum: ring resolved in {len(resolved)} of {len(rows)}; ring within 3 % of the "
        f"true mosaic's in {sum(e <= 3 for e in ring)} of {len(ring)} (worst "
        f"{max(ring, default=0):.1f} %); flagged {sum(r['spectral_flag'] for r in wrong)} of "
        f"{len(wrong)} runs with detected density off > 15 %, and "
        f"{sum(r['spectral_flag'] for r in right)} of {len(right)} runs within it; cones "
        f"detected at the canonical scale in {sum(bool(r.get('rescaled_zoom')) for r in rows)}"
        f" of {len(rows)}")
    return "\n".join(lines)


def _zoom(zoom: list[float] | None) -> str:
    return "-" if not zoom else "x".join(f"{z:.2f}" for z in zoom)


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


def calibration_line(pooled: dict) -> str:
    detection, pixel = pooled["detection"], pooled["pixel"]
    return (f"detection ECE {detection['ece']:.3f} (95 % {detection['ece_95'][0]:.3f}–"
            f"{detection['ece_95'][1]:.3f}, {detection['n']} detections); pixel ECE "
            f"{pixel['ece']:.3f} (95 % {pixel['ece_95'][0]:.3f}–{pixel['ece_95'][1]:.3f}); "
            f"tile AUROC {_or_dash(pooled['tile_auroc'])}; error rate of flagged tiles "
            f"{_or_dash(pooled['flagged_error_rate'])} ({pooled['tiles_flagged']} of "
            f"{pooled['tiles']} tiles flagged)")


def _or_dash(value, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)
