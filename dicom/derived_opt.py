"""The motion-corrected volume as a derived OPT: the geometry every SEG of a run refers to.

Received volumes may lack a frame of reference or plane positions (vendor OPTs that carry only
a localizer reference; Secondary Capture), and highdicom cannot place a multi-frame SEG on
those (shared/research/domain.md §0). So each run writes its corrected volume as an OPT of our
own, with a frame of reference, shared plane orientation and per-frame plane positions, and
every frame names the received frame it was resampled from.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
from pydicom.dataset import Dataset

from dicom import codes
from dicom.opt import OptStudy, opt_instance
from dicom.provenance import MANUFACTURER, MODEL_NAME, SERIES_NUMBERS, Provenance
from dicom.volume import Volume

# The corrected volume is square-root amplitude with its 99th percentile at 1.0; stored with
# that percentile at this value it keeps 4x headroom for bright reflections within 16 bits.
STORED_AT_P99 = 16384

# Patient and study attributes copied from the received volume, so the outputs file under the
# same patient and study in the PACS; with its character set, so a name outside Latin-1 stays
# the name it was.
PATIENT_AND_STUDY = ("SpecificCharacterSet", "PatientName", "PatientID", "IssuerOfPatientID",
                     "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                     "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
                     "StudyDescription")


def stored_pixels(corrected: np.ndarray) -> np.ndarray:
    # One B-scan at a time: the temporaries stay in cache (5× faster than whole-volume steps).
    stored = np.empty(corrected.shape, np.uint16)
    for b_scan, frame in enumerate(corrected):
        scaled = frame * np.float32(STORED_AT_P99)
        np.rint(scaled, out=scaled)
        np.clip(scaled, 0, 65535, out=scaled)
        stored[b_scan] = scaled
    return stored


def derived_opt(corrected: np.ndarray, volume: Volume, provenance: Provenance) -> Dataset:
    """``corrected`` (b_scans, depth, a_lines; float, normalised) as one multi-frame OPT."""
    header = volume.header if volume.header is not None else Dataset()
    study = OptStudy(
        patient_name=str(header.get("PatientName", "")),
        patient_id=str(header.get("PatientID", "")),
        study_instance_uid=str(header.get("StudyInstanceUID") or provenance.uid("study")),
        series_instance_uid=provenance.series_uid("derived_opt"),
        frame_of_reference_uid=frame_of_reference_uid(provenance),
        laterality=str(header.get("ImageLaterality") or header.get("Laterality") or ""),
        manufacturer=MANUFACTURER, model_name=MODEL_NAME,
        device_serial_number=provenance.device_serial_number,
        software_versions=provenance.software_version,
        series_description="AOMAS motion-corrected AO-OCT",
        acquired_at=_acquired_at(header, provenance))
    ds = opt_instance(stored_pixels(corrected), range(corrected.shape[0]), volume.spacing_mm,
                      study, instance_number=1, images_in_acquisition=1,
                      sop_instance_uid=provenance.uid("derived_opt"))
    for keyword in PATIENT_AND_STUDY:
        if keyword in header:
            setattr(ds, keyword, header[keyword].value)
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SeriesNumber = SERIES_NUMBERS["derived_opt"]
    ds.ContentDate = provenance.created_at.strftime("%Y%m%d")
    ds.ContentTime = provenance.created_at.strftime("%H%M%S")
    ds.DerivationDescription = (f"Axial and lateral motion corrected, square-root amplitude "
                                f"(AOMAS run {provenance.run_id})")
    ds.ContributingEquipmentSequence = [provenance.contributing_equipment()]
    for item, source in zip(ds.PerFrameFunctionalGroupsSequence, volume.source_frames,
                            strict=True):
        item.DerivationImageSequence = [_derivation(source)]
    return ds


def frame_of_reference_uid(provenance: Provenance) -> str:
    """The corrected volume's own frame: resampling moved every B-scan."""
    return provenance.uid("derived_opt", "frame-of-reference")


def _derivation(source) -> Dataset:
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.sop_class_uid
    reference.ReferencedSOPInstanceUID = source.sop_instance_uid
    if source.frame_number is not None:
        reference.ReferencedFrameNumber = source.frame_number
    reference.PurposeOfReferenceCodeSequence = [codes.as_item(codes.SOURCE_FOR_PROCESSING)]
    reference.SpatialLocationsPreserved = "NO"  # shifted by the motion correction
    derivation = Dataset()
    derivation.DerivationCodeSequence = [codes.as_item(codes.SPATIAL_RESAMPLING)]
    derivation.SourceImageSequence = [reference]
    return derivation


def _acquired_at(header: Dataset, provenance: Provenance) -> dt.datetime:
    value = header.get("AcquisitionDateTime")
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None)
    return provenance.created_at.replace(tzinfo=None)
