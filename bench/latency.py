"""Scan-to-PACS latency: the last byte of a 128 × 256 × 256 OPT received by our SCP → the last
output acknowledged by Orthanc.

The appliance runs as it does under systemd (``aomas scp`` and ``aomas worker``, one process
each) with a real Orthanc as its only destination over C-STORE; DCMTK storescu is the scanner.
Each run is a fresh phantom (its own study), so nothing is deduplicated. Prints every run, the
median per stage, and the share spent on writing and sending DICOM (goal ≤ 15 %). Side by side,
DCMTK dcmsend sends the same output files to a second Orthanc: our delivery against the peer.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ingest import send, stop, wait_for_port  # bench/ingest.py: storescu and process helpers

from appliance.demo.pacs import LocalOrthanc, free_port
from appliance.demo.study import write_phantom_study
from appliance.storage import ObjectStore
from gpu.phantom import PhantomSpec

AOMAS = str(Path(sys.executable).with_name("aomas"))
SHAPE = (128, 256, 256)  # B-scans × depth × A-lines
# In the order the data flows, so the table reads as the pipeline.
STAGES = ("queue", "read_volume", "normalise", "axial_motion", "surfaces", "lateral_motion",
          "surfaces_corrected", "enface", "layers", "cones", "measurements_and_artifacts",
          "dicom_outputs", "bookkeeping", "delivery")


def start_appliance(work: Path, pacs: LocalOrthanc) -> tuple[list[subprocess.Popen], int]:
    port = free_port()
    config = work / "aomas.toml"
    config.write_text(
        f'[appliance]\ndata_dir = "{work / "var"}"\nlog_level = "WARNING"\n'
        f'[dicom]\nbind = "127.0.0.1"\nport = {port}\nmin_free_disk_mb = 1\n'
        f'[[destinations]]\nname = "orthanc"\nkind = "dimse"\nae_title = "{pacs.ae_title}"\n'
        f'host = "127.0.0.1"\nport = {pacs.dicom_port}\n')
    env = {**os.environ, "AOMAS_CONFIG": str(config)}
    processes = []
    for part in ("scp", "worker"):
        with open(work / f"{part}.log", "w") as log:  # the process has its own copy
            processes.append(subprocess.Popen([AOMAS, part], env=env, cwd=work,
                                              stdout=subprocess.DEVNULL, stderr=log))
    wait_for_port(port, processes[0])
    return processes, port


def wait_for_delivery(db_path: Path, series_instance_uid: str, timeout: float = 600) -> dict:
    """Timings of the series' run once all its outputs are acknowledged."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = sqlite3.connect(db_path, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            run = conn.execute(
                "SELECT r.* FROM runs r JOIN cases c USING (case_id) "
                "WHERE c.series_instance_uid = ?", [series_instance_uid]).fetchone()
            rows = [] if run is None else conn.execute(
                "SELECT state, updated_at FROM outbox WHERE run_id = ?",
                [run["run_id"]]).fetchall()
            received = conn.execute("SELECT max(received_at) FROM instances WHERE "
                                    "series_instance_uid = ?", [series_instance_uid]).fetchone()
        finally:
            conn.close()
        if run is not None and run["state"] == "FAILED":
            raise SystemExit(f"run failed: {run['reason']}")
        if rows and all(r["state"] == "sent" for r in rows):
            result = json.loads(run["result"])
            return {"received_at": received[0], "started_at": run["started_at"],
                    "finished_at": run["finished_at"],
                    "acknowledged_at": max(r["updated_at"] for r in rows),
                    "stages": result["stage_seconds"], "outputs": result["outputs"],
                    "device": result["device"]}
        time.sleep(0.1)
    raise SystemExit("outputs not delivered in time; see the worker log")


