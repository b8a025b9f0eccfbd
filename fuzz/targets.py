"""Fuzz targets: what a hostile peer's bytes reach first. Each takes the fuzzer's bytes and
either returns or raises ``Finding``; the refusals the appliance answers with (a DICOM status,
a 422, an A-ABORT) are not findings, anything else the code lets escape is.

- ``header``: the SCP's header reader (``dicom.scp.read_header``) on a spooled dataset, and
  the UID checks it applies;
- ``upload``: the API upload's validation (``appliance.uploads._header``), file meta included;
- ``pdu``: the guarded PDU reader (``dicom.guard.read_pdu``) on a socket, and pynetdicom's
  decoder on what it lets through, which must never be longer than the limits allow.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

from pydicom.uid import ExplicitVRLittleEndian

from appliance.exceptions import InvalidInput
from dicom.guard import PDU_HEADER_BYTES, PduRefused, PduStalled, PeerLimits, read_pdu
from dicom.scp import UnreadableHeader, read_header

LIMITS = PeerLimits(max_associations=1, max_connections_per_peer=1,
                    association_request_seconds=1.0, pdu_seconds=1.0, max_pdu_bytes=16_384)
SPOOL = Path(tempfile.mkdtemp(prefix="aomas-fuzz-"))
PART10_PREAMBLE = b"\0" * 128 + b"DICM"


class Finding(Exception):
    """The target let something escape that a peer must never cause."""


def _spooled(data: bytes) -> Path:
    path = SPOOL / f"input-{os.getpid()}"
    path.write_bytes(data)
    return path


def header(data: bytes) -> None:
    try:
        received = read_header(_spooled(data), ExplicitVRLittleEndian, "FUZZ", "fuzz", 0.0)
    except UnreadableHeader:
        return
    except Exception as error:
        raise Finding(f"read_header raised {type(error).__name__}: {error}") from error
    for uid in (received.sop_class_uid, received.sop_instance_uid,
                received.study_instance_uid, received.series_instance_uid):
        if not uid or len(uid) > 64 or not set(uid) <= set("0123456789."):
            raise Finding("read_header passed an invalid UID on")


def upload(data: bytes) -> None:
    from appliance.uploads import _header

    try:
        _header(_spooled(PART10_PREAMBLE + data), "fuzz", "fuzz", "file 1")
    except InvalidInput:
        return
    except Exception as error:
        raise Finding(f"upload validation raised {type(error).__name__}: {error}") from error


def pdu(data: bytes) -> None:
    from pynetdicom.pdu import PDU_TYPES

    decoders = {code: cls for cls, code in PDU_TYPES.items()}
    ours, theirs = socket.socketpair()
    try:
        theirs.sendall(data[:65_536])
        theirs.shutdown(socket.SHUT_WR)
        for established in (False, True):
            try:
                whole = read_pdu(ours, LIMITS, established=established)
            except (PduRefused, PduStalled, OSError):
                return
            if not whole:
                return
            if len(whole) > PDU_HEADER_BYTES + LIMITS.longest_pdu(whole[0]):
                raise Finding("read_pdu returned more than the limit")
            try:
                decoders[whole[0]]().decode(whole)
            except Exception:
                pass   # GuardedDUL refuses (A-ABORT) what does not decode
    finally:
        ours.close()
        theirs.close()


TARGETS = {"header": header, "upload": upload, "pdu": pdu}
