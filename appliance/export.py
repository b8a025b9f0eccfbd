"""De-identified research export of one study: its inputs and outputs through the PS3.15 Basic
Application Level Confidentiality Profile, and the measurements CSV beside them.

dicognito does the profile's work: every PN and ID replaced, every instance UID (not the class
and transfer syntax UIDs) remapped through one randomiser per export, and every date and time
shifted by one offset, so that within an export the SEG's and SR's references still resolve to
the exported OPT and a study's intervals survive. Chosen over deid (pydicom/deid) because the
profile is its default rather than a recipe the site must write and keep right, and because
its UID mapping is consistent across all the files handed to one ``Anonymizer`` without state
kept by the caller. What dicognito keeps that the Basic Profile removes is removed here: the
free-text descriptions and comments, private elements, the birth date. Before the export
counts, every exported file is searched for the original patient names, IDs, birth dates and
UIDs; one found anywhere and nothing is kept.

File names are ours (case and instance numbers, output kinds), never a received value. The
audit log gets counts, never identifiers.
"""

from __future__ import annotations

import csv
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import sqlite_utils
from dicognito.anonymizer import Anonymizer
from dicognito.datetimeanonymizer import DateTimeAnonymizer
from pydicom.dataset import Dataset

from appliance import audit, runs
from appliance.exceptions import AomasError, InvalidInput, NotFound
from appliance.review import acceptance
from appliance.storage import ObjectStore, empty_directory, sha256_of

FORMAT = "aomas-export/1"
# PS3.16 CID 7050: the profile and the options this export conforms to.
PROFILE_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    ("113108", "Retain Patient Characteristics Option"),
)
# Basic Profile action X (remove) on free text that dicognito leaves in place.
FREE_TEXT = (
    "AdditionalPatientHistory", "AdmittingDiagnosesDescription", "ContentCreatorName",
    "DerivationDescription", "ImageComments", "InstitutionalDepartmentName",
    "PatientComments", "PerformedProcedureStepDescription", "ReasonForTheRequestedProcedure",
    "RequestedProcedureDescription", "SeriesDescription", "StudyComments", "StudyDescription",
    "TextComments",
)
TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC",
            "UI", "UT"}


class ExportLeak(AomasError):
    """An exported file still held an original identifier; nothing was exported."""


@dataclass
class Originals:
    """The identifiers that must not survive: collected from every source file."""

    texts: set[str] = field(default_factory=set)      # whole names, IDs: not inside any value
    exact: set[str] = field(default_factory=set)       # a name's parts, instance UIDs, birth
                                                       # dates: not as any whole value

    def collect(self, dataset: Dataset) -> None:
        for keyword in ("PatientName", "PatientID", "OtherPatientIDs"):
            for value in _values(dataset.get(keyword)):
                self.texts.add(value.upper())
                # One letter (an initial) would match any code string: "M", "F".
                self.exact.update(part.upper() for part in value.split("^") if len(part) > 1)
        self.exact.update(_values(dataset.get("PatientBirthDate")))
        for element in _elements(dataset):
            keyword = element.keyword or ""
            if element.VR == "UI" and not keyword.endswith("ClassUID") and \
                    keyword != "TransferSyntaxUID":
                self.exact.update(_values(element.value))

    def found_in(self, dataset: Dataset) -> str | None:
        """The keyword of the first element holding an original identifier, or None."""
        for element in _elements(dataset):
            if element.VR not in TEXT_VRS:
                continue
            for value in _values(element.value):
                upper = value.upper()
                parts = upper.split("^") if element.VR == "PN" else [upper]
                if any(part in self.exact for part in parts) or \
                        any(text in upper for text in self.texts):
                    return element.keyword or str(element.tag)
        return None


@dataclass(frozen=True)
class ExportSummary:
    directory: Path
    export_id: str
    cases: int
    inputs: int
    outputs: int
    date_shift: str


