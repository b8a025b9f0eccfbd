"""Model lifecycle benchmark: the time from registering a version to its gate result, and what
shadow runs cost a worker.

1. `aomas model register` then `aomas model gate` (the evaluation in its own process) on a
   fresh data dir, with the default evaluation set (``models.evaluation_seeds``, 1-6: twelve
   phantoms) or ``--seeds``.
2. Throughput: the same small phantom studies sent by DCMTK storescu to `aomas serve`, once
   with production only and once with a shadow version beside it (same weights, so the extra
   work is exactly one more run per case); prints cases per minute of each and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from appliance.demo.pacs import free_port
from appliance.demo.study import write_phantom_study
from appliance.registry import BOOTSTRAP_DIR, CARD
from gpu.phantom import PhantomSpec

AOMAS = str(Path(sys.executable).with_name("aomas"))
SMALL = {"b_scans": 24, "depth": 112, "a_lines": 64}


def aomas(config: Path, *args: str) -> str:
    return subprocess.run([AOMAS, "--config", str(config), *args], check=True, text=True,
                          capture_output=True).stdout


def box(work: Path, seeds: str) -> tuple[Path, int]:
    """A fresh data dir after `aomas init`, and site-a's files (the bundled weights, another
    id) beside it; the config file and the DICOM port."""
    port = free_port()
    config = work / "aomas.toml"
    config.write_text(f'[appliance]\ndata_dir = "{work / "var"}"\nlog_level = "WARNING"\n'
                      f'[dicom]\nbind = "127.0.0.1"\nport = {port}\nmin_free_disk_mb = 1\n'
                      f'series_idle_seconds = 1.0\n[web]\nport = {free_port()}\n'
                      f'[models]\nevaluation_seeds = "{seeds}"\n')
    (work / "password").write_text("bench password 1")
    aomas(config, "init", "--admin-password-file", str(work / "password"))
    site = work / "site-a"
    shutil.copytree(BOOTSTRAP_DIR, site)
    card = json.loads((site / CARD).read_text())
    card.update(model_id="site-a", version="1", parent=card["model_id"])
    (site / CARD).write_text(json.dumps(card))
    return config, port


def throughput(work: Path, studies: list[Path], *, shadow: bool) -> float:
    config, port = box(work, "1")
    aomas(config, "model", "register", str(work / "site-a"))
    if shadow:
        aomas(config, "model", "promote", "site-a", "--stage", "SHADOW", "--override-reason",
              "benchmark")
    serve = subprocess.Popen([AOMAS, "--config", str(config), "serve"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(3)
        started = time.monotonic()
        for study in studies:
            subprocess.run(["storescu", "-aec", "AOMAS", "+sd", "127.0.0.1", str(port),
                            str(study)], check=True, capture_output=True)
        expected = len(studies) * (2 if shadow else 1)
        db = work / "var" / "aomas.db"
        while True:
            with sqlite3.connect(db) as conn:
                done = conn.execute("SELECT count(*) FROM runs WHERE state IN "
                                    "('SUCCEEDED', 'FAILED')").fetchone()[0]
            if done >= expected:
                break
            time.sleep(0.2)
        return len(studies) / ((time.monotonic() - started) / 60)
    finally:
        serve.terminate()
        serve.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1-6", help="evaluation set for the gate timing")
    parser.add_argument("--cases", type=int, default=4)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        (work / "gate").mkdir()
        config, _ = box(work / "gate", options.seeds)
        started = time.monotonic()
        aomas(config, "model", "register", str(work / "gate" / "site-a"))
        said = aomas(config, "model", "gate", "site-a").strip().splitlines()[-1]
        print(f"register → gate result ({options.seeds}, both families): "
              f"{time.monotonic() - started:.1f} s ({said})")
        studies = []
        for seed in range(options.cases):
            write_phantom_study(work / f"study{seed}", PhantomSpec(seed=300 + seed, **SMALL))
            studies.append(work / f"study{seed}" / "dicom")
        rates = {}
        for shadow in (False, True):
            (work / f"box{shadow}").mkdir()
            rates[shadow] = throughput(work / f"box{shadow}", studies, shadow=shadow)
        print(f"worker throughput, {options.cases} cases of {SMALL}: production only "
              f"{rates[False]:.1f} cases/min, with a shadow version {rates[True]:.1f} "
              f"cases/min (ratio {rates[True] / rates[False]:.2f})")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
