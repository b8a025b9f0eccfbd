"""DICOM upload through the API: stored exactly like a C-STORE, processed like one, and a
refused file loses none of the files accepted before it."""

from __future__ import annotations

import hashlib
import io

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ComprehensiveSRStorage, ExplicitVRLittleEndian, generate_uid

from appliance.phantom_study import write_phantom_study
from gpu.phantom import PhantomSpec


def sr_file() -> bytes:
    """A well-formed Part 10 file of a SOP class the appliance does not take."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = ComprehensiveSRStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_uploaded_files_are_stored_like_c_stores_and_processed(review_box, tmp_path):
    box, url = review_box.box, review_box.url
    mia = review_box.login("mia")
    truth = write_phantom_study(tmp_path, PhantomSpec(seed=33, b_scans=24, depth=112,
                                                      a_lines=64), split_frames=True)
    paths = sorted((tmp_path / "dicom").glob("*.dcm"))
    assert len(paths) == 24

    def upload(*parts: tuple[str, bytes]):
        return mia.post(f"{url}/api/v1/cases", timeout=60,
                        files=[("files", (name, data, "application/dicom"))
                               for name, data in parts])

    # File 3 is not DICOM: files 1 and 2 stay stored, the answer says which file and why.
    first = upload(*[(p.name, p.read_bytes()) for p in paths[:2]],
                   ("notes.txt", b"not a dicom file"),
                   *[(p.name, p.read_bytes()) for p in paths[2:4]])
    assert first.status_code == 422, first.text
    assert "file 3" in first.json()["error"] and "Part 10" in first.json()["error"]
    assert [s["file"] for s in first.json()["stored"]] == ["file 1", "file 2"]
    wrong_class = upload(("report.dcm", sr_file()))
    assert wrong_class.status_code == 422 and "SOP class" in wrong_class.json()["error"]
    assert mia.post(f"{url}/api/v1/cases", data={"x": "y"}).status_code == 422

    # The rest, with a file sent twice (harmless, as on the wire).
    rest = upload(*[(p.name, p.read_bytes()) for p in paths[1:]])
    assert rest.status_code == 201, rest.text
    assert len(rest.json()["stored"]) == 23

    rows = box.query("SELECT * FROM instances WHERE series_instance_uid = ?",
                     (truth["series_instance_uid"],))
    assert len(rows) == 24
    assert {row["sha256"] for row in rows} == \
        {hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    assert {row["calling_ae"] for row in rows} == {"API:mia"}
    run = box.wait_for_run(truth["series_instance_uid"], timeout=180)
    assert run["state"] == "SUCCEEDED", run["reason"]

    events = review_box.login("admin").get(f"{url}/api/v1/audit",
                                           params={"action": "case.upload"}).json()
    assert [(e["actor"], e["detail"]["instances"]) for e in events][:2] == [("mia", 23),
                                                                            ("mia", 2)]
    assert not list((box.data_dir / "spool").glob("upload-*"))


def test_uploads_the_scp_would_refuse_are_refused_with_422(review_box, studies, tmp_path):
    from tests.test_bad_input import broken_inputs

    mia = review_box.login("mia")
    for name, path in broken_inputs(studies, tmp_path).items():
        if name == "SOP class differs" or name == "request UID differs":
            continue     # no request to differ from: the file meta is the upload's only claim
        answer = mia.post(f"{review_box.url}/api/v1/cases", timeout=60,
                          files=[("files", ("x.dcm", path.read_bytes(), "application/dicom"))])
        assert answer.status_code == 422, (name, answer.status_code, answer.text)
        assert "file 1" in answer.json()["error"]
