"""Finding the run of the study a scanner just sent: runs name their study and series
(Study/Series Instance UID, accession number, modality, acquisition date; never the patient's
name or ID) and filter by study or accession number, in the CLI and the API."""

from __future__ import annotations

import io
import json

from pydicom import dcmread

from appliance.demo.study import write_phantom_study
from dicom.validity import plain_text
from gpu.phantom import PhantomSpec


def test_runs_name_their_study_and_filter_by_it(review_box, tmp_path):
    truth = write_phantom_study(tmp_path, PhantomSpec(seed=35, b_scans=24, depth=112,
                                                      a_lines=64))
    (path,) = (tmp_path / "dicom").glob("*.dcm")
    ds = dcmread(path)
    ds.AccessionNumber = "ACC-2026-0042"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    mia = review_box.login("mia")
    stored = mia.post(f"{review_box.url}/api/v1/cases", timeout=60,
                      files=[("files", ("a.dcm", buffer.getvalue(), "application/dicom"))])
    assert stored.status_code == 201, stored.text
    expected = {"study_instance_uid": truth["study_instance_uid"],
                "series_instance_uid": truth["series_instance_uid"],
                "accession_number": "ACC-2026-0042", "modality": "OPT",
                "acquisition_date": ds.AcquisitionDateTime[:8]}

    by_accession = mia.get(f"{review_box.url}/api/v1/runs",
                           params={"accession_number": "ACC-2026-0042"}).json()
    assert [run["study"] for run in by_accession] == [expected]
    by_study = mia.get(f"{review_box.url}/api/v1/runs",
                       params={"study_instance_uid": truth["study_instance_uid"]}).json()
    assert [run["run_id"] for run in by_study] == [by_accession[0]["run_id"]]
    assert mia.get(f"{review_box.url}/api/v1/runs",
                   params={"accession_number": "ACC-NOT-SENT"}).json() == []
    everything = mia.get(f"{review_box.url}/api/v1/runs", params={"limit": 500}).json()
    assert len(everything) > 1 and all("study" in run for run in everything)

    worklist = mia.get(f"{review_box.url}/", timeout=30).text
    date = expected["acquisition_date"]
    assert '<td class="accession">ACC-2026-0042</td>' in worklist
    assert f"{date[:4]}-{date[4:6]}-{date[6:]}" in worklist

    box = review_box.box
    listed = json.loads(box.aomas("--config", str(box.config_path), "runs", "list",
                                  "--accession", "ACC-2026-0042", "--json").stdout)
    assert [run["study"] for run in listed] == [expected]
    text = box.aomas("runs", "list", "--study", truth["study_instance_uid"]).stdout
    assert "ACC-2026-0042" in text and truth["series_instance_uid"] in text
    assert "AOMAS-PHANTOM" not in text          # the patient's ID is never listed
    shown = box.aomas("runs", "show", by_accession[0]["run_id"]).stdout
    assert "accession_number: ACC-2026-0042" in shown and "modality: OPT" in shown


def test_a_received_value_is_shown_only_when_it_is_plain_text():
    assert plain_text(" ACC-1 ", "SH") == "ACC-1"
    assert plain_text("A" * 17, "SH") is None          # longer than an SH holds
    assert plain_text("ACC\x1b[2J", "SH") is None      # a terminal escape from a peer
    assert plain_text(b"ACC", "SH") is None and plain_text("", "SH") is None
