"""Retraining from reviewed labels: a new STAGING version, never promoted by itself.

The training set is every tile people corrected (its newest label version) in the current,
successful production or canary runs of the site, each cut out as the cone network's patch
around the tile: the reviewed mask inside the tile, the model's own cones around it. Phantoms
of both families are added (``--phantom-seeds``), so the network keeps what it knew; the gate's
evaluation seeds are refused as training seeds, and the evaluation set holds no site label,
so nothing it is judged on was learnt. The cone network goes on from the parent's weights; the
layer network is the parent's (reviews correct cones, not layers).

The training runs in its own process under a memory cap (``models.training_memory_mb``): it
fine-tunes, fits the detection calibration on phantoms, and measures the result on the gate's
evaluation set. The version is then registered as STAGING with a card that names its parent,
the label versions it learnt from (their hash is its ``data_hash``) and its gate figures, and
that measurement is recorded as its gate result. Promoting it is a person's decision.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils

from appliance import gates, registry, routing
from appliance.config import Config
from appliance.evaluation import parse_seeds
from appliance.exceptions import AomasError, InvalidInput
from appliance.review import labels
from appliance.review.acceptance import reviewed_cones
from appliance.review.case_images import run_arrays
from appliance.run_result import Arrays, RunResult
from appliance.storage import ObjectStore
from gpu import cone_model

TRAINING_TIMEOUT_SECONDS = 6 * 3600
DEFAULT_PHANTOM_SEEDS, DEFAULT_CALIBRATION_SEEDS = "100-107", "200-207"
PATCH = cone_model.IO.patch_px


def reviewed_tiles(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """The corrected tiles of current successful runs that may reach a PACS."""
    return list(db.query(
        "SELECT t.*, r.result, l.mask_sha256 FROM tiles t JOIN runs r USING (run_id) "
        "JOIN labels l ON l.tile_id = t.tile_id AND l.version = t.head_version "
        "WHERE t.head_version > 0 AND r.state = 'SUCCEEDED' AND r.superseded_by IS NULL "
        "AND COALESCE(r.arm, 'production') != 'shadow' ORDER BY t.tile_id"))


def label_data_hash(tiles: list[dict[str, Any]]) -> str:
    """The label versions learnt from, as one hash: tile, version and mask content (no
    patient data goes in; the same labels give the same hash)."""
    pairs = sorted(f"{t['tile_id']}:{t['head_version']}:{t['mask_sha256']}" for t in tiles)
    return hashlib.sha256("\n".join(pairs).encode()).hexdigest()


def training_patches(db: sqlite_utils.Database, store: ObjectStore,
                     tiles: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(n, channels, 64, 64) network inputs and (n, 64, 64) cone masks around each tile."""
    images, targets = [], []
    for tile in tiles:
        result = RunResult.from_json(json.loads(tile["result"]))
        arrays = run_arrays(store, result.artifacts.preprocessed_npz)
        enface = {name: arrays[Arrays.enface(name)] for name in cone_model.CHANNELS}
        shape = enface[cone_model.CHANNELS[0]].shape
        mask = labels.mask_of(db, store, tile, tile["head_version"])
        cones_px = reviewed_cones(arrays[Arrays.CONES_PX], shape, [(tile, mask)])
        image = cone_model.network_input(enface)
        target = cone_model.cone_target(shape, cones_px)
        padding = [(0, max(PATCH[0] - shape[0], 0)), (0, max(PATCH[1] - shape[1], 0))]
        image = np.pad(image, [(0, 0), *padding])
        target = np.pad(target, padding)
        top = int(np.clip(tile["row_px"] + tile["height_px"] // 2 - PATCH[0] // 2, 0,
                          image.shape[1] - PATCH[0]))
        left = int(np.clip(tile["column_px"] + tile["width_px"] // 2 - PATCH[1] // 2, 0,
                           image.shape[2] - PATCH[1]))
        images.append(image[:, top:top + PATCH[0], left:left + PATCH[1]])
        targets.append(target[top:top + PATCH[0], left:left + PATCH[1]])
    return np.stack(images).astype(np.float32), np.stack(targets).astype(np.float32)


