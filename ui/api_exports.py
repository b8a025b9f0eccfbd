"""The JSON API's research export: one study, de-identified (appliance.export), as a ZIP."""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from flask import Blueprint, Response, g

from appliance import export
from appliance.exceptions import InvalidInput
from ui import payload
from ui.security import requires

blueprint = Blueprint("api_exports", __name__, url_prefix="/api/v1")
MAX_DATE_SHIFT_DAYS = 36_500      # a century: beyond it dates leave DICOM's range
CHUNK_BYTES = 1 << 20


@blueprint.post("/exports")
@requires("export_deidentified")
def create_export():
    """A study's inputs and outputs through the Basic Profile, with measurements.csv, as a ZIP
    (researchers, admins); audited with counts."""
    body = payload.body()
    study_instance_uid = payload.field(body, "study_instance_uid", str).strip()
    parts = payload.appliance()
    shift = payload.field(body, "date_shift_days", int, required=False,
                          default=parts.config.export.date_shift_days)
    if not 0 <= shift <= MAX_DATE_SHIFT_DAYS:
        raise InvalidInput(f"'date_shift_days' must be 0 to {MAX_DATE_SHIFT_DAYS}")
    scratch = Path(tempfile.mkdtemp(prefix="aomas-export-", dir=parts.store.staging))
    try:
        summary = export.export_study(g.db, parts.store, study_instance_uid, scratch / "export",
                                      date_shift_days=shift, actor=g.user["username"])
        archive = scratch / "export.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
            for path in sorted(summary.directory.rglob("*")):
                if path.is_file():
                    zipped.write(path, f"aomas-export-{summary.export_id}/"
                                       f"{path.relative_to(summary.directory)}")
        size = archive.stat().st_size
        # Open, then removed: the bytes stay readable through the open file until it is
        # closed, and nothing is left on disk whether the client takes them or goes away.
        body = open(archive, "rb")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    name = f"aomas-export-{summary.export_id}.zip"
    return Response(_chunks(body), mimetype="application/zip",
                    headers={"Content-Disposition": f"attachment; filename={name}",
                             "Content-Length": str(size)})


def _chunks(body: BinaryIO) -> Iterator[bytes]:
    with body:
        while chunk := body.read(CHUNK_BYTES):
            yield chunk
