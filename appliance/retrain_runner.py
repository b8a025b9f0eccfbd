"""One retraining, run as its own process by ``appliance.retraining`` under a memory cap: the
parent's cone network fine-tuned on the reviewed patches and phantoms, its calibration fitted
on phantoms, the new model written, and measured on the gate's evaluation set. Prints one JSON
line: the gate figures (``appliance.gate_runner.figures``).

``python -m appliance.retrain_runner JOB.json``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from appliance.evaluation import _samples, evaluate, fit_calibration
from appliance.gate_runner import figures
from appliance.registry import load_network, model_card, model_record, write_model
from gpu.phantoms import FAMILIES
from gpu.training import train


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    parent = model_record(job["parent_dir"])
    reviewed = np.load(job["reviewed"])
    samples = [SimpleNamespace(image=image, target=target)
               for image, target in zip(reviewed["images"], reviewed["targets"], strict=True)]
    log(f"{len(samples)} reviewed patches; making {len(job['phantom_seeds'])} phantoms per "
        "family")
    samples += _samples(FAMILIES, job["phantom_seeds"], log)
    cones = train("cones", samples, iterations=job["iterations"], log=log,
                  start=load_network(parent, "cones").train())
    del samples
    fitted = fit_calibration(cones, _samples(FAMILIES, job["calibration_seeds"], log))
    parent_card = model_card(parent)
    card = {
        **job["card"],
        "task": parent_card.get("task", ""),
        "architecture": parent_card.get("architecture", {}),
        "trained_on": f"{job['card']['reviewed_cases']} reviewed cases of this site "
                      f"({len(job['card']['label_versions'])} corrected tiles, the label "
                      "versions listed in label_versions) and phantoms of both families at "
                      f"seeds {job['phantom_seeds']}; cones fine-tuned from "
                      f"{job['card']['parent']}, layers the parent's.",
        "training": {"iterations_per_network": job["iterations"], "from": "reviewed labels",
                     "phantom_seeds": job["phantom_seeds"]},
        "calibration": {"detection": {"map": fitted.as_dict(), "families": list(FAMILIES),
                                      "seeds": job["calibration_seeds"]}},
        "limitations": [
            "Fine-tuned on this site's reviewed tiles: the tiles the review queue ranked "
            "likeliest to hold an error, not a random sample of the site's scans.",
            *parent_card.get("limitations", []),
        ],
    }
    networks = {"cones": cones.eval(), "layers": load_network(parent, "layers")}
    # Measured before it is written for good: the card carries its own gate figures.
    record = write_model(Path(job["out_dir"]), networks, {**card, "held_out_metrics": {}})
    measured = figures(*evaluate(record, job["evaluation_seeds"], FAMILIES))
    write_model(Path(job["out_dir"]), networks, {
        **card, "held_out_metrics": measured,
        "gate_figures": {key: measured[key] for key in ("f1_mean", "f1_95", "f1_min", "ece",
                                                        "ece_95", "ece_family")},
        "evaluation_seeds": job["evaluation_seeds"]})
    print(json.dumps(measured, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1])
