"""A write that fails mid-receive (the disk really is full): failure status, no partial file."""

from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest

from dicom.opt import OptStudy, uid_from, write_opt
from tests.conftest import Box, storescu


@pytest.fixture
def tiny_disk(tmp_path):
    """A 4 MiB disk: a 5 MB dataset fails mid-receive."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs",
                              str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_dataset_larger_than_the_free_space_fails_and_leaves_nothing(tiny_disk, tmp_path):
    box = Box(tmp_path, appliance__data_dir=str(tiny_disk / "var"), dicom__min_free_disk_mb=0,
              dicom__spool_stale_seconds=1.0)
    box.data_dir = tiny_disk / "var"
    voxels = np.random.default_rng(0).integers(0, 4000, (40, 256, 256), dtype=np.uint16)
    study = OptStudy(patient_name="FULL^DISK", patient_id="FULL-1",
                     study_instance_uid=uid_from("full-study"),
                     series_instance_uid=uid_from("full-series"),
                     frame_of_reference_uid=uid_from("full-for"))
    [big] = write_opt(voxels, (0.001, 0.001, 0.001), study, tmp_path / "big")  # ~5.2 MB
    small = write_opt(voxels[:2], (0.001, 0.001, 0.001), study, tmp_path / "small")
    try:
        box.start("scp")
        sent = storescu(box.dicom_port, big)
        assert "Received Store Response (Success)" not in sent.stdout + sent.stderr
        assert box.object_files() == []
        deadline = time.monotonic() + 10  # the janitor removes a dead transfer's spool file
        while list((box.data_dir / "spool").iterdir()):
            assert time.monotonic() < deadline, list((box.data_dir / "spool").iterdir())
            time.sleep(0.2)
        assert box.query("SELECT count(*) FROM instances")[0][0] == 0
        # Still serving, and what fits is stored.
        assert storescu(box.dicom_port, *small).returncode == 0
        assert box.query("SELECT count(*) FROM instances")[0][0] == 1
    finally:
        box.stop_all()
