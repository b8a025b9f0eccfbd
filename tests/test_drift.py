"""Drift and alerts (issue 16, points 6-7): the weekly check on reviewed tiles raises an alert
that a local HTTP receiver and a local SMTP server get, and raises none for a model whose
confidences match the reviewers; too few reviewed cases say so instead of judging."""

from __future__ import annotations

import http.server
import json
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

from appliance import alerts, drift
from appliance.demo.pacs import free_port
from appliance.registry import BOOTSTRAP_DIR, PRODUCTION, register_directory
from gpu.cone_model import cone_target
from tests.conftest import WebApp, png_of
from ui.cli import cli

SHAPE, TILE = (64, 64), 32
BUNDLED = "aomas-bootstrap-v3"


class Receiver(http.server.ThreadingHTTPServer):
    """A webhook receiver on loopback: keeps every JSON body it is sent."""

    def __init__(self):
        self.bodies: list[dict] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers["Content-Length"])
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/alerts"


@pytest.fixture
def receivers():
    from aiosmtpd.controller import Controller

    class Inbox:
        def __init__(self):
            self.messages: list[str] = []

        async def handle_DATA(self, server, session, envelope):
            self.messages.append(envelope.content.decode())
            return "250 OK"

    inbox, port = Inbox(), free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=port)
    smtp.start()
    webhook = Receiver()
    yield webhook, inbox, port
    webhook.shutdown()
    smtp.stop()


def reviewed_site(tmp_path, monkeypatch, *, false_share: float, **settings) -> WebApp:
    """Six cases of the production model, each with reviewed tiles: the model found every
    true cone with high confidence, plus ``false_share`` as many false ones the reviewers
    erased."""
    from appliance.access import accounts

    monkeypatch.setattr(accounts, "SCRYPT", {"n": 2**4, "r": 8, "p": 1})
    web = WebApp(tmp_path, **{"drift__min_reviewed_cases": 4, **settings})
    register_directory(web.db, web.store, BOOTSTRAP_DIR, actor="test", stage=PRODUCTION)
    lena = web.client("lena")
    rows, columns = np.mgrid[4:SHAPE[0] - 2:8, 4:SHAPE[1] - 2:8]
    true_px = np.column_stack([rows.ravel(), columns.ravel()]).astype(float)
    rng = np.random.default_rng(0)
    for number in range(6):
        false_px = true_px[rng.random(len(true_px)) < false_share] + [4.0, 4.0]
        false_px = false_px[(false_px < SHAPE[0] - 1).all(axis=1)]
        found = np.vstack([true_px, false_px])
        probability = (0.99 * cone_target(SHAPE, found)).astype(np.float32)
        run_id = web.seed_run(SHAPE, TILE, number=10 + number, cones_px=found,
                              probability=probability, model_id=BUNDLED)
        truth = cone_target(SHAPE, true_px) > 0
        for tile in web.db["tiles"].rows_where("run_id = ?", [run_id]):
            window = (slice(tile["row_px"], tile["row_px"] + tile["height_px"]),
                      slice(tile["column_px"], tile["column_px"] + tile["width_px"]))
            saved = lena.post("/api/v1/labels", json={
                "tile_id": tile["tile_id"], "base_version": 0,
                "mask_png": png_of(truth[window])})
            assert saved.status_code == 201, saved.get_data(True)
    return web


