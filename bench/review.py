"""Tile fetch for the review editor: raw + mask + uncertainty of 50 queued tiles, over loopback.

The appliance runs as ``aomas serve`` (waitress) with one processed 256 x 112 x 256 phantom,
whose 256 x 256 en-face image makes 64 tiles; 50 are queued (threshold 0). A client logs in and
fetches each queued tile's ``GET /api/v1/tiles/<id>`` the way the editor does: the first pass
includes reading each run's arrays from the object store, later passes hit the in-memory copy.
Side by side, the same server sends its static editor.js (no database, no image work): the
difference is what building a tile costs. Goal: p95 under 100 ms.
"""

from __future__ import annotations

import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from ingest import aomas_env, send, stop, wait_for_port

from appliance.demo.pacs import free_port
from appliance.demo.study import write_phantom_study
from gpu.phantom import PhantomSpec

AOMAS = str(Path(sys.executable).with_name("aomas"))
PASSWORD = "bench password 123"
PASSES = 5


def wait_for_run(db_path: Path, timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db_path.exists():
            with sqlite3.connect(db_path, timeout=30) as conn:
                row = conn.execute("SELECT run_id, state, reason FROM runs").fetchone()
            if row and row[1] in ("SUCCEEDED", "FAILED"):
                if row[1] == "FAILED":
                    raise SystemExit(f"the run failed: {row[2]}")
                return row[0]
        time.sleep(0.2)
    raise SystemExit("the run did not finish")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def timed_get(client: requests.Session, url: str) -> float:
    start = time.perf_counter()
    answer = client.get(url, timeout=30)
    elapsed = time.perf_counter() - start
    answer.raise_for_status()
    return elapsed * 1000


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="aomas-bench-review-") as scratch:
        work = Path(scratch)
        dicom_port, web_port = free_port(), free_port()
        env = {**aomas_env(work, dicom_port), "AOMAS_WEB_BIND": "127.0.0.1",
               "AOMAS_WEB_PORT": str(web_port)}
        (work / "password").write_text(PASSWORD)
        subprocess.run([AOMAS, "init", "--admin-password-file", str(work / "password")],
                       env=env, cwd=work, check=True, capture_output=True)
        write_phantom_study(work / "study", PhantomSpec(seed=31, b_scans=256, depth=112,
                                                        a_lines=256))
        with open(work / "serve.log", "w") as log:
            appliance = subprocess.Popen([AOMAS, "serve"], env=env, cwd=work,
                                         stdout=subprocess.DEVNULL, stderr=log)
        try:
            wait_for_port(dicom_port, appliance)
            send(dicom_port, sorted((work / "study" / "dicom").glob("*.dcm")))
            wait_for_run(work / "var" / "aomas.db")
            measure(f"http://127.0.0.1:{web_port}")
        finally:
            stop(appliance)


def measure(url: str) -> None:
    client = requests.Session()
    answer = client.post(f"{url}/api/v1/session",
                         json={"username": "admin", "password": PASSWORD}, timeout=30)
    answer.raise_for_status()
    queue = client.get(f"{url}/api/v1/active-learning/queue",
                       params={"uncertainty_threshold": 0, "limit": 50}, timeout=30).json()
    tile_ids = [t["tile_id"] for t in queue["tiles"]]
    start = time.perf_counter()
    size = len(client.get(f"{url}/api/v1/tiles/{tile_ids[0]}", timeout=30).content)
    first_ms = (time.perf_counter() - start) * 1000  # reads the run's arrays from the store
    cold = [timed_get(client, f"{url}/api/v1/tiles/{tile_id}") for tile_id in tile_ids[1:]]
    warm, static = [], []
    for _ in range(PASSES):
        for tile_id in tile_ids:
            warm.append(timed_get(client, f"{url}/api/v1/tiles/{tile_id}"))
            static.append(timed_get(client, f"{url}/static/editor.js"))
    everything = [first_ms] + cold + warm
    print(f"tile fetch over loopback: {len(tile_ids)} tiles queued, {size} bytes each "
          f"(3 PNGs in JSON), {len(everything)} fetches")
    print(f"{'':28}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}")
    print(f"first tile of the run (reads its arrays from the object store): {first_ms:.1f} ms")
    for name, values in (("tile, first pass", cold), (f"tile, {PASSES} more passes", warm),
                         ("all tile fetches", everything), ("static editor.js (peer)", static)):
        print(f"{name:28}{statistics.median(values):9.1f}{percentile(values, 95):9.1f}"
              f"{max(values):9.1f}")
    p95 = percentile(everything, 95)
    print(f"tile p95 / static p95 = {p95 / percentile(static, 95):.1f}x; goal p95 < 100 ms: "
          f"{'met' if p95 < 100 else 'NOT met'}")


if __name__ == "__main__":
    main()
