"""``aomas phantom``: a synthetic AO-OCT study as OPT files plus its ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dicom.opt import OptStudy, uid_from, write_opt
from gpu.phantom import PhantomSpec, make_phantom, spec_as_dict


def write_phantom_study(out_dir: Path, spec: PhantomSpec, *, split_frames: bool = False) -> dict:
    """Write ``out_dir/dicom/*.dcm``, ``ground_truth.json`` and ``ground_truth.npz``."""
    phantom = make_phantom(spec)
    # Identifiers are synthetic and derived from the seed, so one seed is one study everywhere.
    study = OptStudy(
        patient_name=f"PHANTOM^SEED{spec.seed}", patient_id=f"AOMAS-PHANTOM-{spec.seed}",
        study_instance_uid=uid_from("phantom-study", spec.seed),
        series_instance_uid=uid_from("phantom-series", spec.seed, split_frames,
                                     spec_as_dict(spec)),
        frame_of_reference_uid=uid_from("phantom-for", spec.seed),
        device_serial_number=f"PHANTOM-{spec.seed}",
        series_description=f"Synthetic AO-OCT, {spec.eccentricity_deg:g} deg eccentricity")
    spacing_mm = (spec.lateral_spacing_um / 1000, spec.axial_spacing_um / 1000,
                  spec.lateral_spacing_um / 1000)
    paths = write_opt(phantom.voxels, spacing_mm, study, out_dir / "dicom",
                      split_frames=split_frames)
    truth = {
        "spec": spec_as_dict(spec),
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
