"""Routing: which model versions process a case, decided once when the case is dispatched.

The registry's pointers (``model_pointers``) name at most one version each: ``production``,
``canary`` with the share of studies it takes, and ``shadow``. A study's bucket is the SHA-256
of its Study Instance UID mod 100: the same on every process and box (Python's ``hash()`` is
salted per process), and the same for every series of the study. The canary takes the
buckets below its percentage, production the rest; a shadow version, when there is one, gets
a run of every case besides, whose outputs never leave the appliance.

``dispatch`` submits those runs. The arm and the model version go into the run's manifest (so
into its id) and its row; the worker reads them from there and never routes again, so a retry,
a re-queue after a lost worker or a second worker box processes the study with the version it
was given. Before any version is registered as production (a data dir without ``aomas init``)
every case goes to the configured model (``pipeline.model_dir``, else the bundled one).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from appliance import runs
from appliance.runs import CANARY_ARM, PRODUCTION_ARM, SHADOW_ARM

BUCKETS = 100


def bucket(study_instance_uid: str) -> int:
    """0-99, from the UID alone (the first 8 bytes of its SHA-256, big-endian, mod 100)."""
    digest = hashlib.sha256(study_instance_uid.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def pointers(db: sqlite_utils.Database) -> dict[str, dict[str, Any]]:
    """pointer name → {model_id, weights_sha256, traffic_percent, since}."""
    rows = db.query("SELECT p.pointer, p.model_id, p.traffic_percent, p.since, "
                    "m.weights_sha256 FROM model_pointers p JOIN models m USING (model_id)")
    return {row["pointer"]: row for row in rows}


@dataclass(frozen=True)
class Assignment:
    arm: str
    model: dict[str, str]   # the manifest's model entry: id and weights' SHA-256


def assignments(db: sqlite_utils.Database, study_instance_uid: str,
                fallback: dict[str, str]) -> list[Assignment]:
    """The runs a study of this UID gets now: production or canary, and shadow if any."""
    named = pointers(db)

    def entry(pointer: dict[str, Any]) -> dict[str, str]:
        return {"id": pointer["model_id"], "weights_sha256": pointer["weights_sha256"]}

    primary = Assignment(PRODUCTION_ARM, entry(named["production"]) if "production" in named
                         else fallback)
    canary = named.get("canary")
    if canary and bucket(study_instance_uid) < (canary["traffic_percent"] or 0):
        primary = Assignment(CANARY_ARM, entry(canary))
    shadow = named.get("shadow")
    return [primary] + ([Assignment(SHADOW_ARM, entry(shadow))] if shadow else [])


def dispatch(db: sqlite_utils.Database, case_id: int, *, seed: int,
             fallback: dict[str, str]) -> list[tuple[str, bool]]:
    """Submit the case's runs (``runs.submit``); [(run_id, created)], the primary run first.
    Call inside a write transaction."""
    (study_instance_uid,) = db.execute(
        "SELECT s.study_instance_uid FROM cases c JOIN series s USING (series_instance_uid) "
        "WHERE c.case_id = ?", [case_id]).fetchone()
    return [runs.submit(db, case_id, seed=seed, model=assignment.model, arm=assignment.arm)
            for assignment in assignments(db, study_instance_uid or "", fallback)]
