"""The reconciler: make the queue agree with the ``runs`` table again.

Huey forgets a task whose worker was killed, and a doorbell can be lost in a crash between
commit and enqueue. At worker start and every ``worker.reconcile_seconds`` this:
- fails runs that are past their deadline;
- re-queues RUNNING runs whose worker is gone (lease expired, or its process on this host died);
- rings the doorbell again for QUEUED runs with no waiting task.
"""

from __future__ import annotations

import logging
import os
import socket
import time

import sqlite_utils

from appliance import runs
from appliance.config import Config
from appliance.queue import RunQueue

log = logging.getLogger(__name__)


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _worker_is_dead(worker: str | None) -> bool:
    """True only when the worker was a process on this host that no longer exists."""
    if not worker or ":" not in worker:
        return False
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def reconcile(db: sqlite_utils.Database, queue: RunQueue, config: Config) -> dict[str, int]:
    now = time.time()
    counts = {"deadline_failed": 0, "requeued": 0, "rang_again": 0}
    deadline = config.worker.run_deadline_seconds
    for run in db["runs"].rows_where("state IN (?, ?) AND queued_at < ?",
                                     [runs.QUEUED, runs.RUNNING, now - deadline]):
        if runs.fail(db, run["run_id"], f"did not finish within {deadline:.0f} s of being "
                     "queued; check `aomas doctor` and the worker log, then resubmit"):
            counts["deadline_failed"] += 1

    for run in db["runs"].rows_where("state = ?", [runs.RUNNING]):
        lost = (run["lease_expires_at"] or 0) < now or _worker_is_dead(run["worker"])
        if not lost:
            continue
        if run["attempts"] > config.worker.max_retries:
            runs.fail(db, run["run_id"], f"the worker stopped {run['attempts']} times while "
                      "running this; it may exhaust memory on this input")
        elif runs.requeue(db, run["run_id"], delay_seconds=0,
                          reason=f"worker {run['worker']} stopped during the run; re-queued"):
            queue.enqueue(run["run_id"], arm=run["arm"])
            counts["requeued"] += 1

    waiting = queue.waiting_run_ids()
    for run in db["runs"].rows_where("state = ? AND not_before <= ?", [runs.QUEUED, now]):
        if run["run_id"] not in waiting:
            queue.enqueue(run["run_id"], arm=run["arm"])
            counts["rang_again"] += 1
    if any(counts.values()):
        log.info("reconciled: %s", counts)
    return counts
