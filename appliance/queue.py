"""The Huey instance, its task and its periodic tasks (weekly drift, daily audit head). Huey
is only the doorbell; SQLite holds the truth.

Huey delivers at most once: a task running when its worker dies is gone. That is why every run
lives in the ``runs`` table and ``appliance.reconciler`` re-queues what was lost.
"""

from __future__ import annotations

from collections.abc import Callable

from huey import Huey, PriorityRedisHuey, SqliteHuey, crontab

from appliance.config import Config
from appliance.exceptions import ConfigurationError
from appliance.runs import SHADOW_ARM

TASK_NAME = "execute_run"
# The worker's periodic tasks by name, as crontab fields (Huey keeps UTC): the weekly drift
# check (appliance.drift), Mondays at 03:00; the audit chain's head to the system log
# (appliance.audit.log_head), daily at 00:05.
PERIODIC_SCHEDULES = {
    "drift_check": {"day_of_week": "1", "hour": "3", "minute": "0"},
    "audit_head": {"hour": "0", "minute": "5"},
}
# Higher first: a shadow run (appliance.routing) waits behind every production and canary run.
PRIORITY, SHADOW_PRIORITY = 10, 0


def make_huey(config: Config) -> Huey:
    if config.queue.backend == "sqlite":
        # fsync: a queued doorbell survives power loss as the run row does.
        return SqliteHuey("aomas", filename=str(config.data_dir / "queue.db"), fsync=True,
                          results=False)
    if config.queue.backend == "redis":
        # The priority storage (a sorted set; Redis 5 or later) so shadow runs wait.
        return PriorityRedisHuey("aomas", url=config.queue.redis_url, results=False)
    raise ConfigurationError(
        f"queue.backend must be 'sqlite' or 'redis', not {config.queue.backend!r}")


def _executed_elsewhere(run_id: str) -> None:
    raise RuntimeError("this process only enqueues runs; start `aomas worker` to execute them")


class RunQueue:
    """Enqueues runs by id; in the worker's process it also executes them (``consumer``)."""

    def __init__(self, config: Config):
        self.huey = make_huey(config)
        self._execute: Callable[[str], None] = _executed_elsewhere

        @self.huey.task(name=TASK_NAME)
        def execute_run(run_id: str) -> None:
            self._execute(run_id)

        self._task = execute_run
        self._periodic: dict[str, Callable[[], None]] = {}
        for name, schedule in PERIODIC_SCHEDULES.items():
            self.huey.periodic_task(crontab(**schedule), name=name)(self._periodic_task(name))

    def _periodic_task(self, name: str) -> Callable[[], None]:
        def run() -> None:
            self._periodic.get(name, lambda: None)()
        return run

    def consumer(self, execute: Callable[[str], None],
                 periodic_tasks: dict[str, Callable[[], None]] | None = None, **options):
        """The Huey consumer that calls ``execute(run_id)`` for each task and each of
        ``periodic_tasks`` (by name in ``PERIODIC_SCHEDULES``) on its schedule; not started."""
        unknown = set(periodic_tasks or {}) - set(PERIODIC_SCHEDULES)
        if unknown:
            raise ValueError(f"no schedule for periodic task(s) {sorted(unknown)}")
        self._execute = execute
        self._periodic.update(periodic_tasks or {})
        return self.huey.create_consumer(**options)

    def enqueue(self, run_id: str, delay_seconds: float = 0, *, arm: str | None = None) -> None:
        priority = SHADOW_PRIORITY if arm == SHADOW_ARM else PRIORITY
        if delay_seconds > 0:
            self._task.schedule(args=(run_id,), delay=delay_seconds, priority=priority)
        else:
            self.huey.enqueue(self._task.s(run_id, priority=priority))

    def waiting_run_ids(self) -> set[str]:
        """Runs with a task still waiting in the queue or its schedule."""
        tasks = self.huey.pending() + self.huey.scheduled()
        return {task.args[0] for task in tasks if task.name == TASK_NAME and task.args}

    def depth(self) -> int:
        return self.huey.pending_count()
