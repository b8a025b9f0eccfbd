"""The run's measurements as a TID 1500 Measurement Report (Comprehensive 3D SR).

One measurement group per region (the whole field first, then the grid), each a rectangle on
the IS/OS en-face image, with the cone mosaic metrics and the layer thicknesses in UCUM units.
The field's group also carries the appliance's own check: "needs review" Yes/No and the
calibrated expected share of wrong or missed detections it rests on; every group the cone row
spacing and density the en-face spectrum implies (model-free), where it resolved a ring.
The SEGs and images the numbers come from are listed as evidence. Per-cone coordinates are
too many for content items (thousands per field); they stay with the run as a CSV sidecar
(``cones_csv`` artifact) and the report says where.
"""

from __future__ import annotations

from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from dicom import codes
from dicom.provenance import MANUFACTURER, MODEL_NAME, Provenance

# Who verified a reviewed report, organisation-wise: the reviewer works at the site running
# this appliance; the account name says who.
VERIFYING_ORGANIZATION = "AOMAS review site"

# Measurement key (as in the run's result) → (concept, unit).
MEASUREMENTS = {
    "cone_count": (codes.CONE_COUNT, "count"),
    "cone_density_per_mm2": (codes.CONE_DENSITY, "per_mm2"),
    "nnd_mean_um": (codes.NND_MEAN, "um"),
    "nnd_sd_um": (codes.NND_SD, "um"),
    "hexagonal_percent": (codes.HEXAGONALITY, "percent"),
    "inner_segment_um": (codes.INNER_SEGMENT_THICKNESS, "um"),
    "outer_segment_length_um": (codes.OUTER_SEGMENT_LENGTH, "um"),
    "rpe_um": (codes.RPE_THICKNESS, "um"),
    "expected_detection_error_percent": (codes.EXPECTED_DETECTION_ERROR, "percent"),
    "spectral_density_per_mm2": (codes.SPECTRAL_CONE_DENSITY, "per_mm2"),
    "spectral_row_spacing_um": (codes.SPECTRAL_ROW_SPACING, "um"),
}


@dataclass(frozen=True)
class RegionMeasurements:
    label: str                     # "field" or "region row 1 column 2"
    rows: tuple[int, int]          # half-open pixel ranges on the en-face image
    columns: tuple[int, int]
    values: dict[str, float | None]
    # The appliance's "needs review" check (the field only; None: not stated, as in a report
    # a person has reviewed).
    needs_review: bool | None = None


def measurement_report(regions: list[RegionMeasurements], enface: Dataset,
                       evidence: list[Dataset], provenance: Provenance,
                       previous_report: Dataset | None = None) -> hd.sr.Comprehensive3DSR:
    """The report; ``evidence`` holds every other object of the run (SEGs, derived OPT).

    A reviewed report (``provenance.review_number``) is VERIFIED by the reviewer and names the
    report it follows as its predecessor, so a PACS shows the versions as one history.
    """
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=provenance.uid("observer-device"), name="AOMAS", manufacturer_name=MANUFACTURER,
        model_name=MODEL_NAME, serial_number=provenance.device_serial_number)
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DEVICE_OBSERVER, observer_identifying_attributes=device))
    algorithm = hd.sr.AlgorithmIdentification(
        name=provenance.model_id, version=provenance.model_version)
    groups = [_group(region, enface, algorithm, provenance) for region in regions]
    report = hd.sr.MeasurementReport(
        observation_context=context, procedure_reported=codes.AO_OCT_ANALYSIS,
        imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[enface, *evidence], content=report,
        series_instance_uid=provenance.series_uid("report"),
        series_number=provenance.series_number("report"),
        sop_instance_uid=provenance.uid("report"), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True,
        is_verified=bool(provenance.review_number),
        verifying_observer_name=provenance.reviewed_by or None,
        verifying_organization=VERIFYING_ORGANIZATION if provenance.review_number else None,
        previous_versions=[previous_report] if previous_report is not None else None,
        contributing_equipment=[provenance.contributing_equipment()])
    sr.SeriesDescription = ("AOMAS photoreceptor measurements"
                            + (", reviewed" if provenance.review_number else ""))
    sr.CodingSchemeIdentificationSequence = [codes.coding_scheme_identification()]
    return sr


def _group(region: RegionMeasurements, enface: Dataset, algorithm,
           provenance: Provenance) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    (top, bottom), (left, right) = region.rows, region.columns
    # (column, row) corners of the region's pixels, closed.
    corners = np.array([[left, top], [right, top], [right, bottom], [left, bottom],
                        [left, top]], dtype=float)
    outline = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=corners,
        source_image=hd.sr.SourceImageForRegion.from_source_image(enface))
    measurements = [
        hd.sr.Measurement(name=MEASUREMENTS[key][0], value=float(value),
                          unit=codes.UNITS[MEASUREMENTS[key][1]], algorithm_id=algorithm)
        for key, value in region.values.items() if key in MEASUREMENTS and value is not None]
    evaluations = None if region.needs_review is None else [hd.sr.QualitativeEvaluation(
        name=codes.NEEDS_REVIEW, value=codes.YES if region.needs_review else codes.NO)]
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=provenance.tracking_uid(region.label), identifier=region.label),
        referenced_region=outline, finding_type=codes.CONE_PHOTORECEPTOR,
        finding_sites=[hd.sr.FindingSite(codes.RETINA)], measurements=measurements,
        qualitative_evaluations=evaluations)
