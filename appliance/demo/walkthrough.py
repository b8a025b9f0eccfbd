"""The demo: a synthetic AO-OCT study in over DICOM, its results out to a local Orthanc.

``aomas serve --demo`` (what ``make demo`` runs) starts an Orthanc under the data dir as the
demo PACS when Orthanc is installed, sends a phantom to the appliance's own SCP as a scanner
would, waits for the run and its deliveries, and prints where to look at the study with its SEG
and SR. ``aomas demo`` does the sending and waiting against an appliance already running.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from appliance import outbox, runs
from appliance.config import Config, destination_profile
from appliance.demo.pacs import LocalOrthanc, free_port, orthanc_program
from appliance.demo.study import write_phantom_study
from appliance.exceptions import AomasError
from appliance.services import open_data_dir
from dicom.send import dicom_files, send_files
from gpu.phantom import PhantomSpec

DEMO_PACS = "demo-pacs"
# Orthanc's own defaults, so the printed address is the familiar one when they are free.
ORTHANC_DICOM_PORT, ORTHANC_HTTP_PORT = 4242, 8042


def start_demo_pacs(config: Config, log: Callable[[str], None]) -> tuple[Config,
                                                                        LocalOrthanc | None]:
    """A local Orthanc as the only destination, when Orthanc is installed; else the config
    as it is (results then stay in the appliance and its outbox)."""
    if orthanc_program() is None:
        log("Orthanc is not installed (`apt-get install orthanc`): the results stay in the "
            "appliance; no demo PACS")
        return config, None
    pacs = LocalOrthanc(config.data_dir / DEMO_PACS,
                        dicom_port=free_port(ORTHANC_DICOM_PORT),
                        http_port=free_port(ORTHANC_HTTP_PORT))
    pacs.start()
    if config.destinations:
        # A synthetic study must never reach the clinic's PACS.
        log(f"demo mode: the {len(config.destinations)} configured destination(s) are not "
            "used; results go to the demo PACS only")
    destination = destination_profile({"name": DEMO_PACS, "kind": "orthanc", "url": pacs.url})
    log(f"demo PACS: Orthanc at {pacs.url} (DICOM {pacs.ae_title}@127.0.0.1:{pacs.dicom_port})")
    return dataclasses.replace(config, destinations=(destination,)), pacs


def run_demo(config: Config, *, seed: int, timeout: float, log: Callable[[str], None],
             pacs: LocalOrthanc | None = None) -> dict:
    """Send a phantom to the running appliance, wait for its run and deliveries, report."""
    host = "127.0.0.1" if config.dicom.bind in ("0.0.0.0", "") else config.dicom.bind
    calling_ae = (config.dicom.allowed_calling_aes or ["AOMAS-DEMO"])[0]
    with tempfile.TemporaryDirectory(prefix="aomas-demo-") as tmp:
        truth = write_phantom_study(Path(tmp), PhantomSpec(seed=seed))
        log(f"phantom: {truth['summary']['cone_count']} cones at "
            f"{truth['spec']['eccentricity_deg']} deg; sending to {host}:{config.dicom.port}")
        results = send_files(dicom_files([Path(tmp) / "dicom"]), host, config.dicom.port,
                             called_ae=config.dicom.ae_title, calling_ae=calling_ae)
    if not all(r.ok for r in results):
        raise AomasError(f"the appliance did not accept the phantom: {results[0].error or ''}"
                         f" status {results[0].status}")
    databases, _ = open_data_dir(config)
    db = databases.get()
    deadline = time.monotonic() + timeout
    run = _wait_for_run(db, truth["series_instance_uid"], deadline)
    log(f"run {run['run_id']}: {run['state']}" + (f" ({run['reason']})" if run["reason"] else ""))
    log(json.dumps(runs.as_json(run)["result"], indent=1, sort_keys=True))
    if run["state"] != runs.SUCCEEDED:
        raise AomasError(f"the demo run failed: {run['reason']}")
    rows = _wait_for_delivery(db, run["run_id"], deadline)
    for row in rows:
        log(f"  {row['kind']:<12} → {row['destination']}: {row['state']}"
            + (f" ({row['detail']})" if row["detail"] else ""))
    if pacs is not None:
        page = pacs.study_page(truth["study_instance_uid"])
        log(f"the study with its SEG and SR in the demo PACS: {page}" if page else
            "the demo PACS does not hold the study; see `aomas outbox list`")
    return run


def _wait_for_run(db, series_instance_uid: str, deadline: float) -> dict:
    while time.monotonic() < deadline:
        row = db.execute(
            "SELECT r.run_id FROM runs r JOIN cases c ON c.case_id = r.case_id "
            "WHERE c.series_instance_uid = ? ORDER BY r.queued_at DESC LIMIT 1",
            [series_instance_uid]).fetchone()
        run = runs.get(db, row[0]) if row else None
        if run and run["state"] in runs.FINISHED:
            return run
        time.sleep(0.2)
    raise AomasError("no finished run in time; is `aomas worker` running? See `aomas doctor`")


def _wait_for_delivery(db, run_id: str, deadline: float) -> list[dict]:
    """The run's outbox rows once none is waiting for a first answer (or at the deadline)."""
    while True:
        rows = list(db.query("SELECT * FROM outbox WHERE run_id = ? ORDER BY id", [run_id]))
        if all(r["state"] != outbox.PENDING or r["attempts"] > 0 for r in rows) \
                or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)
