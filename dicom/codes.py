"""Codes for what the appliance writes: standard ones where DICOM has them, else our own.

DICOM has codes for the retinal *surfaces* (CID 4273) but none for the photoreceptor *slabs*
between them, for single cones, or for mosaic metrics such as cone density or Voronoi
hexagonality (shared/research/domain.md §4). Those come from a private coding scheme,
``99AOOCT``, declared in every object that uses it (CodingSchemeIdentificationSequence) so a
reader can tell where the meanings are defined: here.
"""

from __future__ import annotations

from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

PRIVATE_SCHEME = "99AOOCT"
PRIVATE_SCHEME_NAME = "AOMAS AO-OCT microstructure concepts"
PRIVATE_SCHEME_RESPONSIBLE = "AOMAS (see dicom/codes.py)"


def private(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value, PRIVATE_SCHEME, meaning)


# Segmented property category for every segment we write.
ANATOMICAL_STRUCTURE = CodedConcept("91723000", "SCT", "Anatomical Structure")
RETINA = CodedConcept("5665001", "SCT", "Retina")

# Layer slabs, keyed by the layer network's class names (gpu/layer_model.CLASSES).
LAYER_SLABS = {
    "inner_segment": private("ISL", "Photoreceptor inner segment layer (ELM to IS/OS)"),
    "outer_segment": private("OSL", "Photoreceptor outer segment layer (IS/OS to COST)"),
    "rpe": private("RPEL", "Retinal pigment epithelium layer (RPE to Bruch's membrane)"),
}
CONE_PHOTORECEPTOR = private("CONE", "Cone photoreceptor")

# Measurements in the SR (TID 1500), with their UCUM units.
CONE_COUNT = private("CONECOUNT", "Cone count")
CONE_DENSITY = private("CONEDENS", "Cone density")
NND_MEAN = private("NNDMEAN", "Cone nearest-neighbour distance, mean")
NND_SD = private("NNDSD", "Cone nearest-neighbour distance, standard deviation")
HEXAGONALITY = private("HEXPCT", "Percent six-sided Voronoi cells")
INNER_SEGMENT_THICKNESS = private("ISTHICK", "Inner segment layer thickness")
OUTER_SEGMENT_LENGTH = private("OSLENGTH", "Outer segment length")
RPE_THICKNESS = private("RPETHICK", "Retinal pigment epithelium layer thickness")
REGION = private("REGION", "Analysis region")
# The appliance's own check of a run (appliance/pipeline.needs_review): a qualitative
# evaluation Yes/No, and the calibrated expected share of wrong or missed detections.
NEEDS_REVIEW = private("NEEDSREVIEW", "Needs review by a person")
EXPECTED_DETECTION_ERROR = private("EXPDETERR", "Expected wrong or missed cone detections")
# The model-free cross-check: the mosaic's modal row spacing from the en-face power spectrum
# (Yellott's ring) and the density it implies, for the field and each region.
SPECTRAL_ROW_SPACING = private("SPECROWSP", "Cone row spacing from the en-face spectrum")
SPECTRAL_CONE_DENSITY = private("SPECDENS", "Cone density implied by the en-face spectrum")
YES, NO = codes.SCT.Yes, codes.SCT.No
AO_OCT_ANALYSIS = private("AOOCTANALYSIS", "AO-OCT photoreceptor analysis")

UNITS = {
    "count": CodedConcept("{cells}", "UCUM", "cells"),
    "per_mm2": CodedConcept("{cells}/mm2", "UCUM", "cells per square millimetre"),
    "um": CodedConcept("um", "UCUM", "micrometre"),
    "percent": CodedConcept("%", "UCUM", "percent"),
}

ARTIFICIAL_INTELLIGENCE = codes.DCM.ArtificialIntelligence
SPATIAL_RESAMPLING = codes.DCM.SpatialResampling
SOURCE_FOR_PROCESSING = codes.DCM.SourceImageForImageProcessingOperation
MODIFYING_EQUIPMENT = codes.DCM.ModifyingEquipment
OUTER_RETINA_REFLECTANCE_MAP = codes.DCM.OuterRetinaStructuralReflectanceMap
DEVICE_OBSERVER = codes.cid270.Device


def coding_scheme_identification() -> Dataset:
    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = PRIVATE_SCHEME_NAME
    item.CodingSchemeResponsibleOrganization = PRIVATE_SCHEME_RESPONSIBLE
    return item


def as_item(code) -> Dataset:
    """A plain code sequence item (for attributes highdicom does not build for us)."""
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator = code.value, code.scheme_designator
    item.CodeMeaning = code.meaning
    return item
