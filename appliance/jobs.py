"""Long jobs the web page or API starts (a gate evaluation, a retraining): each in a thread of
the web process that waits for its own subprocess, one per key at a time. What a job produces
lands in the database as from the command line; a web restart loses a running job (nothing is
recorded; start it again)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Jobs:
    def __init__(self) -> None:
        self._running: dict[str, float] = {}
        self._lock = threading.Lock()

    def start(self, key: str, job: Callable[[], object]) -> bool:
        """Run ``job`` in a thread; False (and nothing started) when ``key`` is running."""
        with self._lock:
            if key in self._running:
                return False
            self._running[key] = time.time()
        threading.Thread(target=self._run, args=(key, job), name=f"job-{key}",
                         daemon=True).start()
        return True

    def running_since(self, key: str) -> float | None:
        with self._lock:
            return self._running.get(key)

    def _run(self, key: str, job: Callable[[], object]) -> None:
        try:
            job()
        except Exception:
            log.exception("%s failed; nothing was recorded", key)
        finally:
            with self._lock:
                self._running.pop(key, None)
