"""The outbox against real peers: Orthanc over REST and C-STORE, in the destination's transfer
syntax, and a pynetdicom SCP that is busy (0xA700) or refuses for good."""

from __future__ import annotations

import threading

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, RLELossless
from pynetdicom import AE, evt

from appliance import outbox
from appliance.config import destination_profile
from appliance.database import connect
from appliance.demo.pacs import free_port
from tests.conftest import Orthanc

PIXEL_KINDS = {"derived_opt", "enface_isos", "enface_cost"}  # 8/16-bit pixels: compressible
NOW = 1_900_000_000.0


@pytest.fixture
def db(tmp_path):
    database = connect(tmp_path / "aomas.db")
    database.execute("PRAGMA foreign_keys=OFF")  # the rows name a run this test never stored
    return database


def deliver(db, run_outputs, destination: dict, now: float) -> dict[str, int]:
    return outbox.deliver_due(db, run_outputs["store"], [destination], calling_ae="AOMAS",
                              retry_base_seconds=5.0, dead_after_seconds=86400.0, now=now)


def enqueue(db, run_outputs, destination: dict) -> int:
    return outbox.enqueue(db, run_outputs["run_id"], run_outputs["run_result"].outputs,
                          [destination], now=NOW)


def by_kind(db) -> dict[str, dict]:
    return {row["kind"]: row for row in outbox.rows(db)}


@pytest.mark.parametrize("kind, syntax_name, syntax", [("orthanc", "jpeg-ls", JPEGLSLossless),
                                                       ("dimse", "rle", RLELossless)])
def test_orthanc_gets_every_object_once_in_the_destinations_transfer_syntax(
        db, run_outputs, tmp_path, kind, syntax_name, syntax):
    pacs = Orthanc(tmp_path / "pacs", users={"aomas": "s3cret"})
    pacs.start()
    try:
        (tmp_path / "password").write_text("s3cret\n")
        destination = destination_profile({
            "name": "pacs", "kind": kind, "url": pacs.url, "username": "aomas",
            "password_file": str(tmp_path / "password"), "host": "127.0.0.1",
            "port": pacs.dicom_port, "ae_title": pacs.ae_title, "transfer_syntax": syntax_name})
        assert enqueue(db, run_outputs, destination) == 6
        assert deliver(db, run_outputs, destination, NOW) == {"sent": 6}
        shown = "HTTP 200" if kind == "orthanc" else "0x0000"
        assert {row["last_status"] for row in outbox.rows(db)} == {shown}

        client = pacs.client()
        stored = {pacs.get(f"/instances/{i}/simplified-tags")["SOPInstanceUID"]: i
                  for i in pacs.get("/instances")}
        rows = by_kind(db)
        assert set(stored) == {row["sop_instance_uid"] for row in rows.values()}
        for output_kind, row in rows.items():
            orthanc_id = stored[row["sop_instance_uid"]]
            held = client.get_binary(f"/instances/{orthanc_id}/metadata/TransferSyntax").decode()
            wanted = syntax if output_kind in PIXEL_KINDS else ExplicitVRLittleEndian
            assert held == wanted, output_kind  # BINARY SEG (1 bit) and SR go as stored
        # Lossless: the PACS's copy decodes to the very pixels we stored.
        opt_id = stored[rows["derived_opt"]["sop_instance_uid"]]
        held = pydicom.dcmread(pydicom.filebase.DicomBytesIO(
            client.get_binary(f"/instances/{opt_id}/file")))
        ours = pydicom.dcmread(run_outputs["objects"]["derived_opt"])
        np.testing.assert_array_equal(held.pixel_array, ours.pixel_array)

        # Sending everything again creates nothing new in the PACS.
        assert outbox.retry(db, actor="test", now=NOW) == 0  # nothing dead or waiting
        db.execute("UPDATE outbox SET state = 'dead'")
        assert outbox.retry(db, actor="test", now=NOW + 1) == 6
        assert deliver(db, run_outputs, destination, NOW + 1) == {"sent": 6}
        assert len(pacs.get("/instances")) == 6
    finally:
        pacs.stop()


def test_wrong_orthanc_credentials_end_in_the_dead_letter_with_the_reason(db, run_outputs,
                                                                          tmp_path):
    pacs = Orthanc(tmp_path / "pacs", users={"aomas": "s3cret"})
    pacs.start()
    try:
        (tmp_path / "password").write_text("wrong")
        destination = destination_profile({"name": "pacs", "kind": "orthanc", "url": pacs.url,
                                           "username": "aomas",
                                           "password_file": str(tmp_path / "password")})
        enqueue(db, run_outputs, destination)
        assert deliver(db, run_outputs, destination, NOW) == {"dead": 6}
        row = outbox.rows(db)[0]
        assert row["last_status"] == "HTTP 401" and "not authorized" in row["detail"]
        assert pacs.get("/instances") == []
    finally:
        pacs.stop()


