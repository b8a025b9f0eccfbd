"""The object store: files named by their SHA-256, never by anything a sender chose.

Layout under the data dir: ``objects/ab/abcdef…`` (content-addressed), ``spool/`` (files
being received; whatever is left there after a crash was never acknowledged and is swept) and
``staging/`` (artifacts the worker is writing; kept apart so that sweeping the spool at SCP
start can never take one).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from appliance.exceptions import StorageFull

CHUNK_BYTES = 4 * 1024 * 1024
# fsync waits on the disk while SHA-256 works the CPU; both release the GIL, so they overlap.
_syncer = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fsync")


def sha256_of(path: Path) -> tuple[str, int]:
    """The file's SHA-256 hex digest and its size in bytes."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def empty_directory(path: Path, *, remove: bool) -> None:
    """Delete everything in ``path`` (and ``path`` itself with ``remove``): what a restore or an
    export that failed half way leaves, so nothing half written stays."""
    for entry in list(path.iterdir()):
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    if remove:
        path.rmdir()


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ObjectStore:
    def __init__(self, data_dir: Path, min_free_bytes: int = 0):
        self.root = data_dir / "objects"
        self.spool = data_dir / "spool"
        self.staging = data_dir / "staging"
        self.min_free_bytes = min_free_bytes
        for directory in (self.root, self.spool, self.staging):
            directory.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def check_free_space(self) -> None:
        free = self.free_bytes()
        if free < self.min_free_bytes:
            raise StorageFull(
                f"{free // 2**20} MiB free under {self.root}, below the watermark of "
                f"{self.min_free_bytes // 2**20} MiB: free disk space or lower "
                "dicom.min_free_disk_mb")

    def adopt(self, spooled: Path) -> tuple[str, int, bool]:
        """Make a fully written spool file durable in the store; return (sha256, size, new).

        The file is fsynced, renamed into place and its directory fsynced, so that once this
        returns the bytes survive a crash or power loss. Identical content already stored is
        kept as it is (``new`` is False).
        """
        synced = _syncer.submit(fsync_file, spooled)
        sha256, size = sha256_of(spooled)
        synced.result()
        target = self.path_for(sha256)
        if target.exists():
            return sha256, size, False
        new_dir = not target.parent.exists()
        target.parent.mkdir(exist_ok=True)
        os.replace(spooled, target)
        fsync_directory(target.parent)
        if new_dir:
            fsync_directory(self.root)
        return sha256, size, True

    def discard(self, sha256: str) -> None:
        """Remove an object nothing refers to (its row could not be committed)."""
        self.path_for(sha256).unlink(missing_ok=True)

    def put_bytes(self, data: bytes) -> str:
        """Store bytes the appliance produced itself (artifacts); return their SHA-256."""
        self.check_free_space()
        staged = self.staging / f"{os.getpid()}-{hashlib.sha256(data).hexdigest()}.tmp"
        with open(staged, "wb") as f:
            f.write(data)
        sha256, _, _ = self.adopt(staged)
        staged.unlink(missing_ok=True)
        return sha256

    def sweep_spool(self, older_than_seconds: float = 0.0) -> int:
        """Delete spool files untouched for this long; none of them was acknowledged.

        At SCP start everything goes (a crash left it). While running, only stale files: a
        live transfer writes its file with every PDU.
        """
        cutoff = time.time() - older_than_seconds
        removed = 0
        for leftover in self.spool.iterdir():
            try:
                if leftover.is_file() and leftover.stat().st_mtime <= cutoff:
                    # Truncate first: a dead association may still hold the file open, and
                    # an unlinked but open file keeps its blocks (a full disk stays full).
                    os.truncate(leftover, 0)
                    leftover.unlink()
                    removed += 1
            except FileNotFoundError:
                pass  # adopted or removed by its own association meanwhile
        return removed