def check_request(db: sqlite_utils.Database, config: Config, model_id: str,
                  parent_id: str | None, phantom_seeds: str) -> str:
    """What a retraining needs, checked before any work: a free, plain id, a parent (default:
    production), phantom seeds outside the gate's set, and reviewed tiles. Returns the
    parent's id; raises InvalidInput saying what is wrong."""
    if not registry.MODEL_ID.fullmatch(model_id):
        raise InvalidInput("model_id must be 1-64 letters, digits, '.', '_' or '-'")
    if registry.get_model(db, model_id, missing_ok=True) is not None:
        raise InvalidInput(f"{model_id} is registered already; name the new version anew")
    if parent_id is None:
        production = routing.pointers(db).get("production")
        if production is None:
            raise InvalidInput("no production version to start from; name a parent")
        parent_id = production["model_id"]
    registry.get_model(db, parent_id)
    overlap = set(parse_seeds(phantom_seeds)) & set(
        gates.evaluation_set(config.models.evaluation_seeds)["seeds"])
    if overlap:
        raise InvalidInput(f"phantom seeds {sorted(overlap)} are in the gate's evaluation set; "
                           "a version is never trained on what judges it")
    if not reviewed_tiles(db):
        raise InvalidInput("no reviewed tile yet: label tiles in the review queue first")
    return parent_id


def train_from_reviews(db: sqlite_utils.Database, store: ObjectStore, config: Config, *,
                       actor: str, model_id: str, parent_id: str | None = None,
                       iterations: int = 200, phantom_seeds: str | None = None,
                       calibration_seeds: str | None = None,
                       log=print) -> dict[str, Any]:
    """Train, measure and register the new version (STAGING); return it from the registry.
    Seeds default to ``DEFAULT_PHANTOM_SEEDS`` and ``DEFAULT_CALIBRATION_SEEDS``."""
    phantom_seeds = phantom_seeds or DEFAULT_PHANTOM_SEEDS
    calibration_seeds = calibration_seeds or DEFAULT_CALIBRATION_SEEDS
    parent_id = check_request(db, config, model_id, parent_id, phantom_seeds)
    parent = registry.get_model(db, parent_id)
    the_set = gates.evaluation_set(config.models.evaluation_seeds)
    tiles = reviewed_tiles(db)
    log(f"{len(tiles)} reviewed tiles of {len({t['case_id'] for t in tiles})} cases; "
        f"starting from {parent_id}")
    data_hash = label_data_hash(tiles)
    with tempfile.TemporaryDirectory(dir=config.data_dir) as scratch:
        work = Path(scratch)
        images, targets = training_patches(db, store, tiles)
        np.savez(work / "reviewed.npz", images=images, targets=targets)
        out = work / "model"
        job = {"parent_dir": str(registry.model_directory(store, config.data_dir, parent)),
               "reviewed": str(work / "reviewed.npz"), "out_dir": str(out),
               "iterations": iterations, "phantom_seeds": parse_seeds(phantom_seeds),
               "calibration_seeds": parse_seeds(calibration_seeds),
               "evaluation_seeds": the_set["seeds"],
               "card": {"model_id": model_id, "version": "1", "parent": parent_id,
                        "data_hash": data_hash,
                        "label_versions": {str(t["tile_id"]): t["head_version"]
                                           for t in tiles},
                        "reviewed_cases": len({t["case_id"] for t in tiles}),
                        "intended_use": parent["card"]["intended_use"]}}
        (work / "job.json").write_text(json.dumps(job))
        figures = _run_training(work / "job.json", config.models.training_memory_mb, log)
        model, _ = registry.register_directory(
            db, store, out, actor=actor,
            reason=f"trained from {len(tiles)} reviewed tiles on {parent_id}")
    gates.record_gate(db, config, model_id, figures, the_set, actor=actor)
    return registry.get_model(db, model["model_id"])


def _run_training(job: Path, memory_mb: int, log) -> dict[str, Any]:
    def cap_memory() -> None:  # in the child, before it imports torch
        limit = memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "appliance.retrain_runner", str(job)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=cap_memory,
        env={**os.environ, "PYTHONHASHSEED": "0"})
    try:
        stdout, stderr = process.communicate(timeout=TRAINING_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AomasError("the training took longer than its limit; nothing was "
                         "registered") from None
    for line in stderr.strip().splitlines()[-5:]:
        log(line)
    if process.returncode != 0:
        last = (stderr.strip().splitlines() or ["no output"])[-1]
        raise AomasError(f"the training failed ({last}); nothing was registered. Above "
                         f"models.training_memory_mb ({memory_mb}) it is stopped")
    log(f"trained and measured in {time.monotonic() - started:.0f} s")
    return json.loads(stdout.strip().splitlines()[-1])
