"""Read the stored instances of one series into a volume: B-scans × depth × A-lines.

Frames map to B-scans, rows to depth and columns to A-lines (shared/research/domain.md §1.3).
Anything that keeps the instances from forming one consistent volume raises ``VolumeError``
with a message that names the instance (by number, never by patient data) and the problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicom.validity import IMAGE_LATERALITIES


class VolumeError(ValueError):
    """The instances do not form one valid volume."""


@dataclass(frozen=True)
class SourceFrame:
    """Where one B-scan came from: the received instance and, if multi-frame, its frame."""

    sop_class_uid: str
    sop_instance_uid: str
    frame_number: int | None


@dataclass(frozen=True)
class Volume:
    voxels: np.ndarray                       # (b_scans, depth, a_lines)
    spacing_mm: tuple[float, float, float]   # (between B-scans, axial, lateral)
    frame_of_reference_uid: str | None
    # The first instance without its pixels (patient, study and equipment for the outputs)
    # and one SourceFrame per B-scan, so every derived frame can name its source.
    header: Dataset | None = None
    source_frames: tuple[SourceFrame, ...] = ()

    def describe(self) -> dict:
        return {
            "shape": list(self.voxels.shape), "dtype": str(self.voxels.dtype),
            "spacing_mm": list(self.spacing_mm),
            "frame_of_reference_uid": self.frame_of_reference_uid,
        }


def read_volume(paths: list[Path]) -> Volume:
    if not paths:
        raise VolumeError("the series has no instances")
    parts = [_read_instance_clearly(path, index) for index, path in enumerate(paths, start=1)]
    parts.sort(key=lambda part: part["order"])
    first = parts[0]
    for part in parts[1:]:
        if part["frame_shape"] != first["frame_shape"]:
            raise VolumeError(
                f"instance {part['label']} has frames of {part['frame_shape']} (rows, columns) "
                f"but instance {first['label']} has {first['frame_shape']}: every B-scan of a "
                "volume must have the same size; resend the series from the scanner")
        if part["frame_of_reference_uid"] != first["frame_of_reference_uid"]:
            raise VolumeError(
                f"instance {part['label']} has a different frame of reference from instance "
                f"{first['label']}: the series mixes acquisitions")
        if not np.allclose(part["spacing"], first["spacing"], rtol=1e-3):
            raise VolumeError(
                f"instance {part['label']} has pixel spacing {part['spacing']} mm but instance "
                f"{first['label']} has {first['spacing']} mm: the series mixes geometries")
    voxels = np.concatenate([part["pixels"] for part in parts], axis=0)
    if voxels.dtype.kind == "f" and not np.isfinite(voxels).all():
        raise VolumeError("the pixel data contain NaN or infinite values")
    slice_spacing = first["slice_spacing"] or first["spacing"][1]
    return Volume(voxels=voxels,
                  spacing_mm=(float(slice_spacing), *map(float, first["spacing"])),
                  frame_of_reference_uid=first["frame_of_reference_uid"],
                  header=first["header"],
                  source_frames=tuple(f for part in parts for f in part["source_frames"]))


def _read_instance_clearly(path: Path, index: int) -> dict:
    """``_read_instance``, with a damaged attribute (a spacing that is no number, a sequence
    without its item, an instance number that is text) reported as what it is: input the
    appliance cannot use, never an internal error."""
    try:
        return _read_instance(path, index)
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as error:
        if isinstance(error, VolumeError):
            raise
        raise VolumeError(f"instance #{index} has an attribute the appliance cannot read "
                          f"({type(error).__name__} in its header); correct it at the scanner "
                          "and send the series again") from None


def _read_instance(path: Path, index: int) -> dict:
    # OSError (file missing, disk error) propagates: it says nothing about the data itself.
    try:
        ds = dcmread(path)
    except (InvalidDicomError, EOFError, ValueError, KeyError) as error:
        raise VolumeError(f"instance #{index} cannot be read as DICOM ({error})") from None
    label = f"#{ds.get('InstanceNumber', index)}"
    if "PixelData" not in ds:
        raise VolumeError(f"instance {label} has no pixel data")
    laterality = ds.get("ImageLaterality")
    if laterality not in (None, "", *IMAGE_LATERALITIES):
        # Copied into every output; which eye it is cannot be guessed.
        raise VolumeError(f"instance {label} has an Image Laterality that is not R, L, U or B; "
                          "correct it at the scanner and send the series again")
    if ds.get("SamplesPerPixel", 1) != 1:
        raise VolumeError(f"instance {label} is not grayscale (SamplesPerPixel "
                          f"{ds.SamplesPerPixel}); OCT B-scans are single-channel")
    try:
        pixels = ds.pixel_array
    except Exception as error:  # pydicom raises many types for damaged pixel data
        raise VolumeError(f"instance {label}: pixel data cannot be decoded ({error}); the file "
                          "is truncated or damaged") from None
    if pixels.ndim == 2:
        pixels = pixels[np.newaxis]
    spacing, slice_spacing = _spacing(ds)
    if spacing is None:
        raise VolumeError(f"instance {label} has no pixel spacing (PixelMeasuresSequence or "
                          "PixelSpacing): measurements in micrometres need it")
    multi_frame = "NumberOfFrames" in ds
    source_frames = [SourceFrame(str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", "")),
                                 frame + 1 if multi_frame else None)
                     for frame in range(pixels.shape[0])]
    del ds.PixelData
    return {
        "header": ds, "source_frames": source_frames,
        "label": label, "pixels": pixels, "frame_shape": tuple(pixels.shape[1:]),
        "spacing": spacing, "slice_spacing": slice_spacing,
        "order": _order_key(ds, index),
        "frame_of_reference_uid": ds.get("FrameOfReferenceUID"),
    }


def _spacing(ds: Dataset) -> tuple[tuple[float, float] | None, float | None]:
    measures = None
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and "PixelMeasuresSequence" in shared[0]:
        measures = shared[0].PixelMeasuresSequence[0]
    else:
        per_frame = ds.get("PerFrameFunctionalGroupsSequence")
        if per_frame and "PixelMeasuresSequence" in per_frame[0]:
            measures = per_frame[0].PixelMeasuresSequence[0]
    source = measures if measures is not None and "PixelSpacing" in measures else ds
    if "PixelSpacing" not in source or not source.PixelSpacing:
        return None, None
    spacing = (float(source.PixelSpacing[0]), float(source.PixelSpacing[1]))
    slice_spacing = source.get("SpacingBetweenSlices") or source.get("SliceThickness")
    return spacing, float(slice_spacing) if slice_spacing else None


def _order_key(ds: Dataset, index: int) -> tuple:
    """Order instances along the slow axis: by plane position, else instance number."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and "PlanePositionSequence" in per_frame[0]:
        position = per_frame[0].PlanePositionSequence[0].ImagePositionPatient
        return (0, -float(position[2]), index)
    return (1, int(ds.get("InstanceNumber") or index), index)