def breakdown(timing: dict) -> dict[str, float]:
    """Seconds per stage, adding up to the latency."""
    stages = dict(timing["stages"])
    processing = timing["finished_at"] - timing["started_at"]
    parts = {"queue": timing["started_at"] - timing["received_at"], **stages,
             "bookkeeping": processing - sum(stages.values()),
             "delivery": timing["acknowledged_at"] - timing["finished_at"]}
    parts["latency"] = timing["acknowledged_at"] - timing["received_at"]
    return parts


def dcmsend(port: int, files: list[Path]) -> float:
    start = time.perf_counter()
    result = subprocess.run(["dcmsend", "-aec", "ORTHANC", "127.0.0.1", str(port),
                             *map(str, files)], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"dcmsend failed: {result.stderr[-500:]}")
    return elapsed


def outputs_at_scale(size: str, work: Path) -> None:
    """Writing and delivering the outputs of a larger run, on synthetic content: what the GPU
    box, whose pipeline is 4-5× faster, spends on DICOM (this part runs on its CPU alike)."""
    import datetime as dt

    import numpy as np

    from appliance import outbox
    from appliance.config import destination_profile
    from appliance.database import connect
    from appliance.outputs import build_outputs, store_outputs
    from dicom.opt import OptStudy, uid_from, write_opt
    from dicom.provenance import Provenance
    from dicom.report import RegionMeasurements
    from dicom.segmentation import LAYER_LABELS
    from dicom.volume import read_volume

    b_scans, depth, a_lines = (int(n) for n in size.split("x"))
    rng = np.random.default_rng(0)
    study = OptStudy(patient_name="SCALE^BENCH", patient_id="BENCH",
                     study_instance_uid=uid_from("scale-study", size),
                     series_instance_uid=uid_from("scale-series", size),
                     frame_of_reference_uid=uid_from("scale-for", size))
    volume = read_volume(write_opt(rng.integers(0, 4000, (b_scans, depth, a_lines),
                                                dtype=np.uint16), (0.001,) * 3, study,
                                   work / "scale-in"))
    labels = np.zeros((b_scans, depth, a_lines), np.uint8)
    for label, (top, bottom) in enumerate(((0.33, 0.37), (0.37, 0.45), (0.47, 0.5)), start=1):
        labels[:, int(top * depth):int(bottom * depth)] = label
    enface = {k: rng.random((b_scans, a_lines), dtype=np.float32) for k in ("ISOS", "COST")}
    provenance = Provenance(run_id="scale" + "0" * 27, software_version="bench",
                            model_id="bench", weights_sha256="0" * 64,
                            device_serial_number="bench", created_at=dt.datetime.now(dt.UTC))
    regions = [RegionMeasurements("field", (0, b_scans), (0, a_lines),
                                  {"cone_count": 5000, "cone_density_per_mm2": 20000.0})]
    store = ObjectStore(work / "scale-var")
    start = time.perf_counter()
    objects = build_outputs(volume, rng.random(labels.shape, dtype=np.float32), enface, labels,
                            tuple(LAYER_LABELS), rng.random((5000, 2)) * (b_scans, a_lines),
                            regions, provenance)
    outputs = store_outputs(objects, store)
    written = time.perf_counter() - start

    pacs, peer = LocalOrthanc(work / "scale-orthanc"), LocalOrthanc(work / "scale-peer")
    pacs.start()
    peer.start()
    try:
        db = connect(work / "scale.db")
        db.execute("PRAGMA foreign_keys=OFF")  # the rows name a run this bench never stored
        destination = destination_profile({"name": "orthanc", "ae_title": pacs.ae_title,
                                           "port": pacs.dicom_port})
        outbox.enqueue(db, provenance.run_id, outputs, [destination])
        start = time.perf_counter()
        counts = outbox.deliver_due(db, store, [destination], calling_ae="AOMAS",
                                    retry_base_seconds=5, dead_after_seconds=3600)
        delivered = time.perf_counter() - start
        if counts != {"sent": len(outputs)}:
            raise SystemExit(f"delivery failed: {outbox.rows(db)}")
        peer_seconds = dcmsend(peer.dicom_port, [store.path_for(o["sha256"]) for o in outputs])
    finally:
        pacs.stop()
        peer.stop()
    size_mb = sum(o["bytes"] for o in outputs) / 1e6
    print(f"\noutputs of a {size} run (synthetic content, {size_mb:.0f} MB): writing "
          f"{written:.2f} s; delivery to Orthanc: aomas outbox {delivered:.2f} s, dcmsend "
          f"{peer_seconds:.2f} s, ratio {delivered / peer_seconds:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs (after one warm-up)")
    parser.add_argument("--outputs-size", default="512x512x512",
                        help="also write and deliver the outputs of a run this size ('' = no)")
    args = parser.parse_args()
    b_scans, depth, a_lines = SHAPE
    with tempfile.TemporaryDirectory(prefix="aomas-latency-",
                                     dir=os.environ.get("TMPDIR")) as tmp:
        work = Path(tmp)
        studies = []
        for seed in range(args.runs + 1):
            studies.append(write_phantom_study(
                work / f"study{seed}", PhantomSpec(seed=500 + seed, b_scans=b_scans,
                                                   depth=depth, a_lines=a_lines)))
        pacs, peer = LocalOrthanc(work / "orthanc"), LocalOrthanc(work / "peer-orthanc")
        pacs.start()
        peer.start()
        processes, port = start_appliance(work, pacs)
        try:
            measured = []
            for seed, truth in enumerate(studies):
                files = sorted((work / f"study{seed}" / "dicom").glob("*.dcm"))
                scanner_seconds = send(port, files)
                timing = wait_for_delivery(work / "var" / "aomas.db",
                                           truth["series_instance_uid"])
                parts = breakdown(timing)
                label = "warm-up" if seed == 0 else f"run {seed}"
                print(f"{label:<8} scanner send {scanner_seconds:5.2f} s; scan-to-PACS "
                      f"{parts['latency']:6.2f} s")
                if seed:
                    # The peer gets each run's outputs new too, as our Orthanc did.
                    measured.append((parts, dcmsend(peer.dicom_port, output_files(work, timing))))
            if measured:
                report(measured, timing["device"])
        finally:
            for process in processes:
                stop(process)
            pacs.stop()
            peer.stop()
        if args.outputs_size:
            outputs_at_scale(args.outputs_size, work)


