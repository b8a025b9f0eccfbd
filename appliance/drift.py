"""Drift: is the production model still as good on this site's scans as at its gate?

Reviewed labels are the ground truth. The check takes the tiles people corrected in the window
(7 days, widened a week at a time up to four when fewer than ``drift.min_reviewed_cases``
cases were reviewed; still fewer: "insufficient labels", no verdict) from runs of the
production version, and measures there what the gate measured on phantoms: detection ECE (the
calibrated confidence of each detection against whether the reviewed mask holds that cone) and
cone F1, each with a bootstrap 95 % interval over cases (a case's tiles are correlated, so the
case is the unit resampled). It alerts when the ECE interval's lower bound exceeds
``models.gate_max_ece`` + ``drift.ece_margin``; otherwise the week's figures are only kept.

Beside it, signals that need no labels, from every run of the version in the window and from
its runs before (the baseline): the detected vs spectral cone density, the model's calibrated
expected detection error, and the IS/OS band contrast of the input.

A caveat the page repeats: reviewed tiles are the ones the queue ranked likeliest to hold an
error, so their ECE runs above a random sample's; compare weeks with each other and with the
gate, not with zero. ``aomas drift check`` runs it now; the worker runs it every Monday.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import sqlite_utils
from scipy import ndimage

from appliance import alerts, audit, gates, registry, routing
from appliance.database import write_transaction
from appliance.review import labels
from appliance.review.case_images import run_arrays
from appliance.run_result import Arrays, RunResult, json_path
from appliance.storage import ObjectStore
from gpu.calibration import Calibration, assess, expected_calibration_error
from gpu.cone_model import PEAK_THRESHOLD
from gpu.quantify import matched

WEEK_SECONDS = 7 * 86400
MAX_WEEKS = 4
BOOTSTRAP_RESAMPLES = 1000
OK, ALERT, INSUFFICIENT, NO_MODEL = "ok", "alert", "insufficient labels", "no production model"
MATCH_RADIUS_PX = 3.0   # about 0.75 of the nearest-neighbour spacing the tiles are drawn at


def check(db: sqlite_utils.Database, store: ObjectStore, config, *, actor: str,
          now: float | None = None) -> dict[str, Any]:
    """Run the check for the window ending ``now``; record, alert if need be, return it."""
    now = time.time() if now is None else now
    production = routing.pointers(db).get("production")
    report: dict[str, Any] = {"at": now, "actor": actor, "window_end": now,
                              "model_id": production["model_id"] if production else None}
    if production is None:
        return _record(db, config, {**report, "status": NO_MODEL, "window_start": now})
    model = registry.get_model(db, production["model_id"])
    baseline = next(iter(gates.results(db, model["model_id"])), None)
    report.update(baseline_ece=baseline["ece"] if baseline else None,
                  baseline_f1=baseline["f1_mean"] if baseline else None)
    # The window is chosen by counting (cheap); the tiles are measured once, in it.
    for weeks in range(1, MAX_WEEKS + 1):
        start = now - weeks * WEEK_SECONDS
        if _count_cases(db, model["model_id"], start, now) >= config.drift.min_reviewed_cases:
            break
    cases = reviewed_cases(db, store, model, start, now)
    report.update(window_start=start, reviewed_cases=len(cases),
                  reviewed_tiles=sum(len(c["tiles"]) for c in cases),
                  signals=label_free_signals(db, model["model_id"], start, now))
    if len(cases) < config.drift.min_reviewed_cases:
        return _record(db, config, {**report, "status": INSUFFICIENT})
    figures = labelled_figures(cases)
    limit = config.models.gate_max_ece + config.drift.ece_margin
    status = ALERT if figures["ece_low"] > limit else OK
    return _record(db, config, {**report, **figures, "status": status, "limit": limit})


# The version's tiles whose newest label falls in the window [start, end].
_REVIEWED = ("FROM tiles t JOIN runs r USING (run_id) WHERE r.model_id = ? AND "
             "t.head_version > 0 AND (SELECT MAX(created_at) FROM labels l "
             "WHERE l.tile_id = t.tile_id) BETWEEN ? AND ?")


def _count_cases(db: sqlite_utils.Database, model_id: str, start: float, end: float) -> int:
    return db.execute(f"SELECT COUNT(DISTINCT t.case_id) {_REVIEWED}",
                      [model_id, start, end]).fetchone()[0]


def reviewed_cases(db: sqlite_utils.Database, store: ObjectStore, model: dict, start: float,
                   end: float) -> list[dict[str, Any]]:
    """Per case: each reviewed tile's detections (calibrated confidence, correct or not) and
    its reviewed cone count, for the tiles whose newest label falls in the window."""
    calibration = Calibration.from_card(model["card"])
    rows = db.query(f"SELECT t.*, r.result {_REVIEWED} ORDER BY t.case_id, t.tile_id",
                    [model["model_id"], start, end])
    cases: dict[int, dict[str, Any]] = {}
    for tile in rows:
        result = RunResult.from_json(json.loads(tile["result"]))
        probability = run_arrays(store, result.artifacts.preprocessed_npz)[
            Arrays.CONE_PROBABILITY]
        window = (slice(tile["row_px"], tile["row_px"] + tile["height_px"]),
                  slice(tile["column_px"], tile["column_px"] + tile["width_px"]))
        reviewed = labels.mask_of(db, store, tile, tile["head_version"])
        components, count = ndimage.label(reviewed)
        truth = np.array(ndimage.center_of_mass(reviewed, components, range(1, count + 1)),
                         float).reshape(-1, 2)
        found = assess(probability[window], calibration)
        detected = found.peak > PEAK_THRESHOLD
        correct, _ = matched(found.centres[detected], truth, MATCH_RADIUS_PX)
        cases.setdefault(tile["case_id"], {"case_id": tile["case_id"], "tiles": []})[
            "tiles"].append({"confidence": found.confidence[detected], "correct": correct,
                             "truth": len(truth)})
    return list(cases.values())


def labelled_figures(cases: list[dict[str, Any]]) -> dict[str, float]:
    """Detection ECE and cone F1 over the cases, each with a bootstrap 95 % interval over
    cases."""
    def pooled(picked: list[dict]) -> tuple[float, float]:
        tiles = [t for case in picked for t in case["tiles"]]
        confidence = np.concatenate([t["confidence"] for t in tiles])
        correct = np.concatenate([t["correct"] for t in tiles])
        hits, truth = int(correct.sum()), sum(t["truth"] for t in tiles)
        f1 = 2 * hits / (len(correct) + truth) if len(correct) + truth else 0.0
        ece = expected_calibration_error(confidence, correct) if len(correct) else 0.0
        return ece, f1

    ece, f1 = pooled(cases)
    rng = np.random.default_rng(0)
    resampled = np.array([pooled([cases[i] for i in rng.integers(0, len(cases), len(cases))])
                          for _ in range(BOOTSTRAP_RESAMPLES)])
    (ece_low, f1_low), (ece_high, f1_high) = np.percentile(resampled, [2.5, 97.5], axis=0)
    return {key: round(float(value), 4) for key, value in (
        ("ece", ece), ("ece_low", ece_low), ("ece_high", ece_high), ("f1", f1),
        ("f1_low", f1_low), ("f1_high", f1_high))}


def label_free_signals(db: sqlite_utils.Database, model_id: str, start: float,
                       end: float) -> dict[str, dict[str, float | None]]:
    """Each signal's mean over the version's successful runs in the window and before it,
    averaged by SQLite from the stored results (no result is decoded)."""
    averages = ", ".join(f"AVG(json_extract(result, '{path}')) AS {name}"
                         for name, path in SIGNALS.items())

    def means(where: str, params: list) -> dict[str, float | None]:
        row = db.execute(f"SELECT COUNT(*), {averages} FROM runs WHERE model_id = ? AND "
                         f"state = 'SUCCEEDED' AND {where}", [model_id, *params]).fetchone()
        return {"runs": row[0]} | {name: None if value is None else round(value, 4)
                                   for name, value in zip(SIGNALS, row[1:], strict=True)}

    return {"window": means("finished_at BETWEEN ? AND ?", [start, end]),
            "baseline": means("finished_at < ?", [start])}


# Where each signal lies in the stored run result (checked against its declaration).
SIGNALS = {
    "detected_vs_spectral_density": json_path("needs_review", "spectral_density_ratio"),
    "expected_error_percent": json_path("needs_review", "expected_detection_error")
    + ".percent",
    "band_contrast": json_path("band_contrast"),
}


def weekly(db: sqlite_utils.Database, store: ObjectStore, config) -> dict[str, Any] | None:
    """The Monday check (a Huey periodic task): skipped when a check ran in the last six days,
    so that two worker boxes sharing a Redis queue report once."""
    last = last_check_at(db)
    if last is not None and time.time() - last < 6 * 86400:
        return None
    return check(db, store, config, actor="weekly drift check")


def reports(db: sqlite_utils.Database, limit: int = 104) -> list[dict[str, Any]]:
    """The newest reports first (two years of weeks)."""
    return [{**row, "signals": json.loads(row["signals"] or "{}")}
            for row in db["drift_reports"].rows_where(order_by="id desc", limit=limit)]


def last_check_at(db: sqlite_utils.Database) -> float | None:
    return db.execute("SELECT MAX(at) FROM drift_reports").fetchone()[0]


def _record(db: sqlite_utils.Database, config, report: dict[str, Any]) -> dict[str, Any]:
    columns = {key: report.get(key) for key in (
        "at", "actor", "model_id", "window_start", "window_end", "reviewed_cases",
        "reviewed_tiles", "ece", "ece_low", "ece_high", "f1", "f1_low", "f1_high",
        "baseline_ece", "baseline_f1", "status")}
    columns["signals"] = json.dumps(report.get("signals") or {}, sort_keys=True)
    with write_transaction(db):
        if report["status"] == ALERT:
            columns["alert_id"] = alerts.raise_alert(
                db, config.alerts, name="ModelDrift", severity=alerts.CRITICAL,
                summary=f"model {report['model_id']}: detection ECE {report['ece']:.3f} "
                        f"(95 % {report['ece_low']:.3f}-{report['ece_high']:.3f}) above "
                        f"{report['limit']:.3f} on {report['reviewed_cases']} reviewed cases",
                description=f"gate ECE {report['baseline_ece']}, F1 {report['f1']:.3f} "
                            f"(gate {report['baseline_f1']}); see the drift page",
                labels={"model_id": report["model_id"]})
        report_id = db["drift_reports"].insert(columns).last_pk
        audit.record(db, actor=report["actor"], action="drift.check",
                     object_kind="model", object_id=report["model_id"] or "",
                     detail={"status": report["status"], "ece": report.get("ece"),
                             "reviewed_cases": report.get("reviewed_cases")})
    return {**columns, **report, "signals": report.get("signals") or {}, "id": report_id,
            "alert_id": columns.get("alert_id")}
