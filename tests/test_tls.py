"""DICOM TLS on both sides, against DCMTK: `storescu +tls` as the scanner, `storescp +tls` as
the PACS, with certificates made here by openssl (a site CA, and a rogue one)."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from appliance.demo.pacs import free_port
from dicom.send import probe
from dicom.tls import client_context
from tests.conftest import Box, need, storescu


def _tls_box(root: Path, pki: Path, **overrides) -> Box:
    box = Box(root, dicom__tls_certificate=str(pki / "box.crt"),
              dicom__tls_private_key=str(pki / "box.key"),
              dicom__tls_ca_certificates=str(pki / "site-ca.crt"), **overrides)
    box.tls_args = (client_context(ca_certificates=str(pki / "site-ca.crt"),
                                   certificate=str(pki / "scanner.crt"),
                                   private_key=str(pki / "scanner.key")), "localhost")
    return box


def _scanner(pki: Path, name: str = "scanner") -> list[str]:
    return ["+tls", str(pki / f"{name}.key"), str(pki / f"{name}.crt"),
            "+cf", str(pki / "site-ca.crt")]


def _stored(box: Box) -> int:
    if not (box.data_dir / "aomas.db").exists():
        return 0
    return box.query("SELECT count(*) FROM instances")[0][0]


def test_the_scp_takes_dicom_tls_from_storescu_and_refuses_everything_else(tmp_path, pki,
                                                                          studies):
    box = _tls_box(tmp_path, pki)
    box.start("scp")
    try:
        study = studies["multiframe"]["dir"]
        # A connection that opens and says nothing holds no one else up: the handshake
        # happens in its own thread, against the association request's deadline.
        silent = socket.create_connection(("127.0.0.1", box.dicom_port))
        started = time.monotonic()
        sent = storescu(box.dicom_port, study, extra=_scanner(pki))
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert time.monotonic() - started < 10
        assert "Received Store Response (Success)" in sent.stdout + sent.stderr
        silent.close()
        received = _stored(box)
        assert received >= 1

        refusals = {
            "plain TCP": [],
            "a certificate from another CA": _scanner(pki, "intruder"),
            "no client certificate": ["+tla", "+cf", str(pki / "site-ca.crt")],
            "the retired AES profile (TLS 1.0 ciphers)": [*_scanner(pki), "+pa"],
            "the null profile (no encryption)": [*_scanner(pki), "+pn"],
        }
        for why, extra in refusals.items():
            answer = storescu(box.dicom_port, study, extra=extra)
            assert answer.returncode != 0, f"{why} was accepted"
            assert "Received Store Response" not in answer.stdout + answer.stderr, why
        assert _stored(box) == received

        # TLS 1.1 and below are refused at the handshake whatever the ciphers.
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
        with pytest.warns(DeprecationWarning):     # as it should be
            old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("ALL:@SECLEVEL=0")
        with socket.create_connection(("127.0.0.1", box.dicom_port)) as raw, \
                pytest.raises((ssl.SSLError, OSError)):
            old.wrap_socket(raw).do_handshake()

        # The box's own health check speaks TLS with its own certificate.
        doctor = box.aomas("doctor", "--json")
        assert '"tls": true' in doctor.stdout
        assert probe("127.0.0.1", box.dicom_port, tls_args=box.tls_args) == "accepted"
    finally:
        box.stop_all()
    assert "TLS handshake with 127.0.0.1 failed" in box.log()


def test_outputs_reach_a_pacs_over_dicom_tls(tmp_path, pki, studies):
    pacs_port, received = free_port(), tmp_path / "pacs"
    received.mkdir()
    # storescp requires the client's certificate by default (-rc).
    pacs = subprocess.Popen(
        [need("storescp"), "+tls", str(pki / "pacs.key"), str(pki / "pacs.crt"),
         "+cf", str(pki / "site-ca.crt"), "-aet", "PACS", "-od", str(received), "+uf",
         str(pacs_port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    box = _tls_box(tmp_path / "box", pki, destinations=[{
        "name": "pacs", "kind": "dimse", "ae_title": "PACS", "host": "127.0.0.1",
        "port": pacs_port, "tls": True, "tls_server_name": "localhost"}])
    box.start("serve")
    try:
        study = studies["multiframe"]
        assert storescu(box.dicom_port, study["dir"], extra=_scanner(pki)).returncode == 0
        run = box.wait_for_run(study["series_instance_uid"], timeout=180)
        assert run["state"] == "SUCCEEDED", run["reason"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = {row["state"] for row in box.query(
                "SELECT state FROM outbox WHERE run_id = ?", (run["run_id"],))}
            if states == {"sent"}:
                break
            time.sleep(0.2)
        assert states == {"sent"}, box.query("SELECT last_status, detail FROM outbox")
        outputs = box.query("SELECT count(*) FROM outbox WHERE run_id = ?",
                            (run["run_id"],))[0][0]
        assert len(list(received.iterdir())) == outputs
    finally:
        box.stop_all()
        pacs.kill()
        pacs.wait(timeout=10)


def test_a_tls_destination_without_a_ca_bundle_is_a_configuration_error(tmp_path):
    box = Box(tmp_path, destinations=[{"name": "pacs", "kind": "dimse", "tls": True}])
    answer = box.aomas("doctor", check=False)
    assert answer.returncode == 1
    assert "has tls = true but no CA bundle" in answer.stderr
