"""C-STORE files to any SCP: the scanner side of the wire (tests, demo) and results to PACS."""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID
from pynetdicom import AE, _config, evt
from pynetdicom.presentation import build_context

from dicom.sop_classes import VERIFICATION_SOP_CLASS
from dicom.tcp import set_tcp_nodelay
from dicom.transfer_syntax import encoded

# Stream each file from disk instead of decoding it into memory first.
_config.STORE_SEND_CHUNKED_DATASET = True
MAX_CONTEXTS = 128


@dataclass(frozen=True)
class SendResult:
    path: Path
    status: int | None          # None: no response (association failed or aborted)
    error: str = ""
    refused: bool = False       # the peer will not take this object however often we ask
    http_status: int | None = None  # Orthanc's REST answer, where the object went that way

    @property
    def ok(self) -> bool:
        return self.status == 0x0000


def dicom_files(paths: Iterable[Path]) -> list[Path]:
    """The files named, and every file under the folders named, in a stable order."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path} does not exist")
    return found


def send_files(paths: list[Path], host: str, port: int, *, called_ae: str = "AOMAS",
               calling_ae: str = "AOMAS-SEND", max_pdu_bytes: int = 0,
               transfer_syntax: str = "",
               tls_args: tuple[ssl.SSLContext, str] | None = None) -> list[SendResult]:
    """Send every file over one association; files that are not DICOM are reported, not sent.

    With ``transfer_syntax`` (a compressed one), each SOP class is proposed in it and, in a
    context of its own, as stored; a file goes re-encoded where the peer accepted the syntax
    and its pixels allow, else as stored."""
    results: list[SendResult] = []
    headers: list[tuple[Path, str, str]] = []
    for path in paths:
        try:
            # The file meta names the SOP class and transfer syntax without parsing the rest.
            meta = read_file_meta_info(path)
            headers.append((path, str(meta.MediaStorageSOPClassUID),
                            str(meta.TransferSyntaxUID)))
        except (InvalidDicomError, AttributeError, OSError, ValueError) as error:
            results.append(SendResult(path, None, f"not a DICOM file: {error}"))
    if not headers:
        return results

    wanted = UID(transfer_syntax) if transfer_syntax else None
    pairs = {(sop_class, syntax) for _, sop_class, syntax in headers}
    if wanted is not None and wanted.is_compressed:
        pairs |= {(sop_class, wanted) for _, sop_class, _ in headers}
    pairs = sorted(pairs)
    if len(pairs) > MAX_CONTEXTS:
        raise ValueError(f"{len(pairs)} SOP class / transfer syntax pairs; at most "
                         f"{MAX_CONTEXTS} fit in one association")
    ae = AE(ae_title=calling_ae)
    ae.requested_contexts = [build_context(sop_class, [syntax]) for sop_class, syntax in pairs]
    assoc = ae.associate(host, port, ae_title=called_ae, max_pdu=max_pdu_bytes,
                         evt_handlers=[(evt.EVT_CONN_OPEN, set_tcp_nodelay)],
                         tls_args=tls_args)
    if not assoc.is_established:
        reason = "association rejected" if assoc.is_rejected else "no association"
        return results + [SendResult(p, None, f"{reason} by {host}:{port}")
                          for p, _, _ in headers]
    accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
    try:
        for path, sop_class, _ in headers:
            if not assoc.is_established:
                results.append(SendResult(path, None, "association ended"))
                continue
            try:
                dataset = encoded(path, wanted) if (sop_class, wanted) in accepted else None
                response = assoc.send_c_store(path if dataset is None else dataset)
            except (ValueError, RuntimeError, NotImplementedError) as error:
                # No accepted context for this SOP class, or pixels the encoder cannot take.
                results.append(SendResult(path, None, str(error), refused=True))
                continue
            # An empty response means no answer arrived: unknown, never success.
            status = int(response.Status) if "Status" in response else None
            results.append(SendResult(path, status, "" if status is not None else "no response"))
    finally:
        if assoc.is_established:
            assoc.release()
    return results


def probe(host: str, port: int, *, called_ae: str = "AOMAS",
          calling_ae: str = "AOMAS-HEALTH",
          tls_args: tuple[ssl.SSLContext, str | None] | None = None) -> str:
    """'accepted' (C-ECHO answered), 'rejected' (association refused) or 'unreachable'."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.network_timeout = ae.connection_timeout = 5
    ae.add_requested_context(VERIFICATION_SOP_CLASS)
    assoc = ae.associate(host, port, ae_title=called_ae, tls_args=tls_args)
    if assoc.is_rejected:
        return "rejected"
    if not assoc.is_established:
        return "unreachable"
    try:
        response = assoc.send_c_echo()
        return "accepted" if response.get("Status") == 0 else "unreachable"
    finally:
        assoc.release()
