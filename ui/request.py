"""The request class: an uploaded file is written straight into the spool as it arrives.

Werkzeug's default parks a multipart file in /tmp (or in memory), and the upload would then be
copied into the spool: every byte of a 2 GiB volume written twice, once to a disk that may not
be the data dir's. Here the file's stream *is* the spool file, and ingest renames it into the
object store, so each byte is written once. Files left behind (a refused upload, a client that
hung up mid-body) are removed when the request ends.
"""

from __future__ import annotations

import uuid
from functools import cached_property
from pathlib import Path
from typing import IO

from flask import Request, current_app


class SpooledRequest(Request):
    def _get_file_stream(self, total_content_length: int | None, content_type: str | None,
                         filename: str | None = None,
                         content_length: int | None = None) -> IO[bytes]:
        # The name is ours, never the client's file name (the sender's text).
        path = current_app.extensions["aomas"].store.spool / f"upload-{uuid.uuid4().hex}"
        self.spooled_paths.append(path)
        return open(path, "x+b")

    @cached_property
    def spooled_paths(self) -> list[Path]:
        return []

    def close(self) -> None:
        super().close()
        for path in self.spooled_paths:
            path.unlink(missing_ok=True)  # adopted ones were renamed into the object store


def spooled_path(stream: IO[bytes]) -> Path:
    """Where an uploaded file's bytes lie, flushed, for readers that open the path."""
    stream.flush()
    return Path(stream.name)
