"""The appliance's figures for Prometheus (GET /metrics): read from SQLite at each scrape, so
every process (scp, worker, web) reports the same truth and nothing is kept in memory.

What an admin watches: runs by state and how long their stages take, the outbox by state,
instances received, the queue's depth, and the model lifecycle (each version's stage, its
latest gate figures, promotions and overrides, rollbacks, each pointer's share of studies, the
latest drift check's ECE and its time as a heartbeat, unresolved alerts). No patient data:
counts, seconds and model ids only.
"""

from __future__ import annotations

import sqlite_utils
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from appliance import outbox, runs
from appliance.queue import RunQueue

CONTENT_TYPE = CONTENT_TYPE_LATEST
RECENT_RUNS = 500   # stage timings are averaged over the newest finished runs


class ApplianceCollector:
    def __init__(self, db: sqlite_utils.Database, queue: RunQueue | None):
        self.db, self.queue = db, queue

    def collect(self):
        db = self.db
        by_state = dict(db.execute("SELECT state, count(*) FROM runs GROUP BY state").fetchall())
        gauge = GaugeMetricFamily("aomas_runs", "Runs by state.", labels=["state"])
        for state in runs.STATES:
            gauge.add_metric([state], by_state.get(state, 0))
        yield gauge

        stage_sum = GaugeMetricFamily(
            "aomas_run_stage_seconds_mean",
            f"Mean seconds per pipeline stage over the newest {RECENT_RUNS} succeeded runs.",
            labels=["stage"])
        for stage, mean in db.execute(
                "SELECT stage.key, avg(stage.value) FROM (SELECT result FROM runs WHERE state = ? "
                "ORDER BY finished_at DESC LIMIT ?) AS recent, "
                "json_each(recent.result, '$.stage_seconds') AS stage "
                "GROUP BY stage.key ORDER BY stage.key", [runs.SUCCEEDED, RECENT_RUNS]):
            stage_sum.add_metric([stage], mean)
        yield stage_sum

        rows = dict(db.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall())
        gauge = GaugeMetricFamily("aomas_outbox", "Outputs on their way to a PACS, by state.",
                                  labels=["state"])
        for state in outbox.STATES:
            gauge.add_metric([state], rows.get(state, 0))
        yield gauge

        yield CounterMetricFamily("aomas_instances_received",
                                  "DICOM instances stored (C-STORE and upload).",
                                  value=db.execute("SELECT count(*) FROM instances").fetchone()[0])
        if self.queue is not None:
            yield GaugeMetricFamily("aomas_queue_depth", "Run tasks waiting in the queue.",
                                    value=self.queue.depth())
        yield from self._lifecycle()

    def _lifecycle(self):
        db = self.db
        stage = GaugeMetricFamily("aomas_model_stage", "1 for each model version's stage.",
                                  labels=["model_id", "stage"])
        for model_id, model_stage in db.execute("SELECT model_id, stage FROM models"):
            stage.add_metric([model_id, model_stage], 1)
        yield stage
        f1 = GaugeMetricFamily("aomas_model_gate_f1", "Mean cone F1 of the latest gate.",
                               labels=["model_id"])
        ece = GaugeMetricFamily("aomas_model_gate_ece",
                                "Detection ECE (worse family) of the latest gate.",
                                labels=["model_id"])
        for model_id, f1_mean, ece_value in db.execute(
                "SELECT model_id, f1_mean, ece FROM gate_results WHERE id IN "
                "(SELECT max(id) FROM gate_results GROUP BY model_id)"):
            f1.add_metric([model_id], f1_mean)
            ece.add_metric([model_id], ece_value)
        yield f1
        yield ece
        actions = dict(db.execute("SELECT action, count(*) FROM model_events "
                                  "GROUP BY action").fetchall())
        promotions = CounterMetricFamily(
            "aomas_model_promotions", "Promotions of model versions (override: despite a "
            "failed gate).", labels=["action"])
        for action in ("promote", "override"):
            promotions.add_metric([action], actions.get(action, 0))
        yield promotions
        yield CounterMetricFamily(
            "aomas_model_rollbacks", "Model versions rolled back.",
            value=db.execute("SELECT count(*) FROM model_events WHERE action = 'rollback' "
                             "AND to_stage = 'ROLLED_BACK'").fetchone()[0])
        traffic = GaugeMetricFamily("aomas_model_traffic_percent",
                                    "Share of studies each pointer's version gets (the shadow "
                                    "version gets a copy of every study).",
                                    labels=["pointer", "model_id"])
        pointers = db.execute("SELECT pointer, model_id, traffic_percent FROM model_pointers"
                              ).fetchall()
        canary = next((row[2] or 0 for row in pointers if row[0] == "canary"), 0)
        for pointer, model_id, percent in pointers:
            share = {"canary": percent or 0, "production": 100 - canary}.get(pointer, 100)
            traffic.add_metric([pointer, model_id], share)
        yield traffic
        yield from self._drift()

    def _drift(self):
        latest = self.db.execute("SELECT at, model_id, ece, ece_low, ece_high, reviewed_cases, "
                                 "status FROM drift_reports ORDER BY id DESC LIMIT 1").fetchone()
        heartbeat = GaugeMetricFamily(
            "aomas_drift_last_check_timestamp_seconds",
            "When the latest drift check ran (alert when it is over 8 days old).")
        if latest:
            heartbeat.add_metric([], latest[0])
        yield heartbeat
        if latest and latest[2] is not None:
            for name, index, text in (("ece", 2, "Detection ECE"),
                                      ("ece_low", 3, "Lower 95 % bound of the ECE"),
                                      ("ece_high", 4, "Upper 95 % bound of the ECE")):
                gauge = GaugeMetricFamily(f"aomas_drift_{name}", f"{text} of the production "
                                          "model on the latest check's reviewed tiles.",
                                          labels=["model_id"])
                gauge.add_metric([latest[1]], latest[index])
                yield gauge
        if latest:
            yield GaugeMetricFamily("aomas_drift_reviewed_cases",
                                    "Reviewed cases in the latest drift check's window.",
                                    value=latest[5] or 0)
        alerts_open = self.db.execute("SELECT count(*) FROM alerts WHERE resolved_at IS NULL"
                                      ).fetchone()[0]
        yield GaugeMetricFamily("aomas_alerts_unresolved", "Alerts nobody has resolved yet.",
                                value=alerts_open)


def exposition(db: sqlite_utils.Database, queue: RunQueue | None) -> bytes:
    """The Prometheus text format of the appliance's figures now."""
    registry = CollectorRegistry()
    registry.register(ApplianceCollector(db, queue))
    return generate_latest(registry)
