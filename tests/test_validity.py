"""UID syntax and the read-back check every output passes before the outbox (dicom.validity)."""

from __future__ import annotations

import io

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence

from dicom.validity import object_problems, uid_problem


def test_uid_syntax_follows_ps3_5():
    assert uid_problem("1.2.840.10008.5.1.4.1.1.77.1.5.4") is None
    assert uid_problem("0.1.0") is None
    for broken in ("", "1.", ".1", "1..2", "1.02", "1.2a", "../..", "1.2\x00", "1 .2",
                   "1." + "2" * 63):
        assert uid_problem(broken), broken
    assert "65 characters" in uid_problem("1." + "2" * 63)


def encoded(reference_uid: str, laterality: str = "R") -> bytes:
    ds = Dataset()
    ds.SOPClassUID = pydicom.uid.SecondaryCaptureImageStorage
    ds.SOPInstanceUID = "1.2.3.4"
    ds.ImageLaterality = laterality
    item = Dataset()
    item.ReferencedSOPInstanceUID = reference_uid
    ds.ReferencedImageSequence = Sequence([item])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_an_output_with_a_broken_reference_or_laterality_does_not_pass(recwarn):
    assert object_problems(encoded("1.2.3.5")) == []
    [problem] = object_problems(encoded("../../x"))
    assert problem.startswith("ReferencedSOPInstanceUID is not digits")
    assert object_problems(encoded("1.2.3.5", "X")) == ["Image Laterality is not R, L, U or B"]
    assert object_problems(b"\x00" * 200)[0].startswith("it does not read back")
