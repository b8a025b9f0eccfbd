"""DICOM in: DCMTK storescu/echoscu as the scanner against a running `aomas serve`."""

from __future__ import annotations

import json
import subprocess
import time

import numpy as np
import pydicom
from pydicom.uid import CTImageStorage, SecondaryCaptureImageStorage, generate_uid

from tests.conftest import need, storescu


def test_multiframe_opt_becomes_a_succeeded_run(box, studies):
    box.start()
    study = studies["multiframe"]
    sent = storescu(box.dicom_port, *sorted(study["dir"].iterdir()))
    assert sent.returncode == 0, sent.stderr
    run = box.wait_for_run(study["series_instance_uid"])
    assert run["state"] == "SUCCEEDED", run["reason"]
    result = json.loads(run["result"])
    assert result["volume"]["shape"] == [24, 112, 64]
    assert result["volume"]["spacing_mm"] == [0.001, 0.001, 0.001]
    manifest = json.loads(run["manifest"])
    assert set(manifest) >= {"input_sha256", "pipeline", "model", "parameters", "seed"}
    assert manifest["pipeline"]["commit"] != ""


def test_split_frame_series_completes_at_its_expected_count(make_box, studies):
    # A long idle time proves completion came from Images in Acquisition, not from quiet.
    box = make_box(dicom__series_idle_seconds=600.0)
    box.start()
    study = studies["split"]
    assert storescu(box.dicom_port, study["dir"]).returncode == 0
    run = box.wait_for_run(study["series_instance_uid"], timeout=30)
    assert run["state"] == "SUCCEEDED", run["reason"]
    assert json.loads(run["result"])["volume"]["shape"] == [24, 112, 64]
    assert len(box.runs_for_series(study["series_instance_uid"])) == 1


