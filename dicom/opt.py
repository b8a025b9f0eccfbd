"""Write a volume as Ophthalmic Tomography Image (OPT) instances.

The recipe is shared/research/domain.md §1.4, which passes dciodvfy apart from the known
validator inconsistency over the concatenation attributes. One frame = one B-scan, rows = depth,
columns = A-lines; PixelSpacing = [axial, lateral]; plane positions step along z by the B-scan
pitch, so highdicom can build SEGs on it later.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, OphthalmicTomographyImageStorage, generate_uid
from pydicom.valuerep import DSfloat

AOMAS_UID_ROOT = "1.2.826.0.1.3680043.10.1455."  # a UID prefix for objects this code makes


@dataclass(frozen=True)
class OptStudy:
    """Who and what the volume is about; the phantom fills it with synthetic values."""

    patient_name: str
    patient_id: str
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    laterality: str = "R"
    manufacturer: str = "AOMAS"
    model_name: str = "Synthetic AO-OCT"
    device_serial_number: str = "PHANTOM-0"
    software_versions: str = "aomas"
    series_description: str = "AO-OCT volume"
    acquired_at: dt.datetime = dt.datetime(2026, 1, 1, 9, 0, 0)


def uid_from(*parts: object) -> str:
    """A deterministic UID under our root, derived from the given values."""
    return generate_uid(prefix=AOMAS_UID_ROOT, entropy_srcs=[str(p) for p in parts])


def decimal_string(value: float) -> DSfloat:
    return DSfloat(value, auto_format=True)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def new_dataset(sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    """An empty instance of the class, with its file meta (explicit VR little endian)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class_uid
    ds.file_meta.MediaStorageSOPInstanceUID = sop_instance_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class_uid, sop_instance_uid
    ds.SpecificCharacterSet = "ISO_IR 100"
    return ds


