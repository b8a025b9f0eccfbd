"""DICOM files uploaded through the API, stored exactly as the SCP stores a C-STORE.

An upload is a Part-10 file (with its file meta information). The web part writes it straight
into the spool as it arrives (``ui.request``); its header is read the way the SCP reads one and
it is handed to the same ``Ingest.store_instance``, which renames it into the object store. So
each byte is written once, and "stored" means what it means on the wire: durable in the object
store, its row committed, a run queued once the series is complete. Files are taken one at a
time: a bad file is refused with the reason and the files before it stay stored.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydicom import dcmread

from appliance.exceptions import InvalidInput, TransientError
from appliance.ingest import Ingest
from dicom import status
from dicom.scp import UnreadableHeader, read_header
from dicom.sop_classes import ACCEPTED_SOP_CLASSES, ACCEPTED_TRANSFER_SYNTAXES


def store_upload(ingest: Ingest, path: Path, *, uploader: str, peer_address: str,
                 label: str) -> dict[str, str]:
    """Store one uploaded file, written whole to ``path`` in the spool; ``label`` names it in
    messages (the client's file number, never its file name: that is the sender's text and may
    carry a patient's name)."""
    try:
        received = _header(path, uploader, peer_address, label)
        answer = ingest.store_instance(received)
        if answer != status.SUCCESS:
            raise TransientError(f"{label} was not stored (status 0x{answer:04X}: the disk is "
                                 "full or the database busy); send it again later")
    finally:
        path.unlink(missing_ok=True)  # adopted files were renamed away; this is the rest
    return {"file": label, "sop_instance_uid": received.sop_instance_uid,
            "series_instance_uid": received.series_instance_uid, "status": "stored"}


def _header(path: Path, uploader: str, peer_address: str, label: str):
    try:
        meta = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"]).file_meta
        transfer_syntax_uid = str(meta.TransferSyntaxUID)
    except Exception as error:   # pydicom raises many types for damaged data
        raise InvalidInput(f"{label} is not a DICOM Part 10 file with file meta information "
                           f"({type(error).__name__})") from None
    if transfer_syntax_uid not in ACCEPTED_TRANSFER_SYNTAXES:
        raise InvalidInput(f"{label} uses transfer syntax {transfer_syntax_uid}; send one of "
                           f"{', '.join(ACCEPTED_TRANSFER_SYNTAXES)}")
    try:
        received = read_header(path, transfer_syntax_uid, f"API:{uploader}"[:64], peer_address,
                               time.time())
    except UnreadableHeader as error:
        raise InvalidInput(f"{label} has no readable identifying attributes ({error})") from None
    if received.sop_class_uid not in ACCEPTED_SOP_CLASSES:
        raise InvalidInput(f"{label} is SOP class {received.sop_class_uid}; the appliance takes "
                           f"{', '.join(ACCEPTED_SOP_CLASSES.values())}")
    return received