def test_folder_of_mixed_files(box, studies, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("multiframe", "split"):
        for path in studies[name]["dir"].iterdir():
            (folder / f"{name}-{path.name}").write_bytes(path.read_bytes())
    secondary = secondary_capture()
    secondary.save_as(folder / "sc.dcm", enforce_file_format=True)
    (folder / "notes.txt").write_text("not DICOM")
    box.start()
    sent = storescu(box.dicom_port, folder, extra=["+sd", "-nh"])
    assert "notes.txt" in sent.stdout + sent.stderr  # storescu says it skipped it
    for name in ("multiframe", "split"):
        run = box.wait_for_run(studies[name]["series_instance_uid"])
        assert run["state"] == "SUCCEEDED", run["reason"]
    # The lone secondary capture has no pixel spacing: a clear reason, not a crash.
    run = box.wait_for_run(secondary.SeriesInstanceUID)
    assert run["state"] == "FAILED"
    assert "no pixel spacing" in run["reason"]
    assert box.query("SELECT count(*) FROM instances")[0][0] == 1 + 24 + 1


def test_unsupported_sop_class_is_refused_and_nothing_stored(box, tmp_path):
    ct = secondary_capture()
    ct.SOPClassUID = ct.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ct.save_as(tmp_path / "ct.dcm", enforce_file_format=True)
    box.start()
    sent = storescu(box.dicom_port, tmp_path / "ct.dcm")
    assert sent.returncode != 0
    assert "no presentation context" in (sent.stdout + sent.stderr).lower()
    assert box.query("SELECT count(*) FROM instances")[0][0] == 0
    assert box.object_files() == []


def test_unknown_calling_ae_is_refused_and_logged(make_box, studies):
    box = make_box(dicom__allowed_calling_aes=["SCANNER1"])
    box.start()
    refused = subprocess.run([need("echoscu"), "-aet", "INTRUDER", "-aec", "AOMAS",
                              "127.0.0.1", str(box.dicom_port)], capture_output=True, text=True)
    assert refused.returncode != 0
    accepted = subprocess.run([need("echoscu"), "-aet", "SCANNER1", "-aec", "AOMAS",
                               "127.0.0.1", str(box.dicom_port)], capture_output=True, text=True)
    assert accepted.returncode == 0, accepted.stderr
    sent = storescu(box.dicom_port, studies["multiframe"]["dir"], aet="INTRUDER")
    assert sent.returncode != 0
    assert box.query("SELECT count(*) FROM instances")[0][0] == 0
    assert "rejected association from calling AE 'INTRUDER' at 127.0.0.1" in box.log()


def test_resend_is_idempotent(box, studies):
    box.start()
    study = studies["multiframe"]
    assert storescu(box.dicom_port, study["dir"]).returncode == 0
    first = box.wait_for_run(study["series_instance_uid"])
    objects = box.object_files()
    assert storescu(box.dicom_port, study["dir"]).returncode == 0
    assert box.object_files() == objects
    assert box.query("SELECT count(*) FROM instances")[0][0] == 1
    runs = box.runs_for_series(study["series_instance_uid"])
    assert [r["run_id"] for r in runs] == [first["run_id"]]


def test_conflicting_resend_keeps_the_first_and_is_audited(box, studies, tmp_path):
    box.start()
    original = sorted(studies["multiframe"]["dir"].iterdir())[0]
    assert storescu(box.dicom_port, original).returncode == 0
    changed = pydicom.dcmread(original)
    pixels = changed.pixel_array.copy()
    pixels[0, 0, 0] ^= 1
    changed.PixelData = pixels.tobytes()
    changed.save_as(tmp_path / "changed.dcm")
    sent = storescu(box.dicom_port, tmp_path / "changed.dcm")
    assert sent.returncode == 0
    kept = box.query("SELECT sha256 FROM instances")
    assert len(kept) == 1
    events = box.query("SELECT * FROM audit_events WHERE action = 'instance.conflict'")
    assert len(events) == 1
    detail = json.loads(events[0]["detail"])
    assert detail["kept_sha256"] == kept[0]["sha256"] != detail["refused_sha256"]
    assert events[0]["object_id"] == changed.SOPInstanceUID


def test_disk_below_watermark_answers_a700_and_keeps_no_file(make_box, studies):
    box = make_box(dicom__min_free_disk_mb=10**9)  # a petabyte: always below
    box.start()
    sent = storescu(box.dicom_port, studies["multiframe"]["dir"])
    # DCMTK names the 0xA7xx statuses "Refused: OutOfResources".
    assert "refused: outofresources" in (sent.stdout + sent.stderr).lower()
    assert box.object_files() == []
    assert list((box.data_dir / "spool").iterdir()) == []
    assert box.query("SELECT count(*) FROM instances")[0][0] == 0


def test_late_instance_creates_a_superseding_run(box, studies, tmp_path):
    # Without Images in Acquisition the series completes after quiet (1 s here).
    files = []
    for path in sorted(studies["split"]["dir"].iterdir()):
        ds = pydicom.dcmread(path)
        del ds.ImagesInAcquisition
        ds.SeriesInstanceUID = series = "1.2.826.0.1.3680043.10.1455.77"
        files.append(tmp_path / path.name)
        ds.save_as(files[-1])
    box.start()
    assert storescu(box.dicom_port, *files[:-1]).returncode == 0
    first = box.wait_for_run(series)
    assert json.loads(first["result"])["volume"]["shape"][0] == 23
    assert storescu(box.dicom_port, files[-1]).returncode == 0
    second = box.wait_for_run(series, count=2)
    assert second["run_id"] != first["run_id"]
    assert json.loads(second["result"])["volume"]["shape"][0] == 24
    old = box.query("SELECT superseded_by FROM runs WHERE run_id = ?", (first["run_id"],))
    assert old[0]["superseded_by"] == second["run_id"]


def secondary_capture() -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "TEST^SC", "SC-1", "OT"
    ds.ConversionType = "WSD"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 32, 48, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.arange(32 * 48, dtype="<u2").tobytes()
    return ds


def test_patient_names_and_ids_never_reach_the_logs(make_box, studies):
    box = make_box(appliance__log_level="DEBUG")
    box.start()
    study = studies["multiframe"]
    assert storescu(box.dicom_port, study["dir"]).returncode == 0
    box.wait_for_run(study["series_instance_uid"])
    ds = pydicom.dcmread(next(study["dir"].iterdir()), stop_before_pixels=True)
    log = box.log()
    assert "case 1 complete" in log  # the log was written at all
    assert str(ds.PatientName) not in log and "PHANTOM^SEED" not in log
    assert ds.PatientID not in log


def test_associations_beyond_the_cap_are_rejected_as_transient(make_box):
    from pynetdicom import AE

    box = make_box(dicom__max_associations=1)
    box.start()
    ae = AE(ae_title="HOLDER")
    ae.add_requested_context("1.2.840.10008.1.1")
    for _ in range(50):  # the start-up probe's association may still be winding down
        held = ae.associate("127.0.0.1", box.dicom_port, ae_title="AOMAS")
        if held.is_established:
            break
        time.sleep(0.1)
    assert held.is_established
    try:
        second = subprocess.run([need("echoscu"), "-aec", "AOMAS", "127.0.0.1",
                                 str(box.dicom_port)], capture_output=True, text=True)
        assert second.returncode != 0
        # rejected-transient, local limit exceeded (PS3.8 9.3.4): a sender retries later
        assert "local-limit-exceeded" in (second.stdout + second.stderr).lower().replace(
            " ", "-") or "transient" in (second.stdout + second.stderr).lower()
    finally:
        held.release()
    after = subprocess.run([need("echoscu"), "-aec", "AOMAS", "127.0.0.1", str(box.dicom_port)],
                           capture_output=True, text=True)
    assert after.returncode == 0


def test_unacknowledged_leftovers_in_the_spool_are_swept_at_start(box):
    spool = box.data_dir / "spool"
    spool.mkdir(parents=True)
    (spool / "tmpabc123.dcm").write_bytes(b"half a dataset")
    staged = box.data_dir / "staging" / "123-artifact.tmp"  # a worker's, being written
    staged.parent.mkdir(parents=True)
    staged.write_bytes(b"qc png")
    box.start("scp")
    assert list(spool.iterdir()) == []
    assert staged.read_bytes() == b"qc png"
    assert "removed 1 unacknowledged file(s)" in box.log()


def test_objects_no_row_refers_to_are_swept_at_start_once_old(box, studies):
    import hashlib
    import os
    from pathlib import Path

    box.start("scp")
    assert storescu(box.dicom_port, studies["multiframe"]["dir"]).returncode == 0
    [stored] = box.object_files()
    box.stop_all()

    def plant(data: bytes, age_seconds: float) -> Path:
        sha256 = hashlib.sha256(data).hexdigest()
        path = box.data_dir / "objects" / sha256[:2] / sha256
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (time.time() - age_seconds,) * 2)
        return path

    day = 86_400
    orphan = plant(b"renamed into the store, then killed before the commit", day)
    young = plant(b"a run's artifact, its run still going", 60)   # younger than a run's deadline
    os.utime(stored, (time.time() - day,) * 2)                      # old, and referenced
    box.start("scp")
    assert not orphan.exists()
    assert young.exists() and stored.exists()
    assert "removed 1 object(s) that no row refers to" in box.log()
