"""Bad input gets a clear error and the SCP keeps serving."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom

from dicom.send import send_files
from tests.conftest import need, storescu

NEW_SERIES_ROOT = "1.2.826.0.1.3680043.10.1455.9."


def rewrite(source: Path, target: Path, series: str, **changes) -> Path:
    ds = pydicom.dcmread(source)
    ds.SeriesInstanceUID = series
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{series}.{ds.InstanceNumber}"
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(target)
    return target


def split_series_with_one_changed(studies, tmp_path, series: str, instance_number: int,
                                  change) -> list[Path]:
    """The split phantom as a new series, ``change(ds)`` applied to one instance."""
    paths = []
    for source in sorted(studies["split"]["dir"].iterdir()):
        ds = pydicom.dcmread(source)
        changes = change(ds) if ds.InstanceNumber == instance_number else {}
        paths.append(rewrite(source, tmp_path / source.name, series, **changes))
    return paths


def echo_ok(port: int) -> bool:
    result = subprocess.run([need("echoscu"), "-aec", "AOMAS", "127.0.0.1", str(port)],
                            capture_output=True)
    return result.returncode == 0


def test_missing_pixel_data_fails_the_run_clearly(box, studies, tmp_path):
    box.start()
    source = next(studies["multiframe"]["dir"].iterdir())
    path = rewrite(source, tmp_path / "nopixels.dcm", NEW_SERIES_ROOT + "1", PixelData=None)
    assert storescu(box.dicom_port, path).returncode == 0
    # A multi-frame header without pixels: completes by quiet, then fails with the reason.
    run = box.wait_for_run(NEW_SERIES_ROOT + "1")
    assert run["state"] == "FAILED"
    assert run["reason"] == "instance #1 has no pixel data"
    assert echo_ok(box.dicom_port)


def test_garbage_pixel_bytes_fail_the_run_clearly(box, studies, tmp_path):
    box.start()
    source = next(studies["multiframe"]["dir"].iterdir())
    path = rewrite(source, tmp_path / "garbage.dcm", NEW_SERIES_ROOT + "2",
                   PixelData=b"\x5a\xa5" * 1001)
    assert storescu(box.dicom_port, path).returncode == 0
    run = box.wait_for_run(NEW_SERIES_ROOT + "2")
    assert run["state"] == "FAILED"
    assert "pixel data cannot be decoded" in run["reason"]
    assert echo_ok(box.dicom_port)


def test_truncated_file_fails_the_run_clearly(box, studies, tmp_path):
    box.start()
    source = next(studies["multiframe"]["dir"].iterdir())
    whole = rewrite(source, tmp_path / "whole.dcm", NEW_SERIES_ROOT + "3")
    truncated = tmp_path / "truncated.dcm"
    data = whole.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    # DCMTK refuses to read a truncated file, so send its raw bytes with pynetdicom.
    [result] = send_files([truncated], "127.0.0.1", box.dicom_port)
    assert result.ok, result
    run = box.wait_for_run(NEW_SERIES_ROOT + "3")
    assert run["state"] == "FAILED"
    assert "truncated or damaged" in run["reason"] or "cannot be read" in run["reason"]
    assert echo_ok(box.dicom_port)


def test_a_dataset_of_garbage_bytes_is_refused_and_not_stored(box, tmp_path):
    box.start()
    garbage = tmp_path / "garbage.dcm"
    # A valid file meta header followed by bytes that are no dataset at all.
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.OphthalmicTomographyImageStorage
    meta.MediaStorageSOPInstanceUID = NEW_SERIES_ROOT + "4.1"
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.save_as(garbage, enforce_file_format=True)
    garbage.write_bytes(garbage.read_bytes() + bytes(range(256)) * 40)
    [result] = send_files([garbage], "127.0.0.1", box.dicom_port)
    assert result.status is not None and 0xC000 <= result.status <= 0xCFFF, result
    assert box.object_files() == []
    assert echo_ok(box.dicom_port)


def test_a_file_that_is_not_dicom_is_reported_by_send(box, tmp_path):
    box.start()
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00garbage" * 100)
    sent = box.aomas("send", str(junk), "--to", f"127.0.0.1:{box.dicom_port}", check=False)
    assert sent.returncode == 1
    assert "not a DICOM file" in sent.stderr
    assert echo_ok(box.dicom_port)


def test_mismatched_frame_sizes_in_one_series_fail_the_run(box, studies, tmp_path):
    box.start()
    series = NEW_SERIES_ROOT + "5"
    paths = split_series_with_one_changed(  # B-scan 7 with half the A-lines
        studies, tmp_path, series, 7,
        lambda ds: {"Columns": ds.Columns // 2,
                    "PixelData": ds.pixel_array[:, : ds.Columns // 2].tobytes()})
    assert storescu(box.dicom_port, *paths).returncode == 0
    run = box.wait_for_run(series)
    assert run["state"] == "FAILED"
    assert "must have the same size" in run["reason"]
    assert "#7" in run["reason"]
    assert echo_ok(box.dicom_port)


def test_mixed_frames_of_reference_in_one_series_fail_the_run(box, studies, tmp_path):
    box.start()
    series = NEW_SERIES_ROOT + "6"
    paths = split_series_with_one_changed(
        studies, tmp_path, series, 3, lambda ds: {"FrameOfReferenceUID": series + ".99"})
    assert storescu(box.dicom_port, *paths).returncode == 0
    run = box.wait_for_run(series)
    assert run["state"] == "FAILED"
    assert "different frame of reference" in run["reason"] and "#3" in run["reason"]


BROKEN_UIDS = {"../../etc/passwd": "not digits and dots", "1.2.3\x00.4": "not digits and dots",
               "1." + "2" * 10_007: "10009 characters long", "['1.2', '3.4']": "not digits",
               "1.02.3": "not digits and dots", "": "is empty"}


def broken_inputs(studies, tmp_path) -> dict[str, Path]:
    """One split-phantom instance per way of being broken that the appliance cannot rely on."""
    source = sorted(studies["split"]["dir"].iterdir())[0]
    made = {}
    for index, (uid, _) in enumerate(BROKEN_UIDS.items()):
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            ds = pydicom.dcmread(source)
            setattr(ds, keyword, uid)
            # The request carries the file meta's instance UID: keep it valid so the
            # dataset's own value is what is judged.
            ds.file_meta.MediaStorageSOPInstanceUID = NEW_SERIES_ROOT + f"20.{index}"
            if keyword != "SOPInstanceUID":
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
            made[f"{keyword} {index}"] = tmp_path / f"{keyword}-{index}.dcm"
            ds.save_as(made[f"{keyword} {index}"])
    ds = pydicom.dcmread(source)
    ds.file_meta.MediaStorageSOPInstanceUID = NEW_SERIES_ROOT + "21.1"   # request ≠ dataset
    made["request UID differs"] = tmp_path / "differs.dcm"
    ds.save_as(made["request UID differs"])
    ds = pydicom.dcmread(source)
    ds.SOPClassUID = pydicom.uid.SecondaryCaptureImageStorage          # dataset ≠ request class
    made["SOP class differs"] = tmp_path / "class.dcm"
    ds.save_as(made["SOP class differs"])
    return made


def test_uids_and_identities_the_appliance_cannot_rely_on_are_refused_at_receive(
        box, studies, tmp_path):
    box.start()
    inputs = broken_inputs(studies, tmp_path)
    results = {}
    for name, path in inputs.items():     # one association each: a refusal ends none
        [results[name]] = send_files([path], "127.0.0.1", box.dicom_port)
    for name, result in results.items():
        expected = 0xA900 if name == "SOP class differs" else 0xC000
        assert result.status == expected, (name, result)
    assert box.object_files() == [] and box.query("SELECT * FROM runs") == []
    log = box.log()
    assert "Traceback" not in log and "0xC211" not in log
    assert "SOPInstanceUID is 10009 characters long" in log
    assert "StudyInstanceUID is not digits and dots" in log
    assert "differs from the request's" in log
    assert "\x00" not in log
    assert echo_ok(box.dicom_port)


def test_an_image_laterality_that_is_no_eye_fails_the_run_before_any_output(box, studies,
                                                                              tmp_path):
    box.start()
    series = NEW_SERIES_ROOT + "22"
    paths = split_series_with_one_changed(studies, tmp_path, series, 1, lambda ds: {})
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.ImageLaterality = "X\x1b"
        ds.save_as(path)
    assert storescu(box.dicom_port, *paths).returncode == 0
    run = box.wait_for_run(series)
    assert run["state"] == "FAILED"
    assert "Image Laterality that is not R, L, U or B" in run["reason"]
    assert run["reason"].isprintable()


def test_a_damaged_functional_group_fails_the_run_as_bad_input_not_an_internal_error(
        box, studies, tmp_path):
    box.start()
    series = NEW_SERIES_ROOT + "23"
    paths = split_series_with_one_changed(studies, tmp_path, series, 1, lambda ds: {})
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence = pydicom.Sequence([])
        ds.save_as(path)
    assert storescu(box.dicom_port, *paths).returncode == 0
    run = box.wait_for_run(series)
    assert run["state"] == "FAILED"
    assert "attribute the appliance cannot read" in run["reason"], run["reason"]
    assert "internal error" not in run["reason"]
