"""DICOM SEG objects of a run: the layers on the derived OPT, the cones on an en-face image.

Layers: one segment per slab (inner segments, outer segments, RPE), one SEG frame per B-scan
and segment, each frame pointing at its derived OPT frame. BINARY by default (the widest viewer
support); LABELMAP where a destination asks for it. Cones: one *class* segment, "cone
photoreceptor", on the IS/OS en-face image; thousands of cones do not fit as one segment each
(shared/research/domain.md §1.6), so their coordinates travel in the SR.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from scipy import ndimage

from dicom import codes
from dicom.provenance import MANUFACTURER, MODEL_NAME, Provenance
from dicom.validity import fitted

# The SEG types the appliance writes, by highdicom's names (FRACTIONAL: no use for it here).
BINARY = hd.seg.SegmentationTypeValues.BINARY.value
LABELMAP = hd.seg.SegmentationTypeValues.LABELMAP.value
SEGMENTATION_TYPES = (BINARY, LABELMAP)
CONE_RADIUS_PX = 1.0   # each cone centre drawn as a disc this size in the cone SEG
LAYER_LABELS = {"inner_segment": "Inner segments", "outer_segment": "Outer segments",
                "rpe": "RPE"}


def layer_seg(labels: np.ndarray, layer_names: tuple[str, ...], derived: Dataset,
              provenance: Provenance, segmentation_type: str = BINARY) -> hd.seg.Segmentation:
    """``labels`` (b_scans, depth, a_lines): 0 background, i the layer ``layer_names[i - 1]``."""
    descriptions = [
        _segment(number, LAYER_LABELS[name], codes.LAYER_SLABS[name], provenance)
        for number, name in enumerate(layer_names, start=1)]
    return _segmentation([derived], labels, descriptions, "layer_seg",
                         "Photoreceptor layers", "LAYERS", provenance, segmentation_type)


def cone_seg(cones_px: np.ndarray, enface: Dataset, provenance: Provenance,
             segmentation_type: str = BINARY) -> hd.seg.Segmentation:
    """Cone centres (row, column) on ``enface`` as one class segment."""
    mask = np.zeros((enface.Rows, enface.Columns), bool)
    centres = np.rint(cones_px).astype(int).reshape(-1, 2)
    inside = (centres >= 0).all(axis=1) & (centres < mask.shape).all(axis=1)
    mask[tuple(centres[inside].T)] = True
    disc = ndimage.generate_binary_structure(2, 1)
    mask = ndimage.binary_dilation(mask, disc, iterations=int(CONE_RADIUS_PX))
    description = _segment(1, "cone photoreceptor", codes.CONE_PHOTORECEPTOR, provenance)
    # The en-face image has no plane position, so highdicom sees no patient coordinate system:
    # pixel measures (with a nominal slice thickness) and an empty orientation come from us.
    measures = hd.PixelMeasuresSequence(pixel_spacing=[float(v) for v in enface.PixelSpacing],
                                        slice_thickness=float(enface.PixelSpacing[0]))
    seg = _segmentation([enface], mask[np.newaxis].astype(np.uint8), [description], "cone_seg",
                        "Cone photoreceptors", "CONES", provenance, segmentation_type,
                        pixel_measures=measures)
    seg.PatientOrientation = ""
    return seg


def _segment(number: int, label: str, property_type, provenance: Provenance):
    # A person corrected the network's masks: semi-automatic in the standard's words.
    algorithm_type = (hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC if provenance.review_number
                      else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC)
    return hd.seg.SegmentDescription(
        segment_number=number, segment_label=label,
        segmented_property_category=codes.ANATOMICAL_STRUCTURE,
        segmented_property_type=property_type,
        algorithm_type=algorithm_type,
        algorithm_identification=provenance.algorithm(),
        anatomic_regions=[codes.RETINA])


def _segmentation(sources, pixel_array, descriptions, kind: str, label: str,
                  content_label: str, provenance: Provenance, segmentation_type: str,
                  **options) -> hd.seg.Segmentation:
    if segmentation_type not in SEGMENTATION_TYPES:
        raise ValueError(f"segmentation type must be one of {SEGMENTATION_TYPES}, "
                         f"not {segmentation_type!r}")
    # LABELMAP is a different SOP class: its own UID, so a destination may hold both.
    suffix = "" if segmentation_type == BINARY else "-labelmap"
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=pixel_array, segmentation_type=segmentation_type,
        segment_descriptions=descriptions,
        series_instance_uid=provenance.series_uid(kind + suffix),
        series_number=provenance.series_number(kind),
        sop_instance_uid=provenance.uid(kind + suffix),
        instance_number=1, manufacturer=MANUFACTURER, manufacturer_model_name=MODEL_NAME,
        software_versions=provenance.software_version,
        device_serial_number=provenance.device_serial_number,
        content_label=fitted(content_label, "CS", "the content label"),
        content_description=provenance.description,
        content_creator_name=provenance.reviewed_by or None,
        # Empty frames kept: viewers misplace SEGs that omit them (highdicom #214, OHIF #2833).
        omit_empty_frames=False,
        contributing_equipment=[provenance.contributing_equipment()], **options)
    seg.SeriesDescription = f"AOMAS {label.lower()}" + (", reviewed" if provenance.review_number
                                                         else "")
    seg.CodingSchemeIdentificationSequence = [codes.coding_scheme_identification()]
    return seg
