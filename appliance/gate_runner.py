"""One gate evaluation, run as its own process by ``appliance.gates``: the model's networks are
loaded and measured here, not in the process that asked, so a model that exhausts memory or
crashes costs that process nothing. Prints one JSON line of figures.

``python -m appliance.gate_runner MODEL_DIR SEEDS`` (SEEDS as ``aomas evaluate`` takes them).
"""

from __future__ import annotations

import json
import sys

import numpy as np

from appliance.evaluation import evaluate, parse_seeds
from appliance.registry import model_record
from gpu.phantoms import FAMILIES

BOOTSTRAP_RESAMPLES = 2000


def figures(rows: list[dict], pooled: dict) -> dict:
    """Mean cone F1 over the set's phantoms with a bootstrap 95 % interval over phantoms, the
    worst phantom, and the worse family's detection ECE with its interval. A phantom the
    pipeline refused counts as F1 0: a failed condition, never dropped."""
    f1 = np.array([0.0 if "refused" in row else row["f1"] for row in rows])
    families = np.array([row["family"] for row in rows])
    resampled = np.random.default_rng(0).choice(f1, (BOOTSTRAP_RESAMPLES, len(f1))).mean(1)
    worst = int(np.argmin(f1))
    family = max(pooled, key=lambda name: pooled[name]["detection"]["ece"])
    detection = pooled[family]["detection"]
    return {
        "f1_mean": round(float(f1.mean()), 4),
        "f1_95": [round(float(v), 4) for v in np.percentile(resampled, [2.5, 97.5])],
        "f1_min": round(float(f1[worst]), 4),
        "f1_min_phantom": f"family {rows[worst]['family']} seed {rows[worst]['seed']}",
        "ece": detection["ece"], "ece_95": detection["ece_95"], "ece_family": family,
        "phantoms": len(rows),
        "per_family": {name: {"f1_mean": round(float(f1[families == name].mean()), 4),
                              "ece": pooled[name]["detection"]["ece"]} for name in pooled},
    }


def main(argv: list[str]) -> None:
    directory, seeds = argv
    rows, pooled = evaluate(model_record(directory), parse_seeds(seeds), FAMILIES)
    print(json.dumps(figures(rows, pooled), sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1:])