def write_opt(voxels: np.ndarray, spacing_mm: tuple[float, float, float], study: OptStudy,
              out_dir: Path, *, split_frames: bool = False) -> list[Path]:
    """Write ``voxels`` (b_scans, depth, a_lines; uint16) as one multi-frame OPT instance, or
    with ``split_frames`` as one single-frame instance per B-scan of the same series."""
    if voxels.ndim != 3 or voxels.dtype != np.uint16:
        raise ValueError("voxels must be a 3-D uint16 array (b_scans, depth, a_lines)")
    out_dir.mkdir(parents=True, exist_ok=True)
    b_scans = voxels.shape[0]
    groups = [range(i, i + 1) for i in range(b_scans)] if split_frames else [range(b_scans)]
    paths = []
    for number, frames in enumerate(groups, start=1):
        ds = opt_instance(voxels[frames.start:frames.stop], frames, spacing_mm, study, number,
                          images_in_acquisition=len(groups),
                          sop_instance_uid=uid_from(study.series_instance_uid, number))
        path = out_dir / f"opt_{number:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def opt_instance(frames_voxels: np.ndarray, frames: range, spacing_mm, study: OptStudy,
                 instance_number: int, images_in_acquisition: int,
                 sop_instance_uid: str) -> Dataset:
    """One OPT instance holding ``frames`` (B-scan indices) of a volume, with full geometry."""
    slice_mm, axial_mm, lateral_mm = spacing_mm
    acquired = study.acquired_at

    ds = new_dataset(OphthalmicTomographyImageStorage, sop_instance_uid)
    ds.PatientName, ds.PatientID = study.patient_name, study.patient_id
    ds.PatientBirthDate, ds.PatientSex = "", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study.study_instance_uid, study.series_instance_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = acquired.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = acquired.strftime("%H%M%S")
    ds.AcquisitionDateTime = acquired.strftime("%Y%m%d%H%M%S")
    ds.AcquisitionDuration = decimal_string(0.005 * len(frames))
    ds.AcquisitionNumber = 1
    ds.ReferringPhysicianName, ds.StudyID, ds.AccessionNumber = "", "1", ""
    ds.Modality = "OPT"
    ds.SeriesNumber = 1
    ds.SeriesDescription = study.series_description
    ds.InstanceNumber = instance_number
    ds.ImagesInAcquisition = images_in_acquisition
    ds.FrameOfReferenceUID = study.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = study.manufacturer
    ds.ManufacturerModelName = study.model_name
    ds.DeviceSerialNumber = study.device_serial_number
    ds.SoftwareVersions = study.software_versions

    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.OphthalmicVolumetricPropertiesFlag = "YES"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PresentationLUTShape = "IDENTITY"
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    ds.ConcatenationFrameOffsetNumber = 0
    ds.InConcatenationNumber = 1
    ds.InConcatenationTotalNumber = 1
    ds.AcquisitionContextSequence = Sequence()

    ds.AxialLengthOfTheEye = None
    ds.HorizontalFieldOfView = None
    ds.RefractiveStateSequence = Sequence()
    ds.EmmetropicMagnification = None
    ds.IntraOcularPressure = None
    ds.PupilDilated = None
    ds.AcquisitionDeviceTypeCodeSequence = [
        _code("392012008", "SCT", "Optical Coherence Tomography Scanner")]
    ds.DetectorType = "CCD"
    ds.LightPathFilterTypeStackCodeSequence = Sequence()
    ds.ScanPatternTypeCodeSequence = [_code("128279", "DCM", "Cube B-scan pattern")]
    ds.ImageLaterality = study.laterality
    retina = _code("5665001", "SCT", "Retina")
    ds.AnatomicRegionSequence = [retina]
    ds.OphthalmicAnatomicReferencePointXCoordinate = None
    ds.OphthalmicAnatomicReferencePointYCoordinate = None

    dimension_uid = uid_from(study.series_instance_uid, "dimensions")
    stack_dim, position_dim = Dataset(), Dataset()
    stack_dim.DimensionIndexPointer = 0x00209056          # StackID
    stack_dim.FunctionalGroupPointer = 0x00209111         # FrameContentSequence
    position_dim.DimensionIndexPointer = 0x00209057       # InStackPositionNumber
    position_dim.FunctionalGroupPointer = 0x00209111
    for item in (stack_dim, position_dim):
        item.DimensionOrganizationUID = dimension_uid
    organization = Dataset()
    organization.DimensionOrganizationUID = dimension_uid
    ds.DimensionOrganizationSequence = [organization]
    ds.DimensionIndexSequence = [stack_dim, position_dim]

    measures, orientation, anatomy = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing = [decimal_string(axial_mm), decimal_string(lateral_mm)]
    measures.SliceThickness = decimal_string(slice_mm)
    measures.SpacingBetweenSlices = decimal_string(slice_mm)
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    anatomy.AnatomicRegionSequence = [retina]
    anatomy.FrameLaterality = study.laterality
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    shared.PlaneOrientationSequence = [orientation]
    shared.FrameAnatomySequence = [anatomy]
    ds.SharedFunctionalGroupsSequence = [shared]

    per_frame = []
    for b_scan in frames:
        content, position, item = Dataset(), Dataset(), Dataset()
        content.StackID = "1"
        content.InStackPositionNumber = b_scan + 1
        content.DimensionIndexValues = [1, b_scan + 1]
        frame_time = acquired + dt.timedelta(milliseconds=5 * b_scan)
        content.FrameAcquisitionDateTime = frame_time.strftime("%Y%m%d%H%M%S.%f")
        content.FrameReferenceDateTime = content.FrameAcquisitionDateTime
        content.FrameAcquisitionDuration = decimal_string(5.0)
        position.ImagePositionPatient = [0, 0, decimal_string(-b_scan * slice_mm)]
        item.FrameContentSequence = [content]
        item.PlanePositionSequence = [position]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame

    ds.NumberOfFrames = len(frames)
    ds.Rows, ds.Columns = frames_voxels.shape[1], frames_voxels.shape[2]
    ds.PixelData = np.ascontiguousarray(frames_voxels, dtype="<u2").tobytes()
    return ds
