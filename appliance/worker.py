"""The worker: executes runs handed over by Huey, and keeps the queue honest.

``Worker.execute`` is what the Huey task calls. It claims the run (so duplicate doorbells are
harmless), keeps its lease alive while the pipeline works, and records the outcome: transient
errors are retried with exponential backoff and jitter, bad input fails at once.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
from typing import TYPE_CHECKING

from appliance import alerts, audit, drift, outbox, registry, runs, shadow
from appliance.database import ThreadLocalDatabase, write_transaction
from appliance.exceptions import ConfigurationError, InvalidInput, TransientError
from appliance.pipeline import run_pipeline
from appliance.reconciler import reconcile, worker_identity
from appliance.review import tiles

if TYPE_CHECKING:
    from appliance.services import Appliance

log = logging.getLogger(__name__)

TICK_SECONDS = 0.5
OUTBOX_POLL_SECONDS = 2.0


class Worker:
    def __init__(self, appliance: Appliance):
        self.config = appliance.config
        self.databases = appliance.databases
        self.store = appliance.store
        self.model = appliance.model
        self.queue = appliance.queue
        self.ingest = appliance.ingest
        self.identity = worker_identity()
        self._stop = threading.Event()
        self._outputs_waiting = threading.Event()
        self.consumer = None

    def execute(self, run_id: str) -> None:
        db = self.databases.get()
        lease = self.config.worker.lease_seconds
        if not runs.claim(db, run_id, self.identity, lease):
            return  # finished, taken by another worker, or not due yet: nothing to do
        run = runs.get(db, run_id)
        log.info("run %s: RUNNING (attempt %d)", run_id, run["attempts"])
        heartbeat = _Heartbeat(self.databases, run_id, self.identity, lease)
        heartbeat.start()
        try:
            result = run_pipeline(
                run, self._instance_paths(run), self.store, self.model_of(run),
                use_gpu=self.config.pipeline.gpu != "off",
                predictor_kind=self.config.pipeline.predictor,
                uncertainty_samples=self.config.pipeline.uncertainty_samples,
                segmentation_types=outbox.segmentation_types(self.config.destinations),
                device_serial_number=self.config.appliance.device_serial_number,
                on_stage=lambda stage: self._record_stage(run_id, stage))
        except (InvalidInput, ConfigurationError) as error:  # retrying cannot help
            runs.fail(db, run_id, str(error))
            log.warning("run %s: FAILED: %s", run_id, error)
        except TransientError as error:
            self._retry_or_fail(run, str(error))
        except Exception as error:
            log.exception("run %s: unexpected error", run_id)
            runs.fail(db, run_id, f"internal error ({type(error).__name__}: {error}); "
                      "report it with the run id")
        else:
            # One transaction: a crash cannot leave a SUCCEEDED run whose outputs never go out.
            # A shadow run's outputs stay here, and nobody reviews it: no outbox, no tiles.
            with write_transaction(db):
                succeeded = runs.succeed(db, run_id, self.identity, result)
                if succeeded and not runs.is_shadow(run):
                    outbox.enqueue(db, run_id, result.outputs, self.config.destinations)
                    tiles.record(db, run_id, run["case_id"], result.review_tiles)
            if succeeded:
                log.info("run %s: SUCCEEDED", run_id)
                self._outputs_waiting.set()
                self._compare_shadow(run["case_id"])
        finally:
            heartbeat.stop()

    def weekly_drift_check(self) -> None:
        report = drift.weekly(self.databases.get(), self.store, self.config)
        if report is not None:
            log.info("drift check: %s (model %s, %s reviewed cases)", report["status"],
                     report["model_id"], report.get("reviewed_cases"))

    def daily_audit_head(self) -> None:
        audit.log_head(self.databases.get(), self.config.data_dir)

    def model_of(self, run: dict) -> registry.ModelRecord:
        """The model version the run was dispatched with (its manifest names it), from the
        registry; this process's configured model when it is that one."""
        entry = run["manifest"]["model"]
        if entry == self.model.manifest_entry():
            return self.model
        db = self.databases.get()
        model = registry.get_model(db, entry["id"], missing_ok=True)
        if model is None or model["weights_sha256"] != entry["weights_sha256"]:
            raise ConfigurationError(f"the run names model {entry['id']} with weights "
                                     f"{entry['weights_sha256'][:16]}…, which the registry "
                                     "does not hold; register that version or re-run the case")
        return registry.model_record(
            str(registry.model_directory(self.store, self.config.data_dir, model)))

    def _compare_shadow(self, case_id: int) -> None:
        # The comparison is for people weighing a version; failing it must not fail the run.
        try:
            shadow.compare(self.databases.get(), self.store, case_id)
        except Exception:
            log.exception("case %d: could not compare the shadow run; will not retry", case_id)

    def _record_stage(self, run_id: str, stage: str) -> None:
        # Progress is for people watching; a busy database must not fail the run over it.
        try:
            runs.record_stage(self.databases.get(), run_id, self.identity, stage)
        except sqlite3.Error as error:
            log.warning("run %s: could not record stage %s: %s", run_id, stage, error)

    def _retry_or_fail(self, run: dict, reason: str) -> None:
        db = self.databases.get()
        attempts = run["attempts"]
        if attempts > self.config.worker.max_retries:
            runs.fail(db, run["run_id"], f"gave up after {attempts} attempts: {reason}")
            return
        delay = self.config.worker.retry_base_seconds * 2 ** (attempts - 1)
        delay *= random.uniform(0.5, 1.5)  # jitter keeps retries of many runs apart
        if runs.requeue(db, run["run_id"], delay_seconds=delay, reason=f"retrying: {reason}"):
            self.queue.enqueue(run["run_id"], delay_seconds=delay, arm=run["arm"])
            log.warning("run %s: transient error, retry in %.1f s: %s", run["run_id"], delay,
                        reason)

    def _instance_paths(self, run: dict) -> list:
        db = self.databases.get()
        case = db["cases"].get(run["case_id"])
        rows = db.execute("SELECT sha256 FROM instances WHERE series_instance_uid = ? "
                          "ORDER BY instance_number, sop_instance_uid",
                          [case["series_instance_uid"]]).fetchall()
        return [self.store.path_for(sha256) for (sha256,) in rows]

    def start(self) -> None:
        """Reconcile, then start the Huey consumer threads and the ticker; returns at once."""
        reconcile(self.databases.get(), self.queue, self.config)
        # Also at start: a box that is off at 00:05 would otherwise leave a day unlogged.
        self.daily_audit_head()
        # Poll often: an idle consumer would otherwise back off to 10 s before starting a run.
        self.consumer = self.queue.consumer(
            self.execute, periodic_tasks={"drift_check": self.weekly_drift_check,
                                          "audit_head": self.daily_audit_head},
            workers=1, worker_type="thread", periodic=True, initial_delay=0.05, backoff=1.15,
            max_delay=0.1, scheduler_interval=1)
        self.consumer.start()
        threading.Thread(target=self._tick, name="aomas-ticker", daemon=True).start()
        threading.Thread(target=self._deliver, name="aomas-outbox", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._outputs_waiting.set()
        if self.consumer is not None:
            self.consumer.stop(graceful=True)

    def _tick(self) -> None:
        since_reconcile = 0.0
        while not self._stop.wait(TICK_SECONDS):
            try:
                self.ingest.complete_idle_series()
                since_reconcile += TICK_SECONDS
                if since_reconcile >= self.config.worker.reconcile_seconds:
                    since_reconcile = 0.0
                    reconcile(self.databases.get(), self.queue, self.config)
            except Exception:
                log.exception("ticker: will try again")

    def _deliver(self) -> None:
        """Send due outbox rows (at once when a run has finished, else every few seconds) and
        due alerts."""
        while not self._stop.is_set():
            self._outputs_waiting.wait(OUTBOX_POLL_SECONDS)
            self._outputs_waiting.clear()
            if self._stop.is_set():
                continue
            try:
                alerts.deliver_due(self.databases.get(), self.config.alerts)
            except Exception:
                log.exception("alerts: will try again")
            if not self.config.destinations:
                continue
            try:
                outbox.deliver_due(
                    self.databases.get(), self.store, self.config.destinations,
                    calling_ae=self.config.dicom.ae_title,
                    retry_base_seconds=self.config.worker.outbox_retry_base_seconds,
                    dead_after_seconds=self.config.worker.outbox_dead_after_seconds)
            except Exception:
                log.exception("outbox: will try again")


class _Heartbeat(threading.Thread):
    """Renews the run's lease while the pipeline works, so the reconciler leaves it alone."""

    def __init__(self, databases: ThreadLocalDatabase, run_id: str, worker: str, lease: float):
        super().__init__(name=f"lease-{run_id[:8]}", daemon=True)
        self.databases, self.run_id, self.worker, self.lease = databases, run_id, worker, lease
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.lease / 3):
            if not runs.renew_lease(self.databases.get(), self.run_id, self.worker, self.lease):
                return

    def stop(self) -> None:
        self._done.set()