def test_a_drifting_model_raises_an_alert_that_webhook_and_email_receive(
        tmp_path, monkeypatch, receivers):
    webhook, inbox, smtp_port = receivers
    web = reviewed_site(tmp_path, monkeypatch, false_share=1.0,
                        alerts__webhook_urls=[webhook.url], alerts__email_to=["ml@clinic.test"],
                        alerts__smtp_host="127.0.0.1", alerts__smtp_port=smtp_port)
    mia = web.client("mia")
    answer = mia.post("/api/v1/drift/check")
    assert answer.status_code == 201, answer.get_data(True)
    report = answer.get_json()
    # Half the detections were false at a confidence near 1: ECE near 0.5, F1 near 2/3.
    assert report["status"] == drift.ALERT
    assert report["reviewed_cases"] == 6 and report["ece_low"] > 0.07
    assert report["ece_low"] <= report["ece"] <= report["ece_high"]
    assert 0.6 < report["f1"] < 0.75
    assert alerts.deliver_due(web.db, web.config.alerts) == {"sent": 2}
    (body,) = webhook.bodies
    assert body["version"] == "4" and body["status"] == "firing"
    (fired,) = body["alerts"]
    assert fired["labels"]["alertname"] == "ModelDrift"
    assert fired["labels"]["model_id"] == BUNDLED and "ECE" in fired["annotations"]["summary"]
    (mail,) = inbox.messages
    assert "Subject: [AOMAS critical] model aomas-bootstrap-v3: detection ECE" in mail
    # No patient data in either: the seeded studies' UIDs appear nowhere.
    assert "1.2.826.0.1.3680043.10.1455" not in json.dumps(body) + mail
    page = mia.get("/drift").get_data(True)
    assert 'id="ece-plot"' in page and "alert" in page and 'id="alert-banner"' in page
    resolved = mia.post(f"/api/v1/alerts/{report['alert_id']}/resolve").get_json()
    assert resolved["resolved_by"] == "mia"
    assert 'id="alert-banner"' not in mia.get("/drift").get_data(True)


def test_a_model_whose_confidence_matches_the_reviews_raises_none(tmp_path, monkeypatch,
                                                                     receivers):
    webhook, _, _ = receivers
    web = reviewed_site(tmp_path, monkeypatch, false_share=0.0,
                        alerts__webhook_urls=[webhook.url])
    report = drift.check(web.db, web.store, web.config, actor="test")
    assert report["status"] == drift.OK and report["ece"] < 0.01 and report["f1"] == 1.0
    assert not web.db["alerts"].count and alerts.deliver_due(web.db, web.config.alerts) == {}
    assert not webhook.bodies


def test_too_few_reviewed_cases_widen_the_window_then_say_so(tmp_path, monkeypatch):
    web = reviewed_site(tmp_path, monkeypatch, false_share=1.0,
                        drift__min_reviewed_cases=7)  # six were reviewed
    report = drift.check(web.db, web.store, web.config, actor="test")
    assert report["status"] == drift.INSUFFICIENT and report["ece"] is None
    assert report["window_end"] - report["window_start"] == 4 * drift.WEEK_SECONDS
    assert not web.db["alerts"].count
    # The command line runs the same check and says the same.
    runner = CliRunner()
    said = runner.invoke(cli, ["--config", str(tmp_path / "aomas.toml"), "drift", "check"])
    assert said.exit_code == 0 and said.output.startswith("insufficient labels"), said.output


def test_an_alert_not_taken_is_retried_until_the_receiver_is_back(tmp_path, monkeypatch):
    web = WebApp(tmp_path, alerts__webhook_urls=["http://127.0.0.1:9/down"],
                 alerts__retry_base_seconds=0.01)
    with web.db.conn:
        alerts.raise_alert(web.db, web.config.alerts, name="Test", severity=alerts.WARNING,
                           summary="a test alert")
    assert alerts.deliver_due(web.db, web.config.alerts) == {"pending": 1}
    (row,) = web.db["alert_deliveries"].rows
    assert row["attempts"] == 1 and row["last_error"]
    receiver = Receiver()
    try:
        web.db.execute("UPDATE alert_deliveries SET target = ?", [receiver.url])
        time.sleep(0.05)
        assert alerts.deliver_due(web.db, web.config.alerts) == {"sent": 1}
        assert receiver.bodies[0]["alerts"][0]["annotations"]["summary"] == "a test alert"
    finally:
        receiver.shutdown()
