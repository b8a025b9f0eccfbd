"""GET /metrics: the appliance's figures in the Prometheus text format, read from the database,
for a monitoring address or an admin's session only."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.test_registry import site_model, upload


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_metrics_count_runs_outbox_instances_and_models(web_app, tmp_path):
    web_app.seed_run()
    assert upload(web_app.client("mia"), site_model(tmp_path)).status_code == 201
    answer = web_app.client().get("/metrics")          # the test client calls from 127.0.0.1
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain; version=")
    figures = samples(answer.get_data(True))
    assert figures[("aomas_runs", (("state", "SUCCEEDED"),))] == 1
    assert figures[("aomas_runs", (("state", "FAILED"),))] == 0
    assert figures[("aomas_run_stage_seconds_mean", (("stage", "cones"),))] == 2.0
    assert figures[("aomas_outbox", (("state", "dead"),))] == 0
    assert figures[("aomas_instances_received_total", ())] == 0
    assert figures[("aomas_queue_depth", ())] == 0
    assert figures[("aomas_model_stage", (("model_id", "site-model-1"),
                                          ("stage", "STAGING")))] == 1
    assert figures[("aomas_model_promotions_total", (("action", "promote"),))] == 0
    assert figures[("aomas_model_rollbacks_total", ())] == 0
    assert figures[("aomas_alerts_unresolved", ())] == 0
    assert "PHANTOM" not in answer.get_data(True)     # counts and ids, no patient data


def test_metrics_elsewhere_need_an_admin(web_app):
    elsewhere = {"REMOTE_ADDR": "10.1.2.3"}
    refused = web_app.client().get("/metrics", environ_base=elsewhere)
    assert refused.status_code == 403 and "web.metrics_addresses" in refused.get_data(True)
    lena = web_app.client("lena")
    assert lena.get("/metrics", environ_base={**lena.environ_base, **elsewhere}
                    ).status_code == 403
    admin = web_app.client("admin")
    assert admin.get("/metrics", environ_base={**admin.environ_base, **elsewhere}
                     ).status_code == 200
