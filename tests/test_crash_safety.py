"""Crash safety: what a sender saw acknowledged is stored, and a killed worker's run completes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

from pydicom.filereader import read_file_meta_info

from appliance.demo.study import write_phantom_study
from gpu.phantom import PhantomSpec
from tests.conftest import need


def dataset_sha256(path: Path) -> str:
    """SHA-256 of the dataset after the file meta: the receiver writes its own meta header."""
    meta = read_file_meta_info(path)
    data = path.read_bytes()
    offset = 132 + 12 + meta.FileMetaInformationGroupLength
    return hashlib.sha256(data[offset:]).hexdigest()


def acknowledged_files(storescu_log: str) -> list[Path]:
    acknowledged, current = [], None
    for line in storescu_log.splitlines():
        if "Sending file:" in line:
            current = Path(line.split("Sending file:", 1)[1].strip())
        elif "Received Store Response (Success)" in line and current is not None:
            acknowledged.append(current)
            current = None
    return acknowledged


def test_sigkill_during_a_send_loses_no_acknowledged_instance(box, tmp_path):
    study = write_phantom_study(tmp_path / "many", PhantomSpec(seed=5, b_scans=300, depth=112,
                                                               a_lines=64), split_frames=True)
    box.start("scp")
    log_path = tmp_path / "storescu.log"
    with open(log_path, "w") as log:
        sender = subprocess.Popen([need("storescu"), "-v", "-aec", "AOMAS", "+sd", "127.0.0.1",
                                   str(box.dicom_port), str(tmp_path / "many" / "dicom")],
                                  stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while len(acknowledged_files(log_path.read_text())) < 60:
        assert time.monotonic() < deadline, log_path.read_text()[-2000:]
        time.sleep(0.01)
    box.kill("scp")
    sender.wait(timeout=60)
    acknowledged = acknowledged_files(log_path.read_text())
    assert 60 <= len(acknowledged) < len(study["files"]), "the kill came too late to test"

    box.start("scp")  # restart: sweeps the spool
    stored = {row["sop_instance_uid"]: row["sha256"]
              for row in box.query("SELECT sop_instance_uid, sha256 FROM instances")}
    for path in acknowledged:
        sop_instance_uid = str(read_file_meta_info(path).MediaStorageSOPInstanceUID)
        assert sop_instance_uid in stored, f"{path.name} was acknowledged but is not stored"
        object_path = box.data_dir / "objects" / stored[sop_instance_uid][:2] / \
            stored[sop_instance_uid]
        assert hashlib.sha256(object_path.read_bytes()).hexdigest() == stored[sop_instance_uid]
        assert dataset_sha256(object_path) == dataset_sha256(path)
    assert list((box.data_dir / "spool").iterdir()) == []


def test_sigkill_of_the_worker_mid_run_then_the_run_completes(box, tmp_path):
    # Big enough that preprocessing keeps the run RUNNING for seconds: time to kill the worker.
    truth = write_phantom_study(tmp_path / "big", PhantomSpec(seed=21, b_scans=128, depth=256,
                                                              a_lines=256))
    series = truth["series_instance_uid"]
    box.start("scp")
    box.start("worker")
    sent = box.aomas("send", str(tmp_path / "big" / "dicom"), "--to",
                     f"127.0.0.1:{box.dicom_port}")
    assert "sent 1 of 1" in sent.stdout
    box.wait_for_run(series, states=("RUNNING",), timeout=60)
    box.kill("worker")
    assert box.runs_for_series(series)[-1]["state"] == "RUNNING"

    box.start("worker")
    run = box.wait_for_run(series, timeout=120)
    assert run["state"] == "SUCCEEDED", run["reason"]
    assert run["attempts"] == 2
    assert json.loads(run["result"])["volume"]["shape"] == [128, 256, 256]
