"""Ingest bookkeeping: a received instance becomes a stored row, a series, and in time a run.

``store_instance`` is the SCP's callback and decides the C-STORE status: 0x0000 only after the
file is durable in the object store and its row is committed. Completion rules (DESIGN.md):
a single multi-frame instance is a whole volume at once; a multi-instance series is complete
when the expected count has arrived or after ``series_idle_seconds`` of quiet; an instance that
arrives after that reopens the series, and completing it again creates a superseding run.

Where: completion on arrival happens inside ``store_instance``, in the SCP's C-STORE handler or
the upload route; completion by quiet time in ``complete_idle_series``, which only the worker's
ticker calls (every 0.5 s). Both are right only together: a split series whose count is unknown
(no Images in Acquisition) completes by quiet time alone, and the ticker needs no SCP running.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable

import sqlite_utils

from appliance import audit, routing
from appliance.database import ThreadLocalDatabase, write_transaction
from appliance.exceptions import StorageFull
from appliance.storage import ObjectStore
from dicom import status
from dicom.scp import ReceivedInstance

log = logging.getLogger(__name__)

RECEIVING, COMPLETE = "receiving", "complete"


class Ingest:
    def __init__(self, databases: ThreadLocalDatabase, store: ObjectStore, *, seed: int,
                 model: dict, series_idle_seconds: float,
                 on_run_queued: Callable[..., None]):
        """``model``: the manifest entry of the model a case gets while the registry names no
        production version (``appliance.routing``); ``on_run_queued(run_id, arm=…)``."""
        self.databases = databases
        self.store = store
        self.seed = seed
        self.model = model
        self.series_idle_seconds = series_idle_seconds
        self.on_run_queued = on_run_queued

    def store_instance(self, received: ReceivedInstance) -> int:
        """Make a received instance durable and account for it; return the C-STORE status."""
        try:
            self.store.check_free_space()
            sha256, size, new = self.store.adopt(received.path)
        except StorageFull as error:
            log.error("refused an instance from %s: %s", received.calling_ae, error)
            return status.OUT_OF_RESOURCES
        except OSError as error:
            log.error("could not write a received instance to the store: %s", error)
            return status.OUT_OF_RESOURCES

        db = self.databases.get()
        try:
            with write_transaction(db):
                queued = self._record(db, received, sha256, size)
        except sqlite3.Error as error:
            log.error("could not record a received instance: %s", error)
            if new:  # the sender is told it failed and will resend: keep no orphan
                self.store.discard(sha256)
            return status.OUT_OF_RESOURCES
        for run_id, arm in queued:
            self.on_run_queued(run_id, arm=arm)
        return status.SUCCESS

    def _record(self, db: sqlite_utils.Database, received: ReceivedInstance, sha256: str,
                size: int) -> list[tuple[str, str]]:
        existing = list(db["instances"].rows_where("sop_instance_uid = ?",
                                                   [received.sop_instance_uid]))
        if existing:
            if existing[0]["sha256"] != sha256:
                audit.record(db, actor=f"dicom:{received.calling_ae}",
                             action="instance.conflict", object_kind="instance",
                             object_id=received.sop_instance_uid,
                             detail={"kept_sha256": existing[0]["sha256"],
                                     "refused_sha256": sha256, "peer": received.peer_address})
                log.warning("kept the first copy of a resent instance whose content differs "
                            "(sha256 %s… vs %s…); see the audit log",
                            existing[0]["sha256"][:12], sha256[:12])
            return []

        now = time.time()
        db["instances"].insert({
            "sop_instance_uid": received.sop_instance_uid,
            "sop_class_uid": received.sop_class_uid,
            "study_instance_uid": received.study_instance_uid,
            "series_instance_uid": received.series_instance_uid,
            "instance_number": received.instance_number,
            "number_of_frames": received.number_of_frames,
            "rows": received.rows, "columns": received.columns,
            "images_in_acquisition": received.images_in_acquisition,
            "transfer_syntax_uid": received.transfer_syntax_uid,
            "sha256": sha256, "size_bytes": size, "calling_ae": received.calling_ae,
            "received_at": received.received_at,
        })
        series = self._update_series(db, received, now)
        if _complete_on_arrival(series):
            return self._complete(db, series["series_instance_uid"], now)
        return []

    def _update_series(self, db: sqlite_utils.Database, received: ReceivedInstance,
                       now: float) -> dict:
        table = db["series"]
        uid = received.series_instance_uid
        rows = list(table.rows_where("series_instance_uid = ?", [uid]))
        if not rows:
            table.insert({
                "series_instance_uid": uid, "study_instance_uid": received.study_instance_uid,
                "sop_class_uid": received.sop_class_uid, "instance_count": 0, "frame_count": 0,
                "expected_instances": None, "first_received_at": now, "state": RECEIVING,
                "accession_number": received.accession_number, "modality": received.modality,
                "acquisition_date": received.acquisition_date,
            })
            series = table.get(uid)
        else:
            series = rows[0]
        table.update(uid, {
            "instance_count": series["instance_count"] + 1,
            "frame_count": series["frame_count"] + received.number_of_frames,
            "expected_instances": received.images_in_acquisition
            or series["expected_instances"],
            "last_received_at": now,
            # A late instance reopens a complete series; completing it again supersedes the run.
            "state": RECEIVING,
        })
        series = table.get(uid)
        series["arrived_frames"] = received.number_of_frames
        return series

    def _complete(self, db: sqlite_utils.Database, series_instance_uid: str,
                  now: float) -> list[tuple[str, str]]:
        """The case's runs queued now, as (run_id, arm)."""
        db["cases"].insert({"series_instance_uid": series_instance_uid, "created_at": now},
                           ignore=True)
        case_id = db.execute("SELECT case_id FROM cases WHERE series_instance_uid = ?",
                             [series_instance_uid]).fetchone()[0]
        db["series"].update(series_instance_uid, {"state": COMPLETE, "completed_at": now})
        dispatched = routing.dispatch(db, case_id, seed=self.seed, fallback=self.model)
        for run_id, created in dispatched:
            log.info("case %d complete; run %s %s", case_id, run_id,
                     "queued" if created else "already exists")
        return [(run_id, db["runs"].get(run_id)["arm"]) for run_id, _ in dispatched]

    def complete_idle_series(self) -> list[tuple[str, str]]:
        """Complete every series that has been quiet for ``series_idle_seconds``; return the
        runs queued, as (run_id, arm)."""
        db = self.databases.get()
        cutoff = time.time() - self.series_idle_seconds
        queued = []
        with write_transaction(db):
            idle = db.execute("SELECT series_instance_uid FROM series WHERE state = ? "
                              "AND last_received_at <= ?", [RECEIVING, cutoff]).fetchall()
            for (uid,) in idle:
                queued += self._complete(db, uid, time.time())
        for run_id, arm in queued:
            self.on_run_queued(run_id, arm=arm)
        return queued


def _complete_on_arrival(series: dict) -> bool:
    expected = series["expected_instances"]
    if expected and expected > 1:
        return series["instance_count"] >= expected
    # One multi-frame instance with no sign of siblings is a whole volume the moment it lands.
    return series["instance_count"] == 1 and series["arrived_frames"] > 1
