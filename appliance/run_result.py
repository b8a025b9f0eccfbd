"""What a run produces, declared once and read by everyone who reads a run.

The pipeline returns a ``RunResult``. The worker stores ``to_json()`` in ``runs.result`` and the
review tiles in the ``tiles`` table, their only home (``review_tiles`` is not in the JSON).
``appliance.runs`` hands it back through ``from_json`` to the worker, reviews, pages, the API and
the CLI, which read attributes, not string paths. The run's arrays (surfaces, en-face images,
cone probability and uncertainty, ...) are one NPZ artifact whose members ``Arrays`` names.
highdicom's classes per IOD and pynetdicom's typed events are the model.

Measurements made in ``gpu`` (mosaic metrics, layer thickness, the spectral spacing, the scale
choice) stay the plain dicts their functions return: their keys are declared there, once, and
they go into the JSON as they are.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


class Arrays:
    """Member names of the run's NPZ artifact (``Artifacts.preprocessed_npz``)."""

    SHIFTS_PX = "shifts_px"                  # (b_scans, 2): axial, lateral shift per B-scan
    CONE_PROBABILITY = "cone_probability"    # en-face (b_scans, a_lines)
    CONE_UNCERTAINTY = "cone_uncertainty"
    CONES_PX = "cones_px"                    # (n, 2): row, column on the en-face image
    LAYER_LABELS = "layer_labels"            # (b_scans, depth, a_lines)
    B_SCAN_CONFIDENCE = "b_scan_confidence"

    @staticmethod
    def surface(name: str) -> str:
        """Depth (pixels) of the surface ``name`` (ELM, ISOS, COST, RPE, BM), (b_scans, a_lines)."""
        return f"surface_{name}_px"

    @staticmethod
    def enface(name: str) -> str:
        """The en-face projection following the surface ``name`` (ISOS, COST)."""
        return f"enface_{name}"

    @staticmethod
    def thickness(name: str) -> str:
        """A thickness map in micrometres (``gpu.thickness.THICKNESS_SPANS`` names them)."""
        return f"thickness_{name}"


@dataclass(frozen=True)
class VolumeSummary:
    shape: tuple[int, int, int]                  # b_scans, depth, a_lines
    dtype: str
    spacing_mm: tuple[float, float, float]       # B-scan pitch, axial, A-line spacing
    frame_of_reference_uid: str | None = None

    @property
    def enface_pixel_um(self) -> tuple[float, float]:
        """An en-face pixel's (row, column) size: (B-scan pitch, A-line spacing) in µm."""
        return self.spacing_mm[0] * 1000, self.spacing_mm[2] * 1000

    @property
    def axial_um(self) -> float:
        return self.spacing_mm[1] * 1000


@dataclass(frozen=True)
class Motion:
    """The eye motion the run corrected, in micrometres."""

    axial_rms_um: float
    lateral_rms_um: float
    axial_max_abs_um: float
    lateral_max_abs_um: float


@dataclass(frozen=True)
class ReviewFlag:
    """Whether a person should check the run before its numbers are used (``needs_review``)."""

    flag: bool
    reasons: tuple[str, ...]
    expected_detection_error: dict[str, float]   # expected_false, expected_missed, percent
    spectral_density_ratio: float | None = None  # detected / spectral field density
    spectral_check: str = "not run"              # done | not possible: <why> | not run


@dataclass(frozen=True)
class Artifacts:
    """SHA-256 digests of what the run stored beside its DICOM outputs."""

    qc_png: str
    preprocessed_npz: str        # the run's arrays, members named by ``Arrays``
    cones_csv: str


@dataclass(frozen=True)
class Output:
    """One DICOM object stored for the outbox (or by an accepted review)."""

    kind: str                    # derived_opt, enface_isos, layer_seg, cone_seg, report, ...
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    sha256: str
    bytes: int | None = None     # its size


@dataclass(frozen=True)
class ReviewTiles:
    """The en-face image cut into tiles for the review queue; stored in the ``tiles`` table."""

    tile_px: int
    enface_shape: tuple[int, int]
    tiles: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class RunResult:
    volume: VolumeSummary
    device: str                              # cpu | gpu
    motion: Motion
    layers: dict[str, Any]                   # gpu.thickness.layer_measurements
    layer_segmentation: dict[str, Any]       # agreement_dice, least_confident_b_scans
    cones: dict[str, Any]                    # gpu.quantify.mosaic_metrics of the field
    cone_regions: tuple[dict[str, Any], ...]  # the same, per region
    most_uncertain_tiles: tuple[dict[str, Any], ...]
    band_contrast: float
    needs_review: ReviewFlag
    artifacts: Artifacts
    outputs: tuple[Output, ...]
    stage_seconds: dict[str, float]
    # Added later: runs recorded before them read None.
    cone_scale: dict[str, Any] | None = None        # gpu.scale.ScaleChoice.as_dict
    spectral_spacing: dict[str, Any] | None = None  # gpu.spectrum.regional_spacing
    review_tiles: ReviewTiles | None = field(default=None, compare=False)

    def output(self, kind: str) -> Output:
        found = [output for output in self.outputs if output.kind == kind]
        if not found:
            raise KeyError(f"the run stored no {kind} output")
        return found[0]

    def to_json(self) -> dict[str, Any]:
        # The tiles are the tiles table's: not converted only to be dropped.
        document = dataclasses.asdict(dataclasses.replace(self, review_tiles=None))
        del document["review_tiles"]
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> RunResult:
        # An older result's review tiles are left where they now live, in the tiles table.
        stored = {key: value for key, value in document.items() if key != "review_tiles"}
        nested = {name: build(kind, stored[name]) for name, kind in NESTED.items()}
        return build(cls, {**stored, **nested,
                           "outputs": [build(Output, output) for output in stored["outputs"]]})


# The fields of the result that are classes of their own (read back by ``from_json``).
NESTED = {"volume": VolumeSummary, "motion": Motion, "needs_review": ReviewFlag,
          "artifacts": Artifacts}


# The fields of the stored result (``to_json``), for the API's document.
RESULT_FIELDS = tuple(f.name for f in dataclasses.fields(RunResult) if f.name != "review_tiles")


def json_path(*names: str) -> str:
    """SQLite's JSON path to a field of ``RunResult.to_json()``, checked against the
    declaration (so a renamed field fails here, not as a silent NULL in a query)."""
    kind: type | None = RunResult
    for name in names:
        if kind is None or name not in {f.name for f in dataclasses.fields(kind)}:
            raise KeyError(f"{'.'.join(names)} is not a field of the run result")
        kind = NESTED.get(name) if kind is RunResult else None
    return "$." + ".".join(names)


def build(kind: type, document: dict[str, Any]):
    """One of the classes above from its JSON form (lists become tuples). Keys the class does
    not declare are left out: results recorded by an older version carry a few (their review
    tiles, now in the tiles table only)."""
    names = {f.name for f in dataclasses.fields(kind)}
    values = {key: value for key, value in document.items() if key in names}
    for name, value in values.items():
        if isinstance(value, list):
            values[name] = tuple(value)
    return kind(**values)
