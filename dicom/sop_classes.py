"""The storage SOP classes and transfer syntaxes the appliance accepts."""

from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    OphthalmicTomographyImageStorage,
    RLELossless,
    SecondaryCaptureImageStorage,
)
from pynetdicom.sop_class import Verification

ACCEPTED_SOP_CLASSES: dict[str, str] = {
    OphthalmicTomographyImageStorage: "Ophthalmic Tomography Image",
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage:
        "Multi-frame Grayscale Word Secondary Capture Image",
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage:
        "Multi-frame Grayscale Byte Secondary Capture Image",
    SecondaryCaptureImageStorage: "Secondary Capture Image",
}

# Deflated Explicit VR Little Endian is left out on purpose: pynetdicom inflates it without an
# output limit (a decompression bomb). Compressed syntaxes need decoders we do not ship yet.
ACCEPTED_TRANSFER_SYNTAXES: list[str] = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
]

VERIFICATION_SOP_CLASS = str(Verification)  # pynetdicom's UID, not retyped