def test_orthanc_away_over_rest_is_retried_until_it_is_back(db, run_outputs, tmp_path):
    pacs = Orthanc(tmp_path / "pacs", http_port=free_port())
    destination = destination_profile({"name": "pacs", "kind": "orthanc", "url": pacs.url})
    enqueue(db, run_outputs, destination)
    assert deliver(db, run_outputs, destination, NOW) == {"pending": 6}
    rows = outbox.rows(db)
    assert all(r["attempts"] == 1 and r["last_status"] is None for r in rows)
    assert all("connect" in r["detail"].lower() and r["next_attempt_at"] > NOW for r in rows)
    assert deliver(db, run_outputs, destination, NOW + 1) == {}  # not due yet: backoff
    pacs.start()
    try:
        assert deliver(db, run_outputs, destination, NOW + 60) == {"sent": 6}
        assert len(pacs.get("/instances")) == 6
    finally:
        pacs.stop()


class StorageSCP:
    """A small pynetdicom SCP answering C-STORE with the statuses it is given, in turn (the
    last one repeats); it accepts Explicit VR Little Endian only."""

    def __init__(self, sop_classes: set[str], statuses: list[int]):
        self.statuses = statuses
        self.received: list[tuple[str, str, int]] = []  # SOP class, transfer syntax, status
        self.lock = threading.Lock()
        self.port = free_port()
        ae = AE(ae_title="BUSYPACS")
        for sop_class in sorted(sop_classes):
            ae.add_supported_context(sop_class, ExplicitVRLittleEndian)
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self.on_store)])

    def on_store(self, event) -> int:
        with self.lock:
            status = self.statuses[min(len(self.received), len(self.statuses) - 1)]
            self.received.append((event.context.abstract_syntax,
                                  event.context.transfer_syntax, status))
        return status

    def destination(self, **table) -> dict:
        return destination_profile({"name": "busy", "kind": "dimse", "host": "127.0.0.1",
                                    "port": self.port, "ae_title": "BUSYPACS", **table})


def test_a_busy_pacs_is_retried_and_its_status_shown(db, run_outputs):
    outputs = run_outputs["result"]["outputs"]
    scp = StorageSCP({o["sop_class_uid"] for o in outputs}, [0xA700] * 6 + [0x0000])
    try:
        # The destination asks for JPEG-LS; this PACS takes uncompressed only, so it gets that.
        destination = scp.destination(transfer_syntax="jpeg-ls")
        enqueue(db, run_outputs, destination)
        assert deliver(db, run_outputs, destination, NOW) == {"pending": 6}
        rows = outbox.rows(db)
        assert {r["last_status"] for r in rows} == {"0xA700"}
        assert all("0xA700" in r["detail"] and r["next_attempt_at"] > NOW for r in rows)
        assert deliver(db, run_outputs, destination, NOW + 3600) == {"sent": 6}
        assert {syntax for _, syntax, _ in scp.received} == {ExplicitVRLittleEndian}
        assert len(scp.received) == 12
    finally:
        scp.server.shutdown()


def test_a_permanent_refusal_ends_in_the_dead_letter_with_the_reason(db, run_outputs):
    outputs = run_outputs["result"]["outputs"]
    report = next(o for o in outputs if o["kind"] == "report")
    # This PACS knows no SR at all and refuses everything else with 0xA900 (does not match).
    scp = StorageSCP({o["sop_class_uid"] for o in outputs} - {report["sop_class_uid"]},
                     [0xA900])
    try:
        destination = scp.destination()
        enqueue(db, run_outputs, destination)
        assert deliver(db, run_outputs, destination, NOW) == {"dead": 6}
        rows = by_kind(db)
        assert rows["report"]["last_status"] is None
        assert "presentation context" in rows["report"]["detail"].lower()
        assert rows["derived_opt"]["last_status"] == "0xA900"
        assert "0xA900" in rows["derived_opt"]["detail"]
        # Nothing dead is sent again by itself; `retry` brings it back, audited.
        assert deliver(db, run_outputs, destination, NOW + 86400) == {}
        assert outbox.retry(db, actor="admin", now=NOW + 2) == 6
        assert db.execute("SELECT actor FROM audit_events WHERE action = 'outbox.retry'"
                          ).fetchall() == [("admin",)]
    finally:
        scp.server.shutdown()
