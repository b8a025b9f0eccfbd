"""Store files in an Orthanc through its REST API (orthanc-api-client), answered like C-STORE.

Each file is one ``POST /instances``. Orthanc answers 200 with ``Status`` ``Success`` or
``AlreadyStored`` (the same SOP Instance UID is there: a resend is no duplicate), both 0x0000
here. No connection, a timeout or a 5xx is unknown, never success: the caller retries. A 4xx
will not change by waiting (a file Orthanc cannot read, wrong credentials, wrong URL): refused.
"""

from __future__ import annotations

from pathlib import Path

from orthanc_api_client import OrthancApiClient
from orthanc_api_client import exceptions as orthanc_errors
from pydicom.uid import UID, ExplicitVRLittleEndian

from dicom import status as dimse
from dicom.send import SendResult
from dicom.transfer_syntax import encoded_bytes

STORED = ("Success", "AlreadyStored")


def upload_files(paths: list[Path], url: str, *, username: str = "", password: str = "",
                 transfer_syntax: str = "", timeout_seconds: float = 60.0) -> list[SendResult]:
    """Upload each file (re-encoded in ``transfer_syntax`` where its pixels allow); one
    result per file, in order."""
    client = OrthancApiClient(url, user=username or None, pwd=password or None)
    syntax = UID(transfer_syntax or ExplicitVRLittleEndian)
    results = []
    try:
        for position, path in enumerate(paths):
            try:
                data = encoded_bytes(path, syntax)
            except (OSError, ValueError, RuntimeError, NotImplementedError) as error:
                results.append(SendResult(path, None, f"cannot encode as {syntax.name}: {error}",
                                          refused=True))
                continue
            result = _upload_one(client, path, data, timeout_seconds)
            results.append(result)
            if result.status is None and not result.refused:
                # Orthanc is away: the rest would only wait for the same timeout.
                results += [SendResult(p, None, result.error) for p in paths[position + 1:]]
                break
    finally:
        client.close()
    return results


def _upload_one(client: OrthancApiClient, path: Path, data: bytes,
                timeout_seconds: float) -> SendResult:
    try:
        response = client.post("instances", data=data, timeout=timeout_seconds)
    except orthanc_errors.HttpError as error:
        code = error.http_status_code
        reason = _http_reason(code, error)
        if code is not None and (code >= 500 or code in (408, 429)):
            return SendResult(path, None, reason, http_status=code)
        return SendResult(path, None, reason, refused=True, http_status=code)
    except (orthanc_errors.ConnectionError, orthanc_errors.TimeoutError) as error:
        return SendResult(path, None, error.msg)
    if response is None:  # the client swallows some transport errors (retries exhausted)
        return SendResult(path, None, "no answer from Orthanc")
    answer = response.json()
    stored = answer.get("Status") if isinstance(answer, dict) else None
    if stored in STORED:
        return SendResult(path, dimse.SUCCESS, http_status=response.status_code)
    # e.g. "FilteredOut": a filter on the Orthanc side does not want it; waiting will not help.
    return SendResult(path, None, f"Orthanc answered Status {stored!r}", refused=True,
                      http_status=response.status_code)


def _http_reason(code: int | None, error: orthanc_errors.HttpError) -> str:
    if code in (401, 403):
        return f"HTTP {code}: not authorized; check the destination's username and password_file"
    if code == 404:
        return "HTTP 404: no /instances under this url; check the destination's url"
    detail = error.msg if error.msg and not isinstance(error.msg, int) else ""
    return f"HTTP {code}" + (f": {detail}" if detail else "")
