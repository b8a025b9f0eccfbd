"""Backups: a consistent snapshot of a running appliance, and a verified restore.

A backup directory holds every snapshot taken into it and one shared object store::

    DEST/objects/ab/abcdef…               the objects, by SHA-256 (shared: incremental)
    DEST/snapshots/20261203T140501.250Z/
        aomas.db                          SQLite's online backup of the database
        audit-heads.log                   the audit chain heads logged so far
        manifest.json                     the database's hash and every object it names

The database is copied first, by SQLite's online backup API, in one step: a read transaction,
so the copy is one committed state however busy the SCP and the worker are. The objects are
then the ones that copy names (every SHA-256 in a text column that is a file in the store, as
``appliance.orphans`` counts references); nothing deletes an object a committed row names, so
they are all still there. Each object's copy is hashed before it counts, and each is copied
only once per backup directory. The queue, the model cache and the web secret are not kept:
the worker re-queues from the runs table, the cache is rebuilt from the stored weights, and a
new secret only means logging in again.

A restore goes into an empty data dir and checks every copy's hash; on any mismatch it removes
what it wrote and names the object.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from appliance import audit, migrations
from appliance.exceptions import AomasError, InvalidInput
from appliance.orphans import SHA256, referenced_sha256s
from appliance.storage import (
    ObjectStore,
    empty_directory,
    fsync_directory,
    fsync_file,
    sha256_of,
)
from appliance.version import pipeline_version

FORMAT = "aomas-backup/1"
DATABASE = "aomas.db"
MANIFEST = "manifest.json"
# Tables whose row counts the manifest lists, so an admin sees what a snapshot holds.
COUNTED = ("instances", "series", "cases", "runs", "labels", "reviews", "audit_events",
           "models", "users")


class BackupError(AomasError):
    """A backup could not be taken, or a backup is unusable (the message names the part)."""


@dataclass(frozen=True)
class Snapshot:
    directory: Path
    objects: int
    objects_copied: int
    bytes_copied: int
    counts: dict[str, int]


def backup(data_dir: Path, store: ObjectStore, destination: Path, *, keep: int = 7,
           log: Callable[[str], None] = lambda line: None) -> Snapshot:
    """Take a snapshot of ``data_dir`` into ``destination``; keep the newest ``keep``."""
    destination.mkdir(parents=True, exist_ok=True)
    with _locked(destination):
        now = time.time()
        name = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
        snapshot = destination / "snapshots" / name
        if snapshot.exists():
            raise BackupError(f"{snapshot} exists already; try again")
        partial = snapshot.with_name(f".{name}.partial")
        # Snapshots an interrupted backup left half written (the lock says none is running).
        for leftover in (destination / "snapshots").glob(".*.partial"):
            shutil.rmtree(leftover)
        partial.mkdir(parents=True)
        _online_copy(data_dir / DATABASE, partial / DATABASE)
        copy = sqlite_utils.Database(partial / DATABASE)
        try:
            named = sorted(sha for sha in referenced_sha256s(copy)
                           if store.path_for(sha).is_file())
            counts = {table: copy[table].count for table in COUNTED if copy[table].exists()}
            schema = [row[0] for row in copy.execute(
                "SELECT name FROM _sqlite_migrations ORDER BY rowid")]
        finally:
            copy.conn.close()
        objects: dict[str, int] = {}
        copied = copied_bytes = 0
        for sha256 in named:
            target = _object_path(destination, sha256)
            if target.is_file():
                objects[sha256] = target.stat().st_size
                continue
            objects[sha256] = _copy_verified(store.path_for(sha256), target, sha256)
            copied += 1
            copied_bytes += objects[sha256]
        heads = data_dir / audit.HEADS_FILE
        if heads.is_file():
            shutil.copyfile(heads, partial / audit.HEADS_FILE)
        database_sha256, database_bytes = sha256_of(partial / DATABASE)
        manifest = {
            "format": FORMAT, "created_at": time.time(), "aomas_version": pipeline_version(),
            "schema": schema[-1] if schema else None, "counts": counts,
            "database": {"file": DATABASE, "sha256": database_sha256, "bytes": database_bytes},
            "objects": objects,
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        for path in partial.iterdir():
            fsync_file(path)
        os.replace(partial, snapshot)
        fsync_directory(snapshot.parent)
        log(f"snapshot {name}: {len(objects)} objects ({copied} new, "
            f"{copied_bytes / 2**20:.1f} MiB copied)")
        _prune(destination, keep, log)
    return Snapshot(snapshot, len(objects), copied, copied_bytes, counts)


def restore(source: Path, data_dir: Path, *,
            log: Callable[[str], None] = lambda line: None) -> tuple[Path, dict[str, Any]]:
    """Restore the snapshot ``source`` (a snapshot directory, or a backup directory: its
    newest) into the empty ``data_dir``; return that snapshot and its manifest."""
    snapshot = latest_snapshot(source)
    root = snapshot.parent.parent
    manifest = read_manifest(snapshot)
    if manifest.get("schema") not in migrations.names():
        raise BackupError(f"{snapshot} was taken by a newer release (schema "
                          f"{manifest.get('schema')}); restore it with that release, then "
                          "roll back through Ansible")
    if data_dir.exists() and any(data_dir.iterdir()):
        raise BackupError(f"{data_dir} is not empty; restore only into an empty data dir "
                          "(move the old one aside first)")
    created = not data_dir.exists()
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        store = ObjectStore(data_dir)
        database = manifest["database"]
        _copy_verified(snapshot / DATABASE, data_dir / DATABASE, database["sha256"],
                       what=f"the database {snapshot / DATABASE}")
        for number, (sha256, size) in enumerate(sorted(manifest["objects"].items()), 1):
            if not SHA256.fullmatch(sha256):
                raise BackupError(f"the manifest of {snapshot} names {sha256!r}, which is "
                                  "not an object hash")
            source_path = _object_path(root, sha256)
            if not source_path.is_file():
                raise BackupError(f"object {sha256} is missing from the backup "
                                  f"({source_path})")
            _copy_verified(source_path, store.path_for(sha256), sha256,
                           what=f"object {sha256}", expected_bytes=size)
            if number % 500 == 0:
                log(f"{number} of {len(manifest['objects'])} objects verified")
        if (snapshot / audit.HEADS_FILE).is_file():
            shutil.copyfile(snapshot / audit.HEADS_FILE, data_dir / audit.HEADS_FILE)
    except BaseException:
        # Leave the data dir as it was: empty (or absent), never half restored.
        empty_directory(data_dir, remove=created)
        raise
    return snapshot, manifest


def latest_snapshot(source: Path) -> Path:
    if (source / MANIFEST).is_file():
        return source
    snapshots = sorted((source / "snapshots").glob("2*")) if source.is_dir() else []
    if not snapshots:
        raise BackupError(f"{source} holds no snapshot (neither a {MANIFEST} nor "
                          "snapshots/…); name a backup directory or one of its snapshots")
    return snapshots[-1]


def read_manifest(snapshot: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((snapshot / MANIFEST).read_text())
    except (OSError, ValueError) as error:
        raise BackupError(f"{snapshot / MANIFEST} is unreadable ({error}); the snapshot is "
                          "damaged, restore an older one") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{snapshot / MANIFEST} is not an AOMAS backup manifest "
                          f"({FORMAT})")
    return manifest


def _online_copy(source: Path, target: Path) -> None:
    if not source.is_file():
        raise InvalidInput(f"no database at {source}; is appliance.data_dir right?")
    live = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    copy = sqlite3.connect(target)
    try:
        live.backup(copy)       # pages=-1: the whole database in one step, one read snapshot
        copy.execute("PRAGMA journal_mode=DELETE")   # one self-contained file
    finally:
        copy.close()
        live.close()


def _copy_verified(source: Path, target: Path, sha256: str, *, what: str | None = None,
                   expected_bytes: int | None = None) -> int:
    """Copy ``source`` to ``target`` through a temporary name; the copy counts only if its
    bytes hash to ``sha256``. Returns its size."""
    what = what or f"object {sha256}"
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}.partial")
    try:
        # The kernel copies (sendfile); the hash then reads the copy back from the page cache,
        # which is faster than a Python read-hash-write loop and checks what landed.
        shutil.copyfile(source, staged)
    except OSError as error:
        staged.unlink(missing_ok=True)
        raise BackupError(f"{what} could not be copied: {error}") from None
    actual, size = sha256_of(staged)
    if actual != sha256 or (expected_bytes is not None and size != expected_bytes):
        staged.unlink()
        raise BackupError(f"{what} is corrupt: its bytes hash to {actual[:16]}…, not "
                          f"{sha256[:16]}…; this backup cannot be restored as it is")
    fsync_file(staged)
    os.replace(staged, target)
    return size


def _object_path(root: Path, sha256: str) -> Path:
    return root / "objects" / sha256[:2] / sha256


def _prune(destination: Path, keep: int, log: Callable[[str], None]) -> None:
    """Drop snapshots beyond the newest ``keep``, then the objects no kept one names."""
    snapshots = sorted((destination / "snapshots").glob("2*"))
    for old in snapshots[:-keep] if keep > 0 else []:
        shutil.rmtree(old)
        log(f"removed snapshot {old.name} (keeping {keep})")
    kept: set[str] = set()
    for snapshot in snapshots[-keep:]:
        kept.update(read_manifest(snapshot)["objects"])
    for path in (destination / "objects").glob("??/*"):
        if path.name not in kept:
            path.unlink()


class _locked:
    """One backup at a time per backup directory."""

    def __init__(self, destination: Path):
        self.path = destination / ".lock"

    def __enter__(self) -> None:
        self.file = open(self.path, "w")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            raise BackupError(f"another backup into {self.path.parent} is running") from None

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()
