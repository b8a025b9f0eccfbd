"""Transfer syntaxes a destination may ask for, and re-encoding a stored object into one.

Objects are stored Explicit VR Little Endian. A destination that wants RLE or JPEG-LS gets
every object whose pixels those syntaxes can carry (one sample, 8 or 16 bits: the derived OPT,
the en-face images, a LABELMAP SEG) re-encoded losslessly at send time; a BINARY SEG (1 bit)
and the SR (no pixels) go as stored. Both are lossless, so a clinician's measurements are made
on the same pixels whichever the PACS holds.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEGLSLossless, RLELossless

# Names used in `[[destinations]] transfer_syntax`; the config module keeps the same names.
TRANSFER_SYNTAXES: dict[str, UID] = {
    "uncompressed": ExplicitVRLittleEndian,
    "rle": RLELossless,
    "jpeg-ls": JPEGLSLossless,
}


def compressible(dataset: Dataset) -> bool:
    """Can RLE and JPEG-LS carry these pixels losslessly (and are they not compressed yet)?"""
    return ("PixelData" in dataset
            and not dataset.file_meta.TransferSyntaxUID.is_compressed
            and dataset.get("SamplesPerPixel", 1) == 1
            and dataset.get("BitsAllocated") in (8, 16)
            and dataset.get("PixelRepresentation", 0) == 0)


def encoded(path: Path, syntax: UID) -> Dataset | None:
    """The object at ``path`` re-encoded in ``syntax``; None when it goes as stored."""
    if not syntax.is_compressed:
        return None
    dataset = pydicom.dcmread(path)
    if not compressible(dataset):
        return None
    # Keep the SOP Instance UID: the same object in another encoding, not a new object.
    dataset.compress(syntax, generate_instance_uid=False)
    return dataset


def encoded_bytes(path: Path, syntax: UID) -> bytes:
    """The file's bytes in ``syntax`` where its pixels allow, else as stored."""
    dataset = encoded(path, syntax)
    if dataset is None:
        return path.read_bytes()
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