def output_files(work: Path, timing: dict) -> list[Path]:
    store = ObjectStore(work / "var")
    return [store.path_for(o["sha256"]) for o in timing["outputs"]
            if o["kind"] != "layer_seg_labelmap"]


def report(measured: list[tuple[dict, float]], device: str) -> None:
    median = {key: statistics.median(parts[key] for parts, _ in measured)
              for key in measured[0][0]}
    total = median["latency"]
    print(f"\nscan-to-PACS latency, {'×'.join(map(str, SHAPE))} OPT, {device.upper()}, median of "
          f"{len(measured)} runs: {total:.2f} s")
    print(f"{'stage':<28}{'seconds':>9}{'share':>8}")
    for key in sorted(set(median) - {"latency"},
                      key=lambda k: STAGES.index(k) if k in STAGES else len(STAGES)):
        print(f"{key:<28}{median[key]:>9.3f}{median[key] / total:>8.1%}")
    dicom_share = (median["dicom_outputs"] + median["delivery"]) / total
    print(f"writing + sending DICOM: {median['dicom_outputs'] + median['delivery']:.2f} s = "
          f"{dicom_share:.1%} of the run (goal <= 15 %)")

    # The peer: DCMTK dcmsend (it proposes whatever SOP class a file has; storescu knows no
    # en-face class) sending the same output files to a second Orthanc.
    peer_seconds = statistics.median(seconds for _, seconds in measured)
    print(f"delivery of the outputs: aomas outbox {median['delivery']:.2f} s (from the run's "
          f"end, wake-up included), dcmsend {peer_seconds:.2f} s, ratio "
          f"{median['delivery'] / peer_seconds:.2f}")


if __name__ == "__main__":
    main()
