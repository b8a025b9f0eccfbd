"""`aomas backup` while the appliance receives a study and runs it, `aomas restore` elsewhere:
every instance, run, label version, review and audit event comes back, each object verified;
a corrupted backup is refused with the object named and leaves nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import threading

from appliance import backup
from tests.conftest import Box, mask_from, need, png_of, storescu
from tests.test_reviews import settle_adjudications

TABLES = {"instances": "sop_instance_uid", "runs": "run_id", "labels": "label_id",
          "reviews": "review_id", "audit_events": "id"}


def _rows(box: Box, table: str) -> dict:
    key = TABLES[table]
    return {row[key]: dict(row) for row in box.query(f"SELECT * FROM {table}")}


def _label_and_review(review_box) -> None:
    url = review_box.url
    lena, carl = review_box.login("lena"), review_box.login("carl")
    tile_id = review_box.untouched_tile_id()
    mask = mask_from(lena.get(f"{url}/api/v1/tiles/{tile_id}").json())
    mask[:4, :4] = ~mask[:4, :4]
    assert lena.post(f"{url}/api/v1/labels", json={
        "tile_id": tile_id, "base_version": 0, "mask_png": png_of(mask)}).status_code == 201
    settle_adjudications(review_box)
    review = carl.post(f"{url}/api/v1/runs/{review_box.run_id}/review", json={})
    assert review.status_code in (200, 201), review.text


def test_a_backup_during_ingest_and_a_run_restores_every_row_verified(review_box, studies,
                                                                      tmp_path):
    box = review_box.box
    _label_and_review(review_box)
    before = {table: _rows(box, table) for table in TABLES}
    assert all(before.values()), {table: len(rows) for table, rows in before.items()}

    destination = tmp_path / "backups"
    study = studies["split"]
    sender = threading.Thread(target=storescu, args=(box.dicom_port, study["dir"]))
    sender.start()
    outputs = []
    while True:   # back up again and again while the study arrives and runs
        outputs.append(box.aomas("backup", str(destination), "--keep", "20").stdout)
        runs = box.runs_for_series(study["series_instance_uid"])
        if not sender.is_alive() and runs and runs[-1]["state"] in ("SUCCEEDED", "FAILED"):
            break
    sender.join()
    finished_at = box.runs_for_series(study["series_instance_uid"])[-1]["finished_at"]
    snapshots = sorted((destination / "snapshots").iterdir())
    manifests = [backup.read_manifest(s) for s in snapshots]
    assert len(snapshots) >= 2 and manifests[0]["created_at"] < finished_at
    # Incremental: a later snapshot copied only what was new.
    assert "(0 new" in outputs[-1] or int(outputs[-1].split("(")[1].split()[0]) < \
        len(manifests[-1]["objects"])
    assert box.query("SELECT count(*) FROM audit_events WHERE action = 'backup.create'"
                     )[0][0] == len(snapshots)

    for snapshot in (snapshots[0], snapshots[-1]):
        elsewhere = Box(tmp_path / f"restored-{snapshot.name}")
        restored = elsewhere.aomas("restore", str(snapshot))
        assert "objects verified" in restored.stdout and "audit log: intact" in restored.stdout
        for table, rows in before.items():
            back = _rows(elsewhere, table)
            missing = set(rows) - set(back)
            assert not missing, f"{table}: {len(missing)} rows not restored"
            changed = [k for k in rows if table != "runs" and back[k] != rows[k]]
            assert not changed, f"{table}: rows differ after restore: {changed[:3]}"
        # Every object the restored rows name is there with its bytes (restore checked the
        # hash; the instance rows agree with it too).
        for row in elsewhere.query("SELECT sha256, size_bytes FROM instances"):
            path = elsewhere.data_dir / "objects" / row["sha256"][:2] / row["sha256"]
            assert path.stat().st_size == row["size_bytes"]
        for row in elsewhere.query("SELECT mask_sha256 FROM labels"):
            assert (elsewhere.data_dir / "objects" / row[0][:2] / row[0]).is_file()
        assert "audit log intact" in elsewhere.aomas("audit", "verify").stdout
        assert elsewhere.query("SELECT count(*) FROM audit_events WHERE action = "
                               "'backup.restore'")[0][0] == 1

    # The first snapshot is the study part-way (or not yet) received; the last has its run.
    first = Box(tmp_path / f"restored-{snapshots[0].name}")
    last = Box(tmp_path / f"restored-{snapshots[-1].name}")
    assert len(last.query("SELECT * FROM instances WHERE series_instance_uid = ?",
                          (study["series_instance_uid"],))) == 24
    assert last.runs_for_series(study["series_instance_uid"])
    assert first.query("SELECT count(*) FROM runs WHERE finished_at >= ?",
                       (finished_at,))[0][0] == 0

    # A byte flipped in one object: the restore names it and leaves the data dir empty.
    victim = sorted(manifests[-1]["objects"])[len(manifests[-1]["objects"]) // 2]
    stored = destination / "objects" / victim[:2] / victim
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    target = Box(tmp_path / "restored-corrupt")
    refused = target.aomas("restore", str(destination), check=False)
    assert refused.returncode == 1
    assert f"object {victim} is corrupt" in refused.stderr
    assert refused.stderr.count("\n") == 1
    assert not target.data_dir.exists()
    # Into a data dir that holds anything: refused before a byte is written.
    refused = Box(tmp_path / "restored-busy")
    refused.data_dir.mkdir()
    (refused.data_dir / "keep.txt").write_text("x")
    answer = refused.aomas("restore", str(snapshots[0]), check=False)
    assert answer.returncode == 1 and "is not empty" in answer.stderr
    assert [p.name for p in refused.data_dir.iterdir()] == ["keep.txt"]


def test_a_damaged_manifest_or_missing_object_is_refused(tmp_path):
    box = Box(tmp_path)
    (tmp_path / "pw").write_text("correct horse battery staple")
    box.aomas("init", "--admin-user", "ada", "--admin-password-file", str(tmp_path / "pw"))
    destination = tmp_path / "backups"
    box.aomas("backup", str(destination))
    snapshot = next((destination / "snapshots").iterdir())
    manifest = json.loads((snapshot / "manifest.json").read_text())
    assert manifest["objects"], "the bundled model's weights are an object"
    victim = next(iter(manifest["objects"]))
    (destination / "objects" / victim[:2] / victim).unlink()
    answer = Box(tmp_path / "a").aomas("restore", str(destination), check=False)
    assert f"object {victim} is missing from the backup" in answer.stderr
    # A snapshot from a release with a migration this one does not know.
    (snapshot / "manifest.json").write_text(json.dumps({**manifest, "schema": "0999_future"}))
    answer = Box(tmp_path / "c").aomas("restore", str(destination), check=False)
    assert answer.returncode == 1 and "taken by a newer release" in answer.stderr
    (snapshot / "manifest.json").write_text("{not json")
    answer = Box(tmp_path / "b").aomas("restore", str(destination), check=False)
    assert answer.returncode == 1 and "manifest.json is unreadable" in answer.stderr


def test_a_backup_goes_through_restic_and_comes_back_restorable(tmp_path):
    """The documented off-box target: the backup directory into an encrypted restic repository
    (as aomas-backup.service's ExecStartPost does), then back out and restored."""
    box = Box(tmp_path)
    (tmp_path / "pw").write_text("correct horse battery staple")
    box.aomas("init", "--admin-user", "ada", "--admin-password-file", str(tmp_path / "pw"))
    destination = tmp_path / "backups"
    box.aomas("backup", str(destination))
    restic = need("restic")
    environment = {**os.environ, "RESTIC_REPOSITORY": str(tmp_path / "repository"),
                   "RESTIC_PASSWORD_FILE": str(tmp_path / "pw"),
                   "RESTIC_CACHE_DIR": str(tmp_path / "cache")}
    for args in (["init"], ["backup", "--quiet", str(destination)],
                 ["restore", "latest", "--target", str(tmp_path / "out")]):
        subprocess.run([restic, *args], env=environment, check=True, capture_output=True)
    # Encrypted at rest: the repository holds no readable database or manifest.
    stored = b"".join(p.read_bytes() for p in (tmp_path / "repository").rglob("*")
                      if p.is_file())
    assert b"SQLite format 3" not in stored and b"aomas-backup/1" not in stored
    back = tmp_path / "out" / destination.relative_to("/")
    restored = Box(tmp_path / "restored").aomas("restore", str(back))
    assert "objects verified" in restored.stdout and "audit log: intact" in restored.stdout
