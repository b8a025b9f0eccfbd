"""Backup benchmark: `aomas backup` and `aomas restore` against the plain copy an admin would
otherwise make, on the same data dir.

A data dir is filled by `aomas scp` with phantom studies sent by DCMTK storescu (no worker:
only received instances, the bulk of any real box). Then, each timed side by side:

1. full: `aomas backup DEST` vs `sqlite3 aomas.db .backup` + `cp -a objects` (GNU coreutils)
   + `sync` (we fsync every file we copy; without the sync the peer's copy is not on disk);
2. incremental, after a few more studies: `aomas backup DEST` again vs `cp -an` (copies only
   files not yet there) after a fresh `.backup`, + `sync`;
3. restore: `aomas restore` (every object hashed and fsynced) vs `cp -a` back + `sync`.

Ours is timed in this process (``appliance.backup``, what the command runs after its imports);
the command's own time with its start-up is printed once beside it. Prints seconds, MB/s and
peer / aomas ratios (below 1: slower than the plain copy, which checks nothing and is
consistent only when the box is idle).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from appliance import backup
from appliance.demo.pacs import free_port
from appliance.demo.study import write_phantom_study
from appliance.storage import ObjectStore
from gpu.phantom import PhantomSpec

AOMAS = str(Path(sys.executable).with_name("aomas"))
SIZE = {"b_scans": 96, "depth": 160, "a_lines": 160}


def timed(*args: str) -> float:
    subprocess.run(["sync"], check=True)     # each side starts with nothing left to flush
    started = time.monotonic()
    subprocess.run(args, check=True, capture_output=True)
    return time.monotonic() - started


def timed_call(function, *args) -> float:
    subprocess.run(["sync"], check=True)
    started = time.monotonic()
    function(*args)
    return time.monotonic() - started


def size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=24)
    parser.add_argument("--more", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aomas-bench-backup-"))
    try:
        port = free_port()
        config = work / "aomas.toml"
        config.write_text(f'[appliance]\ndata_dir = "{work / "var"}"\nlog_level = "WARNING"\n'
                          f'[dicom]\nbind = "127.0.0.1"\nport = {port}\nmin_free_disk_mb = 1\n'
                          f'[web]\nport = {free_port()}\n')
        (work / "password").write_text("bench password 1")
        subprocess.run([AOMAS, "--config", str(config), "init", "--admin-password-file",
                        str(work / "password")], check=True, capture_output=True)
        studies = []
        for seed in range(args.studies + args.more):
            write_phantom_study(work / f"study-{seed}", PhantomSpec(seed=seed, **SIZE))
            studies.append(work / f"study-{seed}" / "dicom")
        scp = subprocess.Popen([AOMAS, "--config", str(config), "scp"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(3)

            def send(batch: list[Path]) -> None:
                for study in batch:
                    subprocess.run(["storescu", "-aec", "AOMAS", "+sd", "127.0.0.1", str(port),
                                    str(study)], check=True, capture_output=True)

            send(studies[:args.studies])
            data = work / "var"
            store = ObjectStore(data)
            objects_mb = size_mb(data / "objects")
            print(f"data dir: {args.studies} studies, {objects_mb:.0f} MB of objects")
            command = timed(AOMAS, "--config", str(config), "backup", str(work / "command"))
            print(f"`aomas backup` as a command, start-up included: {command:.2f} s")

            ours = timed_call(backup.backup, data, store, work / "aomas-backup")
            (work / "plain").mkdir()
            peer = timed("sqlite3", str(data / "aomas.db"),
                         f".backup {work / 'plain' / 'aomas.db'}") + \
                timed("cp", "-a", str(data / "objects"), str(work / "plain" / "objects")) + \
                timed("sync")
            print(f"full        aomas {ours:6.2f} s ({objects_mb / ours:6.1f} MB/s)   "
                  f"sqlite3 .backup + cp -a + sync {peer:6.2f} s ({objects_mb / peer:6.1f} "
                  f"MB/s)   peer / aomas {peer / ours:.2f}")

            send(studies[args.studies:])
            new_mb = size_mb(data / "objects") - objects_mb
            ours = timed_call(backup.backup, data, store, work / "aomas-backup")
            peer = timed("sqlite3", str(data / "aomas.db"),
                         f".backup {work / 'plain' / 'aomas.db'}") + \
                timed("cp", "-an", f"{data / 'objects'}/.", str(work / "plain" / "objects")) + \
                timed("sync")
            print(f"incremental ({new_mb:.0f} MB new) aomas {ours:6.2f} s   sqlite3 .backup + "
                  f"cp -an + sync {peer:6.2f} s   peer / aomas {peer / ours:.2f}")
        finally:
            scp.terminate()
            scp.wait(timeout=30)

        ours = timed_call(backup.restore, work / "aomas-backup", work / "restored")
        peer = timed("cp", "-a", str(work / "plain"), str(work / "plain-restored")) + \
            timed("sync")
        total_mb = size_mb(work / "plain")
        print(f"restore     aomas {ours:6.2f} s ({total_mb / ours:6.1f} MB/s, every object "
              f"hashed)   cp -a + sync {peer:6.2f} s   peer / aomas {peer / ours:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
