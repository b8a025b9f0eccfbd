"""Gates: a model version measured on the frozen evaluation set before it may serve.

The set is phantoms of both families at the ``models.evaluation_seeds``, made by the
generators in ``gpu``; its hash covers the seeds, the families and the generators' source, so a
changed generator is a changed set and its results are not compared with the old ones. The
evaluation runs in its own process (``appliance.gate_runner``). Each result is kept with the
thresholds it was judged by, the set's hash, the code version and who asked; results are never
changed or deleted. A version passes when its mean cone F1 reaches ``models.gate_min_f1`` and
the worse family's detection ECE stays within ``models.gate_max_ece``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import sqlite_utils

import gpu
from appliance import audit, registry
from appliance.config import Config
from appliance.database import write_transaction
from appliance.evaluation import parse_seeds
from appliance.exceptions import AomasError
from appliance.storage import ObjectStore
from appliance.version import pipeline_version
from gpu.phantoms import FAMILIES

GENERATORS = ("phantom.py", "phantom_b.py", "phantoms.py", "training.py")
EVALUATION_TIMEOUT_SECONDS = 3600


def evaluation_set(seeds_text: str) -> dict[str, Any]:
    """What the set is, and its hash."""
    seeds = parse_seeds(seeds_text)
    source = Path(gpu.__file__).parent
    generators = {name: hashlib.sha256((source / name).read_bytes()).hexdigest()
                  for name in GENERATORS}
    described = {"families": list(FAMILIES), "seeds": seeds, "generators": generators}
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()
    return {**described, "sha256": digest}


def verdict(figures: dict, min_f1: float, max_ece: float) -> tuple[bool, list[str]]:
    """Passed, and the failing figures said as a person reads them ("F1 0.87 below 0.90")."""
    failures = []
    if figures["f1_mean"] < min_f1:
        failures.append(f"F1 {_apart(figures['f1_mean'], min_f1)} below {min_f1:.2f}")
    if figures["ece"] > max_ece:
        failures.append(f"ECE {figures['ece']:.3f} above {max_ece:.3f} "
                        f"(family {figures['ece_family']})")
    return not failures, failures


def _apart(value: float, threshold: float) -> str:
    """``value`` with two decimals, or as many more as it takes not to read as the threshold
    ("F1 0.895 below 0.90", never "F1 0.90 below 0.90")."""
    for decimals in range(2, 6):
        if f"{value:.{decimals}f}" != f"{threshold:.{decimals}f}":
            return f"{value:.{decimals}f}"
    return f"{value:.6f}"


def run_gate(db: sqlite_utils.Database, store: ObjectStore, config: Config, model_id: str, *,
             actor: str) -> dict[str, Any]:
    """Evaluate the registered version on the set in a subprocess; record and return the result."""
    model = registry.get_model(db, model_id)
    directory = registry.model_directory(store, config.data_dir, model)
    the_set = evaluation_set(config.models.evaluation_seeds)
    completed = subprocess.run(
        [sys.executable, "-m", "appliance.gate_runner", str(directory),
         ",".join(map(str, the_set["seeds"]))],
        capture_output=True, text=True, timeout=EVALUATION_TIMEOUT_SECONDS,
        env={**os.environ, "PYTHONHASHSEED": "0"})
    if completed.returncode != 0:
        last = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        raise AomasError(f"the evaluation of {model_id} failed ({last}); nothing was recorded")
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    return record_gate(db, config, model_id, figures, the_set, actor=actor)


def record_gate(db: sqlite_utils.Database, config: Config, model_id: str, figures: dict,
                the_set: dict, *, actor: str) -> dict[str, Any]:
    """Keep the figures an evaluation on ``the_set`` measured (``gate_runner.figures``),
    judged by the current thresholds; return the result as ``results`` shows it."""
    min_f1, max_ece = config.models.gate_min_f1, config.models.gate_max_ece
    passed, failures = verdict(figures, min_f1, max_ece)
    row = {"model_id": model_id, "at": time.time(), "actor": actor,
           "evaluation_set_sha256": the_set["sha256"],
           "evaluation_set": json.dumps({k: v for k, v in the_set.items() if k != "sha256"}),
           "code_version": json.dumps(pipeline_version(), sort_keys=True),
           "min_f1": min_f1, "max_ece": max_ece, "f1_mean": figures["f1_mean"],
           "f1_low": figures["f1_95"][0], "f1_high": figures["f1_95"][1],
           "ece": figures["ece"], "ece_low": figures["ece_95"][0],
           "ece_high": figures["ece_95"][1], "passed": int(passed),
           "failures": json.dumps(failures), "figures": json.dumps(figures, sort_keys=True)}
    with write_transaction(db):
        row["id"] = db["gate_results"].insert(row).last_pk
        audit.record(db, actor=actor, action="model.gate", object_kind="model",
                     object_id=model_id, detail={"passed": passed, "f1_mean": figures["f1_mean"],
                                                 "ece": figures["ece"],
                                                 "evaluation_set": the_set["sha256"][:16]})
    return shown(row)


def results(db: sqlite_utils.Database, model_id: str) -> list[dict[str, Any]]:
    """Every gate result of the version, newest first."""
    return [shown(row) for row in db["gate_results"].rows_where(
        "model_id = ?", [model_id], order_by="id desc")]


def shown(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "passed": bool(row["passed"]),
            **{key: json.loads(row[key]) for key in ("evaluation_set", "code_version",
                                                     "failures", "figures")}}

