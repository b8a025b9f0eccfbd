"""What a hostile peer can cost the SCP (dicom.guard), against the real SCP (`aomas scp`) with
raw sockets and pynetdicom as the attacker and DCMTK as the scanner: slow-loris connections,
PDUs announcing gigabytes, transfers that stall."""

from __future__ import annotations

import select
import socket
import struct
import threading
import time

import pytest
from pynetdicom import AE

from dicom.send import probe
from tests.conftest import storescu

ATTACKER = "127.0.0.2"   # the scanner is 127.0.0.1: another address on the same loopback
VERIFICATION = "1.2.840.10008.1.1"


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def connect_from(address: str, port: int) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=10,
                                          source_address=(address, 0))
    return connection


def closed_within(connection: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the SCP closed ``connection`` within ``seconds``, and what it sent first."""
    connection.settimeout(seconds)
    received = b""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            chunk = connection.recv(4096)
            if not chunk:
                return True, received
            received += chunk
    except TimeoutError:
        return False, received
    except (ConnectionResetError, BrokenPipeError):
        return True, received
    return False, received


def closed_among(connections: list[socket.socket], seconds: float) -> list[bool]:
    """For each connection, whether the SCP closed it within ``seconds`` (all watched at
    once, so a slow machine does not shift the judgement from the first to the last)."""
    closed = [False] * len(connections)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not all(closed):
        waiting = [c for c, done in zip(connections, closed, strict=True) if not done]
        ready, _, _ = select.select(waiting, [], [], max(deadline - time.monotonic(), 0))
        for connection in ready:
            try:
                ended = connection.recv(4096) == b""
            except (ConnectionResetError, BrokenPipeError):
                ended = True
            if ended:
                closed[connections.index(connection)] = True
    return closed


def echo_seconds(port: int) -> float:
    started = time.monotonic()
    assert probe("127.0.0.1", port) == "accepted"
    return time.monotonic() - started


@pytest.fixture
def scp_box(make_box):
    box = make_box(dicom__max_associations=10, dicom__max_associations_per_peer=4,
                   dicom__association_request_seconds=3.0, dicom__pdu_seconds=2.0)
    box.start("scp")
    return box


def test_slow_loris_connections_do_not_block_a_scanner(scp_box, studies):
    port = scp_box.dicom_port
    # Ten connections that each send one byte of a PDU header, and a port probe.
    attackers = []
    for _ in range(10):
        try:
            connection = connect_from(ATTACKER, port)
            connection.sendall(b"\x01")
            attackers.append(connection)
        except OSError:
            pass
    socket.create_connection(("127.0.0.1", port), timeout=5,
                             source_address=(ATTACKER, 0)).close()
    # Beyond its share the attacker's connections are closed at once ...
    closed_at_once = closed_among(attackers, 1.0)
    assert closed_at_once.count(False) == 4, closed_at_once
    # ... and the scanner sends a study and is answered while the rest are still held.
    started = time.monotonic()
    sent = storescu(port, studies["multiframe"]["dir"])
    assert sent.returncode == 0, sent.stderr
    assert time.monotonic() - started < 5
    assert echo_seconds(port) < 2
    # The connections that never complete an association request end at its deadline (3 s).
    held = [c for c, closed in zip(attackers, closed_at_once, strict=True) if not closed]
    assert all(closed_within(c, 3.0 + 2.0)[0] for c in held)
    for connection in attackers:
        connection.close()
    log = scp_box.log()
    assert "closed a new connection from 127.0.0.2" in log
    assert log.count("closed a new connection from 127.0.0.2") <= 2   # rate-limited


def test_a_pdu_announcing_gigabytes_is_refused_unread(scp_box):
    port, pid = scp_box.dicom_port, scp_box.processes["scp"].pid
    before = rss_mb(pid)
    peak = [before]

    def attack():
        # An A-ASSOCIATE-RQ header announcing ~4 GiB, then as many bytes as the SCP takes.
        connection = connect_from(ATTACKER, port)
        try:
            connection.sendall(struct.pack(">BBL", 0x01, 0, 0xFFFFFFF0))
            block = b"\0" * (1 << 20)
            for _ in range(256):
                connection.sendall(block)
                peak[0] = max(peak[0], rss_mb(pid))
        except OSError:
            pass   # refused: the SCP aborted and closed the connection
        finally:
            connection.close()

    threads = [threading.Thread(target=attack) for _ in range(3)]
    for thread in threads:
        thread.start()
    assert echo_seconds(port) < 2      # answering while attacked
    for thread in threads:
        thread.join(timeout=60)
    peak[0] = max(peak[0], rss_mb(pid))
    assert peak[0] - before < 40, (before, peak[0])

    # After association: a P-DATA-TF longer than the maximum PDU we advertised (4 MiB).
    ae = AE(ae_title="ATTACKER")
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", port, ae_title="AOMAS")
    assert assoc.is_established
    raw = assoc.dul.socket.socket
    try:
        raw.sendall(struct.pack(">BBL", 0x04, 0, 64 << 20) + b"\0" * (1 << 20))
    except OSError:
        pass
    deadline = time.monotonic() + 5
    while not assoc.is_aborted and time.monotonic() < deadline:
        time.sleep(0.05)
    assert assoc.is_aborted
    assert rss_mb(pid) - before < 40
    assert echo_seconds(port) < 2
    assert "announcing 4294967280 bytes (at most 262144)" in scp_box.log()
    assert "announcing 67108864 bytes (at most 4194304)" in scp_box.log()


def test_a_stalled_transfer_is_aborted_at_its_deadline(scp_box):
    port = scp_box.dicom_port
    ae = AE(ae_title="DRIPPER")
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", port, ae_title="AOMAS")
    assert assoc.is_established
    raw = assoc.dul.socket.socket
    started = time.monotonic()
    raw.sendall(struct.pack(">BBL", 0x04, 0, 1000))
    while not assoc.is_aborted and time.monotonic() - started < 10:
        try:
            raw.sendall(b"\0")      # one byte every 0.25 s: 1000 bytes would take 250 s
        except OSError:
            break
        time.sleep(0.25)
    deadline = time.monotonic() + 3
    while not assoc.is_aborted and time.monotonic() < deadline:
        time.sleep(0.05)
    assert assoc.is_aborted
    assert time.monotonic() - started < 2.0 + 2.0
    assert "aborted a stalled PDU" in scp_box.log()
    assert echo_seconds(port) < 2


def test_a_sender_using_our_whole_pdu_size_is_served(scp_box, studies):
    # pynetdicom as the SCU sends P-DATA up to the maximum we advertise (4 MiB): the guard
    # reads such PDUs whole, larger than any association PDU it allows.
    from pydicom import dcmread

    path = sorted(studies["multiframe"]["dir"].rglob("*.dcm"))[0]
    dataset = dcmread(path)
    assert path.stat().st_size > 262144
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", scp_box.dicom_port, ae_title="AOMAS")
    assert assoc.is_established and assoc.acceptor.maximum_length == 4194304
    try:
        assert assoc.send_c_store(dataset).Status == 0
    finally:
        assoc.release()