def export_study(db: sqlite_utils.Database, store: ObjectStore, study_instance_uid: str,
                 out_dir: Path, *, date_shift_days: int, actor: str) -> ExportSummary:
    """Write the study's de-identified inputs, outputs and measurements under ``out_dir``
    (empty or absent); audited with counts."""
    cases = db.execute(
        "SELECT c.case_id, c.series_instance_uid FROM cases c JOIN series s "
        "USING (series_instance_uid) WHERE s.study_instance_uid = ? ORDER BY c.case_id",
        [study_instance_uid]).fetchall()
    if not cases:
        raise NotFound("no case of a study with that Study Instance UID is on this box")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise InvalidInput(f"{out_dir} is not empty; export into a new directory")
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    anonymizer = Anonymizer(seed=secrets.token_hex(16))
    if date_shift_days:
        # First in line: it handles every date and time before dicognito's own random shift.
        anonymizer.add_element_handler(DateTimeAnonymizer(-24 * date_shift_days))
    originals, files, rows = Originals(), [], []
    counts = {"inputs": 0, "outputs": 0}
    try:
        for number, (case_id, series_instance_uid) in enumerate(cases, 1):
            case_dir = out_dir / f"case-{number}"
            instances = db.execute(
                "SELECT sha256 FROM instances WHERE series_instance_uid = ? "
                "ORDER BY instance_number, received_at", [series_instance_uid]).fetchall()
            series_uid = None
            for index, (sha256,) in enumerate(instances, 1):
                exported = _deidentified(store.path_for(sha256), anonymizer, originals)
                series_uid = series_uid or str(exported.SeriesInstanceUID)
                files.append(_save(exported, case_dir / "inputs" / f"instance-{index:04d}.dcm"))
                counts["inputs"] += 1
            run = _latest_result(db, case_id)
            if run is None:
                continue
            result = run["result"]
            sources = [("model", [{"kind": o.kind, "sha256": o.sha256} for o in result.outputs],
                        result.cones, result.layers)]
            for review in acceptance.of_run(db, run["run_id"]):
                sources.append((f"review {review['review_number']}", review["outputs"],
                                review["measurements"]["cones"],
                                review["measurements"].get("layers", {})))
            for source, outputs, cones, layers in sources:
                prefix = "" if source == "model" else source.replace(" ", "-") + "-"
                for output in outputs:
                    exported = _deidentified(store.path_for(output["sha256"]), anonymizer,
                                             originals)
                    files.append(_save(exported, case_dir / "outputs" /
                                       f"{prefix}{output['kind']}.dcm"))
                    counts["outputs"] += 1
                rows.append({"case": number, "source": source,
                             "series_instance_uid": series_uid or "",
                             "model_id": run["manifest"]["model"]["id"],
                             **_scalars(cones), **_scalars(layers, prefix="layer_")})
        _check_no_leaks(files, originals)
        _write_measurements(out_dir / "measurements.csv", rows)
        export_id = secrets.token_hex(8)
        shift = f"{date_shift_days} days back" if date_shift_days else \
            "random per export (62 to 730 days back)"
        (out_dir / "export.json").write_text(json.dumps({
            "format": FORMAT, "export_id": export_id, "created_at": time.time(),
            "profile": [meaning for _, meaning in PROFILE_CODES],
            "deidentified_by": "dicognito 0.19.0", "date_shift": shift,
            "cases": len(cases), **counts,
            "files": {str(path.relative_to(out_dir)): sha256_of(path)[0] for path in files},
        }, indent=1))
    except BaseException:
        empty_directory(out_dir, remove=created)
        raise
    audit.record(db, actor=actor, action="export.deidentified", object_kind="export",
                 object_id=export_id, detail={"cases": len(cases), **counts,
                                              "date_shift_days": date_shift_days})
    return ExportSummary(out_dir, export_id, len(cases), counts["inputs"], counts["outputs"],
                         shift)


def _deidentified(path: Path, anonymizer: Anonymizer, originals: Originals) -> Dataset:
    dataset = pydicom.dcmread(path)
    originals.collect(dataset)
    anonymizer.anonymize(dataset)
    for item in (dataset, *_datasets(dataset)):
        for keyword in FREE_TEXT:
            if keyword in item:
                delattr(item, keyword)
    dataset.remove_private_tags()
    if "PatientBirthDate" in dataset:
        dataset.PatientBirthDate = ""          # Basic Profile: Z (empty)
    dataset.PatientIdentityRemoved = "YES"
    dataset.DeidentificationMethodCodeSequence = [
        _code(value, meaning) for value, meaning in PROFILE_CODES]
    return dataset


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


def _save(dataset: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    return path


def _latest_result(db: sqlite_utils.Database, case_id: int) -> dict[str, Any] | None:
    """The case's newest succeeded run that people read (a shadow run never leaves)."""
    for row in db.execute(
            "SELECT run_id FROM runs WHERE case_id = ? AND state = 'SUCCEEDED' AND "
            "superseded_by IS NULL ORDER BY finished_at DESC", [case_id]).fetchall():
        run = runs.get(db, row[0])
        if run is not None and not runs.is_shadow(run):
            return run
    return None


def _check_no_leaks(files: list[Path], originals: Originals) -> None:
    for path in files:
        keyword = originals.found_in(pydicom.dcmread(path, stop_before_pixels=True))
        if keyword:
            raise ExportLeak(f"{path.name} still holds an original identifier in {keyword}; "
                             "nothing was exported (report this: the profile missed it)")


def _write_measurements(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns or ["case"])
        writer.writeheader()
        writer.writerows(rows)


def _scalars(measurements: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    return {f"{prefix}{key}": value for key, value in measurements.items()
            if isinstance(value, (int, float, str)) or value is None}


def _elements(dataset: Dataset) -> Iterator[pydicom.DataElement]:
    yield from dataset.iterall()
    if hasattr(dataset, "file_meta"):
        yield from dataset.file_meta


def _datasets(dataset: Dataset) -> Iterator[Dataset]:
    for element in dataset.iterall():
        if element.VR == "SQ":
            yield from element.value


def _values(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return [str(v) for v in value if str(v)]
    text = str(value)
    return [text] if text else []
