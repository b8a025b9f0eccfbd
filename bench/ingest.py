"""Ingest benchmark: our SCP against DCMTK storescp on the same files, same sender, same run.

Prints MB/s for each receiver and the ratio, for one large multi-frame OPT and for 300
single-frame instances; then the job-start latency (last byte received → run RUNNING).
DCMTK storescu sends in every case, with 128 KiB PDUs (its maximum) and TCP_NODELAY on both
sides. Our SCP does more per instance than storescp: fsync, SHA-256, rename, directory fsync
and a committed SQLite row before it answers.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from appliance.demo.pacs import free_port
from dicom.opt import OptStudy, uid_from, write_opt
from dicom.send import probe

AOMAS = str(Path(sys.executable).with_name("aomas"))
REPEATS = 3
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def make_inputs(root: Path) -> dict[str, list[Path]]:
    rng = np.random.default_rng(0)

    def study(name: str) -> OptStudy:
        return OptStudy(patient_name="BENCH^" + name, patient_id="BENCH",
                        study_instance_uid=uid_from("bench-study", name),
                        series_instance_uid=uid_from("bench-series", name),
                        frame_of_reference_uid=uid_from("bench-for", name))

    large = write_opt(rng.integers(0, 4000, (208, 512, 512), dtype=np.uint16),
                      (0.001, 0.001, 0.001), study("large"), root / "large")
    many = write_opt(rng.integers(0, 4000, (300, 512, 512), dtype=np.uint16),
                     (0.001, 0.001, 0.001), study("many"), root / "many", split_frames=True)
    return {"one multi-frame OPT": large, "300 single-frame instances": many}


def wait_for_port(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"receiver exited early ({process.returncode})")
        if probe("127.0.0.1", port) == "accepted":
            return
        time.sleep(0.05)
    raise SystemExit("receiver did not start")


def send(port: int, files: list[Path]) -> float:
    start = time.perf_counter()
    result = subprocess.run(["storescu", "-pdu", "131072", "-aec", "ANY", "127.0.0.1", str(port),
                             *map(str, files)], env=DCMTK_ENV, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"storescu failed: {result.stderr[-500:]}")
    return elapsed


def start_storescp(work: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    out = work / "storescp-out"
    out.mkdir()
    process = subprocess.Popen(["storescp", "-pdu", "131072", "-od", str(out), str(port)],
                               env=DCMTK_ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    wait_for_port(port, process)
    return process, port


def aomas_env(work: Path, port: int) -> dict[str, str]:
    return {**os.environ, "AOMAS_APPLIANCE_DATA_DIR": str(work / "var"),
            "AOMAS_DICOM_BIND": "127.0.0.1", "AOMAS_DICOM_PORT": str(port),
            "AOMAS_DICOM_MIN_FREE_DISK_MB": "1", "AOMAS_APPLIANCE_LOG_LEVEL": "WARNING"}


def start_aomas(work: Path, part: str = "scp", port: int | None = None):
    port = port or free_port()
    process = subprocess.Popen([AOMAS, part], env=aomas_env(work, port), cwd=work,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if part == "scp":
        wait_for_port(port, process)
    return process, port


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def throughput(files: list[Path], scratch: Path) -> dict[str, float]:
    total_mb = sum(f.stat().st_size for f in files) / 1e6
    seconds: dict[str, list[float]] = {"storescp": [], "aomas": []}
    for repeat in range(REPEATS):
        for name, starter in (("storescp", start_storescp), ("aomas", start_aomas)):
            work = scratch / f"{name}-{repeat}"
            work.mkdir()
            process, port = starter(work)
            try:
                seconds[name].append(send(port, files))
            finally:
                stop(process)
                shutil.rmtree(work)
    return {name: total_mb / statistics.median(values) for name, values in seconds.items()}


def job_start_latency(scratch: Path, count: int = 5) -> list[float]:
    work = scratch / "latency"
    work.mkdir()
    scp, port = start_aomas(work, "scp")
    worker, _ = start_aomas(work, "worker", port=port)
    rng = np.random.default_rng(1)
    try:
        time.sleep(1.0)  # let the worker finish its start-up reconcile
        for i in range(count):
            study = OptStudy(patient_name="LATENCY^" + str(i), patient_id="BENCH",
                             study_instance_uid=uid_from("latency-study"),
                             series_instance_uid=uid_from("latency-series", i),
                             frame_of_reference_uid=uid_from("latency-for", i))
            files = write_opt(rng.integers(0, 4000, (64, 256, 256), dtype=np.uint16),
                              (0.001, 0.001, 0.001), study, work / f"in{i}")
            send(port, files)
            time.sleep(0.5)
        deadline = time.monotonic() + 60
        while True:
            conn = sqlite3.connect(work / "var" / "aomas.db")
            rows = conn.execute(
                "SELECT r.started_at - i.received_at FROM runs r JOIN cases c USING (case_id) "
                "JOIN instances i USING (series_instance_uid) WHERE r.started_at IS NOT NULL"
            ).fetchall()
            conn.close()
            if len(rows) == count or time.monotonic() > deadline:
                return [r[0] * 1000 for r in rows]
            time.sleep(0.2)
    finally:
        stop(worker)
        stop(scp)


def main() -> None:
    for tool in ("storescu", "storescp"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: run `make bench`, which installs DCMTK")
    with tempfile.TemporaryDirectory(prefix="aomas-bench-", dir=os.environ.get("TMPDIR")) as tmp:
        scratch = Path(tmp)
        inputs = make_inputs(scratch / "inputs")
        print(f"ingest throughput, median of {REPEATS} runs each (storescu sends, "
              "128 KiB PDUs, TCP_NODELAY)")
        print(f"{'input':<28}{'size MB':>9}{'storescp MB/s':>15}{'aomas MB/s':>12}{'ratio':>8}")
        for label, files in inputs.items():
            rates = throughput(files, scratch)
            size = sum(f.stat().st_size for f in files) / 1e6
            print(f"{label:<28}{size:>9.1f}{rates['storescp']:>15.1f}{rates['aomas']:>12.1f}"
                  f"{rates['aomas'] / rates['storescp']:>8.2f}")
        latencies = job_start_latency(scratch)
        if latencies:
            print(f"job-start latency (last byte received -> RUNNING), {len(latencies)} runs: "
                  f"median {statistics.median(latencies):.0f} ms, max {max(latencies):.0f} ms "
                  "(goal <= 250 ms)")
        else:
            print("job-start latency: no run started; see `aomas runs list`")


if __name__ == "__main__":
    main()
