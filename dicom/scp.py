"""The storage SCP: C-ECHO and C-STORE, received in chunks straight to a spool file.

The handler never decodes pixel data. It reads a handful of header attributes from the spooled
file and hands a ``ReceivedInstance`` to the ``on_instance`` callback, whose return value is the
C-STORE status. The callback decides what "stored" means (fsync, rename, commit); this module
only speaks DICOM.
"""

from __future__ import annotations

import logging
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE, _config, evt

from dicom import status
from dicom.guard import GuardedAssociationServer, PeerLimits
from dicom.redaction import shorten, withhold_values
from dicom.sop_classes import (
    ACCEPTED_SOP_CLASSES,
    ACCEPTED_TRANSFER_SYNTAXES,
    VERIFICATION_SOP_CLASS,
)
from dicom.tcp import set_tcp_nodelay
from dicom.validity import plain_text, uid_problem

log = logging.getLogger(__name__)

# Write each incoming dataset to a temporary file as its PDUs arrive, so a 1 GB volume never
# sits in memory. pynetdicom offers this only as a process-wide switch.
_config.STORE_RECV_CHUNKED_DATASET = True
# Patient names and IDs must never reach the logs; pynetdicom would otherwise log identifiers.
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False

IDENTIFYING_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
HEADER_TAGS = [
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "InstanceNumber",
    "NumberOfFrames", "Rows", "Columns", "ImagesInAcquisition",
]
# What names a study to the people looking for it (never the patient's name or ID). Optional:
# a damaged one is dropped, and the instance is taken all the same.
DESCRIPTIVE_TAGS = {"AccessionNumber": "SH", "Modality": "CS", "AcquisitionDateTime": "DT",
                    "AcquisitionDate": "DA", "StudyDate": "DA"}


