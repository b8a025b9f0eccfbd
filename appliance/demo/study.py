"""``aomas phantom``: a synthetic AO-OCT study as OPT files plus its ground truth."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from dicom.opt import OptStudy, uid_from, write_opt
from gpu.phantom import PhantomSpec
from gpu.phantom_b import FamilyBSpec
from gpu.phantoms import make_phantom_of


def write_phantom_study(out_dir: Path, spec: PhantomSpec | FamilyBSpec, *,
                        split_frames: bool = False) -> dict:
    """Write ``out_dir/dicom/*.dcm``, ``ground_truth.json`` and ``ground_truth.npz`` for a
    phantom of either family."""
    phantom = make_phantom_of(spec)
    # Family A's studies keep the identifiers they always had; family B's are its own.
    tag = "" if spec.family == "A" else f"-{spec.family}"
    # Identifiers are synthetic and derived from the seed, so one seed is one study everywhere.
    study = OptStudy(
        patient_name=f"PHANTOM^SEED{spec.seed}{tag}",
        patient_id=f"AOMAS-PHANTOM{tag}-{spec.seed}",
        study_instance_uid=uid_from(f"phantom-study{tag}", spec.seed),
        series_instance_uid=uid_from(f"phantom-series{tag}", spec.seed, split_frames,
                                     asdict(spec)),
        frame_of_reference_uid=uid_from(f"phantom-for{tag}", spec.seed),
        device_serial_number=f"PHANTOM{tag}-{spec.seed}",
        series_description=f"Synthetic AO-OCT (family {spec.family}), "
                           f"{spec.eccentricity_deg:g} deg eccentricity")
    spacing_mm = tuple(s / 1000 for s in spec.spacing_um)
    paths = write_opt(phantom.voxels, spacing_mm, study, out_dir / "dicom",
                      split_frames=split_frames)
    truth = {
        "spec": {"family": spec.family, **asdict(spec)},
        "study_instance_uid": study.study_instance_uid,
        "series_instance_uid": study.series_instance_uid,
        "spacing_mm": {"between_b_scans": spacing_mm[0], "axial": spacing_mm[1],
                       "lateral": spacing_mm[2]},
        "summary": {k: (float(v) if isinstance(v, np.floating) else v)
                    for k, v in phantom.summary.items()},
        "shifts_um": np.round(phantom.shifts_um, 4).tolist(),
        "cones": phantom.cone_table,
        "files": [p.name for p in paths],
    }
    (out_dir / "ground_truth.json").write_text(json.dumps(truth, indent=1))
    np.savez_compressed(
        out_dir / "ground_truth.npz", shifts_um=phantom.shifts_um, cones_um=phantom.cones_um,
        **{f"surface_{k}_px": v for k, v in phantom.surfaces_px.items()},
        **{f"surface_{k}_motion_free_px": v for k, v in phantom.surfaces_motion_free_px.items()})
    return truth
