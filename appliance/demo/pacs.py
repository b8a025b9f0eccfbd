"""A local Orthanc as a PACS: the demo's, and the tests'. Never the clinic's.

Its configuration, index and storage live under one folder; ports are free loopback ports
unless given. The clinic's PACS is configured as a ``[[destinations]]`` entry instead.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path

from orthanc_api_client import OrthancApiClient

from appliance.exceptions import AomasError


def free_port(preferred: int = 0) -> int:
    """``preferred`` when nothing listens there, else any free loopback port."""
    with socket.socket() as s:
        # As servers do: a port held only by closed connections (TIME_WAIT) is free to listen.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def orthanc_program() -> str | None:
    """The Orthanc server program (Debian package ``orthanc``), if installed."""
    return shutil.which("Orthanc")


class LocalOrthanc:
    """One Orthanc process on loopback, without authentication unless ``users`` are given."""

    ae_title = "ORTHANC"

    def __init__(self, root: Path, *, dicom_port: int = 0, http_port: int = 0,
                 users: dict[str, str] | None = None):
        self.root = root
        self.dicom_port = dicom_port or free_port()
        self.http_port = http_port or free_port()
        self.users = users or {}
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def client(self) -> OrthancApiClient:
        username, password = next(iter(self.users.items()), (None, None))
        return OrthancApiClient(self.url, user=username, pwd=password)

    def start(self, timeout: float = 30) -> None:
        program = orthanc_program()
        if program is None:
            raise AomasError("Orthanc is not installed; `apt-get install orthanc` (make test "
                             "does) to have a local PACS")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "orthanc.json").write_text(json.dumps({
            "Name": "aomas-local-pacs", "StorageDirectory": str(self.root / "db"),
            "IndexDirectory": str(self.root / "db"), "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port, "HttpPort": self.http_port,
            # Loopback only: this PACS holds patient data with no one to guard it.
            "RemoteAccessAllowed": False, "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users, "DicomCheckCalledAet": False,
            # Our SEG and SR classes are newer than some Orthanc builds' lists.
            "UnknownSopClassAccepted": True, "Plugins": [], "StableAge": 1}))
        with open(self.root / "orthanc.log", "a") as log:  # the process has its own copy
            self.process = subprocess.Popen([program, str(self.root / "orthanc.json")],
                                            stdout=log, stderr=subprocess.STDOUT)
        if not self.client().wait_started(timeout):
            self.stop()
            raise AomasError(f"Orthanc did not start within {timeout:.0f} s; see "
                             f"{self.root / 'orthanc.log'}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def study_page(self, study_instance_uid: str) -> str | None:
        """Orthanc Explorer's page for the study, once Orthanc holds it."""
        found = self.client().studies.lookup(study_instance_uid)
        return None if found is None else f"{self.url}/app/explorer.html#study?uuid={found}"