@dataclass(frozen=True)
class ReceivedInstance:
    """A dataset fully received into ``path`` (a spool file that the callback may move)."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    instance_number: int | None
    number_of_frames: int
    rows: int | None
    columns: int | None
    images_in_acquisition: int | None
    transfer_syntax_uid: str
    calling_ae: str
    peer_address: str
    received_at: float          # when the last byte had arrived (the handler was called)
    accession_number: str | None = None
    modality: str | None = None
    acquisition_date: str | None = None     # YYYYMMDD: the acquisition's, else the study's


class UnreadableHeader(ValueError):
    """The received bytes are not a DICOM dataset with the identifying UIDs."""


def read_header(path: Path, transfer_syntax_uid: str, calling_ae: str,
                peer_address: str, received_at: float) -> ReceivedInstance:
    """Read the identifying attributes of a spooled dataset, without its pixel data."""
    try:
        ds = dcmread(path, stop_before_pixels=True,
                     specific_tags=[*HEADER_TAGS, *DESCRIPTIVE_TAGS])
        # Values decode lazily: read every one here, where a damaged one is caught (the fuzzer
        # found a Rows of odd length escaping from a later read).
        values = {keyword: ds.get(keyword) for keyword in HEADER_TAGS}
    except Exception as error:   # pydicom raises many types for damaged data
        # pydicom's messages quote what it read, which may run on into the patient's name.
        raise UnreadableHeader(f"{type(error).__name__}: {withhold_values(str(error))}") from None
    for keyword in IDENTIFYING_UIDS:
        problem = uid_problem(values[keyword])
        if problem:
            # Copied into every output (references, study, series): a PACS would refuse them.
            raise UnreadableHeader(f"{keyword} {problem}")

    def optional_int(keyword: str) -> int | None:
        value = values[keyword]
        try:
            return int(value) if value not in (None, "") else None
        except (TypeError, ValueError, OverflowError):
            return None

    descriptive = {keyword: plain_text(_read_optional(ds, keyword), vr)
                   for keyword, vr in DESCRIPTIVE_TAGS.items()}
    acquired = (descriptive["AcquisitionDateTime"] or descriptive["AcquisitionDate"]
                or descriptive["StudyDate"] or "")[:8]
    return ReceivedInstance(
        path=path,
        sop_class_uid=str(values["SOPClassUID"]),
        sop_instance_uid=str(values["SOPInstanceUID"]),
        study_instance_uid=str(values["StudyInstanceUID"]),
        series_instance_uid=str(values["SeriesInstanceUID"]),
        instance_number=optional_int("InstanceNumber"),
        number_of_frames=optional_int("NumberOfFrames") or 1,
        rows=optional_int("Rows"),
        columns=optional_int("Columns"),
        images_in_acquisition=optional_int("ImagesInAcquisition"),
        transfer_syntax_uid=transfer_syntax_uid,
        calling_ae=calling_ae,
        peer_address=peer_address,
        received_at=received_at,
        accession_number=descriptive["AccessionNumber"],
        modality=descriptive["Modality"],
        acquisition_date=acquired if len(acquired) == 8 and acquired.isdigit() else None,
    )


def _read_optional(ds, keyword: str) -> object:
    try:
        return ds.get(keyword)
    except Exception:   # a damaged optional value: as if it were absent
        return None


class StorageSCP:
    """A pynetdicom AE that accepts the appliance's storage classes and C-ECHO."""

    def __init__(self, *, ae_title: str, bind: str, port: int, allowed_calling_aes: list[str],
                 limits: PeerLimits, idle_seconds: float, spool_dir: Path,
                 on_instance: Callable[[ReceivedInstance], int],
                 ssl_context: ssl.SSLContext | None = None):
        self.bind, self.port = bind, port
        self.ssl_context = ssl_context
        self.on_instance = on_instance
        self.spool_dir = spool_dir
        self.limits = limits
        self.ae = AE(ae_title=ae_title)
        self.ae.maximum_associations = limits.max_associations
        self.ae.maximum_pdu_size = limits.max_pdu_bytes
        # The ACSE timeout also ends a connection that never completes its association request.
        self.ae.acse_timeout = limits.association_request_seconds
        self.ae.network_timeout = idle_seconds
        self.ae.require_called_aet = False
        if allowed_calling_aes:
            self.ae.require_calling_aet = list(allowed_calling_aes)
        else:
            log.warning("dicom.allowed_calling_aes is empty: accepting any calling AE title")
        self.ae.add_supported_context(VERIFICATION_SOP_CLASS)
        for sop_class_uid in ACCEPTED_SOP_CLASSES:
            self.ae.add_supported_context(sop_class_uid, ACCEPTED_TRANSFER_SYNTAXES)
        self.server: GuardedAssociationServer | None = None

    def start(self) -> None:
        """Start listening in background threads; returns at once."""
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        # pynetdicom's chunked files go to the temp dir; put it on the spool so that moving a
        # received file into the object store is a rename on the same filesystem.
        tempfile.tempdir = str(self.spool_dir)
        handlers = [
            (evt.EVT_C_ECHO, lambda event: status.SUCCESS),
            (evt.EVT_C_STORE, self._handle_store),
            (evt.EVT_CONN_OPEN, set_tcp_nodelay),
            (evt.EVT_REJECTED, _log_rejection),
        ]
        # ae.start_server, with the guarded server class (dicom.guard) in place of its own.
        self.server = self.ae.make_server((self.bind, self.port), evt_handlers=handlers,
                                          server_class=GuardedAssociationServer,
                                          ssl_context=self.ssl_context, limits=self.limits)
        self.ae._servers.append(self.server)   # as start_server does: AE.shutdown stops it
        # A short poll: stopping waits for the loop's next look (socketserver's 0.5 s is felt
        # by every restart); a select() each 50 ms costs nothing.
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         name="dicom-scp", daemon=True).start()
        self.port = self.server.server_address[1]
        log.info("DICOM SCP %s listening on %s:%d%s", self.ae.ae_title, self.bind, self.port,
                 " (DICOM TLS)" if self.ssl_context else "")

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def _handle_store(self, event: evt.Event) -> int:
        try:
            return self._store(event)
        except Exception as error:
            # pynetdicom would answer 0xC211 and log the traceback, values included.
            log.error("C-STORE failed unexpectedly (%s: %s); answered 0x%04X", type(error).__name__,
                      shorten(withhold_values(str(error)), 300), status.PROCESSING_FAILURE)
            return status.PROCESSING_FAILURE

    def _store(self, event: evt.Event) -> int:
        received_at = time.time()
        requestor = event.assoc.requestor
        calling_ae = str(requestor.ae_title).strip()
        peer = f"{requestor.address}:{requestor.port}"
        sop_class_uid = str(event.request.AffectedSOPClassUID)
        if sop_class_uid not in ACCEPTED_SOP_CLASSES:
            log.warning("refused SOP class %s from %s (%s)", shorten(sop_class_uid, 80),
                        calling_ae, peer)
            return status.SOP_CLASS_NOT_SUPPORTED
        try:
            received = read_header(event.dataset_path, event.context.transfer_syntax,
                                   calling_ae, peer, received_at)
        except UnreadableHeader as error:
            log.warning("refused an unreadable dataset from %s (%s): %s", calling_ae, peer, error)
            return status.CANNOT_UNDERSTAND
        if received.sop_class_uid != sop_class_uid:
            log.warning("dataset SOP class %s differs from the request's %s (from %s)",
                        received.sop_class_uid, sop_class_uid, peer)
            return status.DATASET_DOES_NOT_MATCH_SOP_CLASS
        if received.sop_instance_uid != str(event.request.AffectedSOPInstanceUID):
            # The sender would file our answer under another instance than the one we keep.
            log.warning("dataset SOP Instance UID %s differs from the request's (from %s)",
                        received.sop_instance_uid, peer)
            return status.CANNOT_UNDERSTAND
        return self.on_instance(received)


def _log_rejection(event: evt.Event) -> None:
    requestor = event.assoc.requestor
    log.warning("rejected association from calling AE %r at %s:%s",
                str(requestor.ae_title).strip(), requestor.address, requestor.port)
