"""En-face images of the corrected volume as OCT En Face Image objects (PS3.3 A.83).

One image per surface the projection follows (IS/OS, COST): rows are B-scans, columns are
A-lines, so a pixel of the en-face image is an A-line of the derived OPT. They share the
derived OPT's frame of reference, which lets the cone SEG sit on them pixel for pixel.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import (
    OphthalmicOpticalCoherenceTomographyEnFaceImageStorage,
)

from dicom import codes
from dicom.derived_opt import PATIENT_AND_STUDY, frame_of_reference_uid
from dicom.opt import decimal_string, new_dataset
from dicom.provenance import MANUFACTURER, MODEL_NAME, SERIES_NUMBERS, Provenance
from dicom.validity import fitted

SURFACE_NAMES = {"ISOS": "IS/OS", "COST": "COST"}


def enface_image(image: np.ndarray, surface: str, derived: Dataset,
                 provenance: Provenance) -> Dataset:
    """``image`` (b_scans, a_lines) projected along ``surface`` of the ``derived`` OPT."""
    kind = f"enface_{surface.lower()}"
    sop_instance_uid = provenance.uid(kind)
    ds = new_dataset(OphthalmicOpticalCoherenceTomographyEnFaceImageStorage, sop_instance_uid)
    for keyword in PATIENT_AND_STUDY:
        if keyword in derived:
            setattr(ds, keyword, derived[keyword].value)
    ds.Modality = "OPT"
    ds.SeriesInstanceUID = provenance.series_uid(kind)
    ds.SeriesNumber = SERIES_NUMBERS[kind]
    ds.SeriesDescription = f"AOMAS en face at {SURFACE_NAMES[surface]}"
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = frame_of_reference_uid(provenance)
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer, ds.ManufacturerModelName = MANUFACTURER, MODEL_NAME
    ds.DeviceSerialNumber = provenance.device_serial_number
    ds.SoftwareVersions = provenance.software_version
    ds.ContentDate = provenance.created_at.strftime("%Y%m%d")
    ds.ContentTime = provenance.created_at.strftime("%H%M%S")
    ds.AcquisitionDateTime = derived.AcquisitionDateTime
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.ImageLaterality = derived.ImageLaterality
    ds.AnatomicRegionSequence = [codes.as_item(codes.RETINA)]
    ds.OphthalmicImageTypeCodeSequence = [codes.as_item(codes.OUTER_RETINA_REFLECTANCE_MAP)]
    ds.PatientOrientation = ""
    ds.ContributingEquipmentSequence = [provenance.contributing_equipment()]

    measures = derived.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    pitch_mm, lateral_mm = float(measures.SliceThickness), float(measures.PixelSpacing[1])
    ds.PixelSpacing = [decimal_string(pitch_mm), decimal_string(lateral_mm)]
    # Current editions (and highdicom's tables) require the orientation: along a row the A-line
    # axis (+x), down a column the slow axis (the derived OPT's frames step along -z).
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]

    source = Dataset()
    source.ReferencedSOPClassUID = derived.SOPClassUID
    source.ReferencedSOPInstanceUID = derived.SOPInstanceUID
    source.PurposeOfReferenceCodeSequence = [codes.as_item(codes.SOURCE_FOR_PROCESSING)]
    ds.SourceImageSequence = [source]
    algorithm = Dataset()
    algorithm.AlgorithmFamilyCodeSequence = [codes.as_item(codes.ARTIFICIAL_INTELLIGENCE)]
    algorithm.AlgorithmName = "AOMAS surface-following en face projection"
    algorithm.AlgorithmVersion = fitted(provenance.software_version, "LO",
                                        "the software version")
    ds.DerivationAlgorithmSequence = [algorithm]

    stored = np.clip(np.rint(image / max(float(np.percentile(image, 99.5)), 1e-6) * 200),
                     0, 255).astype(np.uint8)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.Rows, ds.Columns = stored.shape
    ds.WindowCenter, ds.WindowWidth = 128, 256
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    ds.RecognizableVisualFeatures = "NO"
    ds.PresentationLUTShape = "IDENTITY"
    ds.PixelData = stored.tobytes()
    return ds
