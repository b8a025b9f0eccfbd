"""Runs: idempotent ids, the reconciler, retries with backoff."""

from __future__ import annotations

import time

from appliance import runs
from appliance.config import load_config
from appliance.database import connect, write_transaction
from appliance.queue import RunQueue
from appliance.reconciler import reconcile
from tests.conftest import storescu

MODEL = {"id": "test-model", "weights_sha256": "00" * 32}


def seeded_case(db) -> int:
    with write_transaction(db):
        db["series"].insert({"series_instance_uid": "1.2.3", "state": "complete"})
        db["instances"].insert({"sop_instance_uid": "1.2.3.1", "series_instance_uid": "1.2.3",
                                "sha256": "ab" * 32})
        db["cases"].insert({"series_instance_uid": "1.2.3", "created_at": time.time()})
    return 1


def test_the_same_submission_returns_the_same_run(tmp_path):
    db = connect(tmp_path / "aomas.db")
    case_id = seeded_case(db)
    with write_transaction(db):
        first, created = runs.submit(db, case_id, seed=0, model=MODEL)
        again, created_again = runs.submit(db, case_id, seed=0, model=MODEL)
    assert (first, created) == (again, True) or (created, created_again) == (True, False)
    assert first == again and created and not created_again
    with write_transaction(db):
        other, _ = runs.submit(db, case_id, seed=1, model=MODEL)
    assert other != first
    assert runs.get(db, first)["superseded_by"] == other
    with write_transaction(db):
        retrained, _ = runs.submit(db, case_id, seed=1,
                                   model={**MODEL, "weights_sha256": "11" * 32})
    assert retrained != other  # new weights, new run


def test_reconciler_rings_again_and_enforces_the_deadline(tmp_path):
    config = load_config(environ={"AOMAS_APPLIANCE_DATA_DIR": str(tmp_path)})
    db = connect(tmp_path / "aomas.db")
    case_id = seeded_case(db)
    with write_transaction(db):
        run_id, _ = runs.submit(db, case_id, seed=0, model=MODEL)
    queue = RunQueue(config)
    assert reconcile(db, queue, config)["rang_again"] == 1
    assert queue.waiting_run_ids() == {run_id}
    assert reconcile(db, queue, config)["rang_again"] == 0  # a task is waiting already

    db.execute("UPDATE runs SET queued_at = queued_at - 7200")
    assert reconcile(db, queue, config)["deadline_failed"] == 1
    run = runs.get(db, run_id)
    assert run["state"] == "FAILED" and "did not finish within 3600 s" in run["reason"]


def test_a_lost_doorbell_is_rung_again_at_worker_start(box, studies):
    box.start("scp")
    study = studies["multiframe"]
    assert storescu(box.dicom_port, study["dir"]).returncode == 0
    assert box.wait_for_run(study["series_instance_uid"], states=("QUEUED",))
    box.kill("scp")
    for path in box.data_dir.glob("queue.db*"):
        path.unlink()  # the task is gone; only the runs table remembers
    box.start("worker")
    run = box.wait_for_run(study["series_instance_uid"])
    assert run["state"] == "SUCCEEDED"


def test_transient_errors_are_retried_with_backoff(box, studies):
    box.start("scp")
    study = studies["multiframe"]
    assert storescu(box.dicom_port, study["dir"]).returncode == 0
    [(sha256,)] = box.query("SELECT sha256 FROM instances")
    stored = box.data_dir / "objects" / sha256[:2] / sha256
    hidden = stored.with_suffix(".hidden")
    stored.rename(hidden)  # the store is unreadable for a while
    box.start("worker")
    deadline = time.monotonic() + 30
    while not box.runs_for_series(study["series_instance_uid"])[-1]["reason"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    waiting = box.runs_for_series(study["series_instance_uid"])[-1]
    assert waiting["state"] in ("QUEUED", "RUNNING")
    assert waiting["reason"].startswith("retrying: a stored instance could not be read")
    hidden.rename(stored)
    run = box.wait_for_run(study["series_instance_uid"], timeout=60)
    assert run["state"] == "SUCCEEDED"
    assert run["attempts"] >= 2


def test_a_full_disk_during_a_run_is_retried_not_failed(box, studies):
    """StorageFull is transient (exceptions.py): the run waits for space instead of failing as
    an internal error."""
    box.start("scp")
    study = studies["multiframe"]
    assert storescu(box.dicom_port, study["dir"]).returncode == 0
    assert box.wait_for_run(study["series_instance_uid"], states=("QUEUED",))
    box.kill("scp")
    roomy = box.config_path.read_text()
    box.config_path.write_text(roomy.replace("min_free_disk_mb = 1\n",
                                             "min_free_disk_mb = 1000000000\n"))
    box.start("worker")   # its artifacts cannot be stored: below a petabyte's watermark
    deadline = time.monotonic() + 60
    while not box.runs_for_series(study["series_instance_uid"])[-1]["reason"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    waiting = box.runs_for_series(study["series_instance_uid"])[-1]
    assert waiting["state"] in ("QUEUED", "RUNNING"), dict(waiting)
    assert waiting["reason"].startswith("retrying: ") and "watermark" in waiting["reason"]
    box.kill("worker")
    box.config_path.write_text(roomy)   # space freed
    box.start("worker")
    assert box.wait_for_run(study["series_instance_uid"], timeout=90)["state"] == "SUCCEEDED"


def test_a_persistent_transient_error_gives_up_after_the_retries(box, studies):
    box.start("scp")
    study = studies["multiframe"]
    assert storescu(box.dicom_port, study["dir"]).returncode == 0
    [(sha256,)] = box.query("SELECT sha256 FROM instances")
    (box.data_dir / "objects" / sha256[:2] / sha256).unlink()
    box.start("worker")
    run = box.wait_for_run(study["series_instance_uid"], timeout=60)
    assert run["state"] == "FAILED"
    assert run["attempts"] == 4
    assert run["reason"].startswith("gave up after 4 attempts")
