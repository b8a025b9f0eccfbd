"""The appliance's parts, wired once per process from the configuration.

``build`` makes what every part shares: the database, the object store, the model, the run
queue and ingest. ``aomas scp``, ``aomas worker`` and ``aomas web`` each start one part on it
(one systemd unit each); ``aomas serve`` starts all three on the same one (the web part lives in
``ui``, which imports this module, never the other way round).

One ``Ingest`` serves the SCP, the upload route and the worker's ticker; where each completes a
series is said in ``appliance.ingest``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from appliance import tls
from appliance.config import Config
from appliance.database import ThreadLocalDatabase
from appliance.ingest import Ingest
from appliance.orphans import sweep_orphans
from appliance.queue import RunQueue
from appliance.registry import ModelRecord, model_record
from appliance.storage import ObjectStore
from appliance.worker import Worker
from dicom.guard import PeerLimits
from dicom.scp import StorageSCP

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Appliance:
    """What the parts of one process share."""

    config: Config
    databases: ThreadLocalDatabase
    store: ObjectStore
    model: ModelRecord          # the one the next run is submitted with
    queue: RunQueue
    ingest: Ingest


def open_data_dir(config: Config) -> tuple[ThreadLocalDatabase, ObjectStore]:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    databases = ThreadLocalDatabase(config.data_dir / "aomas.db")
    databases.get()  # migrate now, not inside the first C-STORE
    store = ObjectStore(config.data_dir, min_free_bytes=config.dicom.min_free_disk_mb * 2**20)
    return databases, store


def build(config: Config) -> Appliance:
    databases, store = open_data_dir(config)
    model = model_record(config.pipeline.model_dir)
    queue = RunQueue(config)
    ingest = Ingest(databases, store, seed=config.pipeline.seed, model=model.manifest_entry(),
                    series_idle_seconds=config.dicom.series_idle_seconds,
                    on_run_queued=queue.enqueue)
    return Appliance(config, databases, store, model, queue, ingest)


def start_scp(appliance: Appliance) -> StorageSCP:
    config, databases, store = appliance.config, appliance.databases, appliance.store
    swept = store.sweep_spool()
    if swept:
        log.warning("removed %d unacknowledged file(s) left in the spool by a crash", swept)
    # Older than a run may take: a running worker's artifacts have no row until it finishes.
    orphans = sweep_orphans(databases.get(), store, older_than_seconds=max(
        config.dicom.spool_stale_seconds, config.worker.run_deadline_seconds) + 60)
    if orphans:
        log.warning("removed %d object(s) that no row refers to (left by a crash between "
                    "storing and committing)", orphans)
    scp = StorageSCP(
        ae_title=config.dicom.ae_title, bind=config.dicom.bind, port=config.dicom.port,
        allowed_calling_aes=config.dicom.allowed_calling_aes,
        limits=PeerLimits(max_associations=config.dicom.max_associations,
                          max_connections_per_peer=config.dicom.max_associations_per_peer,
                          association_request_seconds=config.dicom.association_request_seconds,
                          pdu_seconds=config.dicom.pdu_seconds,
                          max_pdu_bytes=config.dicom.max_pdu_bytes),
        idle_seconds=config.dicom.idle_seconds, spool_dir=store.spool,
        on_instance=appliance.ingest.store_instance, ssl_context=tls.scp_context(config))
    scp.start()
    threading.Thread(target=_sweep_stale_spool, args=(store, config.dicom.spool_stale_seconds),
                     name="spool-janitor", daemon=True).start()
    return scp


def _sweep_stale_spool(store: ObjectStore, stale_seconds: float) -> None:
    # pynetdicom leaves the file of a transfer that died mid-way (peer gone, disk full).
    while True:
        time.sleep(min(max(stale_seconds / 4, 0.5), 60))
        try:
            removed = store.sweep_spool(older_than_seconds=stale_seconds)
        except OSError as error:
            log.error("spool sweep failed: %s", error)
            continue
        if removed:
            log.warning("removed %d spool file(s) of transfers that died", removed)


def start_worker(appliance: Appliance) -> Worker:
    worker = Worker(appliance)
    worker.start()
    log.info("worker %s started (queue backend: %s)", worker.identity,
             appliance.config.queue.backend)
    return worker
