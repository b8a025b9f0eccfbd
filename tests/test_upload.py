"""DICOM upload through the API: stored exactly like a C-STORE, processed like one, and a
refused file loses none of the files accepted before it."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ComprehensiveSRStorage, ExplicitVRLittleEndian, generate_uid

from appliance.demo.study import write_phantom_study
from gpu.phantom import PhantomSpec
from tests.conftest import WebApp


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


def padded(path: Path, total_bytes: int) -> bytes:
    """The phantom's OPT file grown to ``total_bytes`` by a private OB element: as large as a
    wide-field volume on the wire, as cheap as the small phantom to process."""
    ds = dcmread(path)
    block = ds.private_block(0x0009, "AOMAS TEST PADDING", create=True)
    block.add_new(0x01, "OB", b"\0" * (total_bytes - path.stat().st_size))
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_a_volume_larger_than_64_mib_is_stored(review_box, tmp_path):
    """It used to be 413: the security settings set the body limit to 64 MiB over the upload
    route's 2 GiB, and waitress cuts bodies at 1 GiB whatever Flask says."""
    truth = write_phantom_study(tmp_path, PhantomSpec(seed=34, b_scans=24, depth=112,
                                                      a_lines=64))
    (path,) = (tmp_path / "dicom").glob("*.dcm")
    data = padded(path, 100 * 2**20)
    answer = review_box.login("mia").post(
        f"{review_box.url}/api/v1/cases", timeout=120,
        files=[("files", ("volume.dcm", data, "application/dicom"))])
    assert answer.status_code == 201, answer.text[:500]
    (row,) = review_box.box.query("SELECT sha256, size_bytes FROM instances WHERE "
                                  "series_instance_uid = ?", (truth["series_instance_uid"],))
    assert row["sha256"] == hashlib.sha256(data).hexdigest() and row["size_bytes"] == len(data)
    assert not list((review_box.box.data_dir / "spool").glob("upload-*"))


def test_the_upload_limit_is_one_setting_both_servers_keep(tmp_path):
    from ui.server import WebServer

    web = WebApp(tmp_path, web__max_upload_mb=1)
    mia, spool = web.client("mia"), web.store.spool
    too_large = mia.post("/api/v1/cases", data={"files": (io.BytesIO(b"\0" * 2**21), "a.dcm")})
    assert too_large.status_code == 413
    assert "1 MiB" in too_large.get_json()["error"]
    assert "web.max_upload_mb" in too_large.get_json()["error"]
    # Below the limit the body is read, and refused for what it is.
    small = mia.post("/api/v1/cases", data={"files": (io.BytesIO(b"\0" * 2**19), "a.dcm")})
    assert small.status_code == 422 and "Part 10" in small.get_json()["error"]
    assert not list(spool.iterdir())
    # Every other route keeps the 64 MiB limit, whatever the upload limit is.
    web = WebApp(tmp_path / "large", web__max_upload_mb=4096)
    answer = web.client().post("/api/v1/session", data=b"\0" * (65 * 2**20),
                               content_type="application/json")
    assert answer.status_code == 413
    server = WebServer(web.appliance)
    try:
        assert server.server.adj.max_request_body_size == 4096 * 2**20
    finally:
        server.server.close()
