"""Fixtures: the appliance as real processes on free loopback ports, DCMTK as the scanner.

Nothing here mocks a peer. Each test that needs the appliance gets its own data dir and ports.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from appliance.demo.pacs import LocalOrthanc, free_port
from appliance.demo.study import write_phantom_study
from dicom.send import probe
from gpu.phantom import PhantomSpec

AOMAS = str(Path(sys.executable).with_name("aomas"))
# Small phantoms keep the suite fast on two cores; the geometry is the same as the default.
SMALL = {"b_scans": 24, "depth": 112, "a_lines": 64}


def need(tool: str) -> str:
    """Path of a peer program; a missing one fails the test (`make test` installs them)."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed; run `make test`, which installs it")
    return path


def toml_value(value) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


class Box:
    """One appliance: its configuration, data dir and the processes running it."""

    def __init__(self, root: Path, **overrides):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.data_dir = root / "var"
        self.dicom_port = free_port()
        self.web_port = free_port()
        settings = {
            "appliance": {"data_dir": str(self.data_dir), "log_level": "INFO"},
            "dicom": {"bind": "127.0.0.1", "port": self.dicom_port, "series_idle_seconds": 1.0,
                      "min_free_disk_mb": 1},
            "web": {"bind": "127.0.0.1", "port": self.web_port},
            "worker": {"lease_seconds": 3.0, "reconcile_seconds": 1.0,
                       "retry_base_seconds": 0.3},
        }
        destinations = overrides.pop("destinations", [])
        for dotted, value in overrides.items():
            section, key = dotted.split("__")
            settings.setdefault(section, {})[key] = value
        lines = []
        for section, table in settings.items():
            lines.append(f"[{section}]")
            lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
        for table in destinations:
            lines.append("[[destinations]]")
            lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
        self.config_path = root / "aomas.toml"
        self.config_path.write_text("\n".join(lines) + "\n")
        self.processes: dict[str, subprocess.Popen] = {}
        self.tls_args = None     # how wait_for_scp reaches an SCP that speaks DICOM TLS

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "AOMAS_CONFIG": str(self.config_path)}

    def aomas(self, *args: str, check: bool = True, timeout: float = 120,
              **kwargs) -> subprocess.CompletedProcess:
        result = subprocess.run([AOMAS, *args], env=self.env, cwd=self.root, text=True,
                                capture_output=True, timeout=timeout, **kwargs)
        if check and result.returncode != 0:
            raise AssertionError(f"aomas {' '.join(args)} failed:\n{result.stdout}\n"
                                 f"{result.stderr}")
        return result

    def start(self, part: str = "serve", *args: str) -> subprocess.Popen:
        log = open(self.root / f"{part}.log", "a")
        process = subprocess.Popen([AOMAS, part, *args], env=self.env, cwd=self.root, stdout=log,
                                   stderr=subprocess.STDOUT)
        self.processes[part] = process
        if part in ("serve", "scp"):
            self.wait_for_scp(process)
        return process

    def wait_for_scp(self, process: subprocess.Popen, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"aomas exited early:\n{self.log()}")
            if probe("127.0.0.1", self.dicom_port, tls_args=self.tls_args) in ("accepted",
                                                                               "rejected"):
                return
            time.sleep(0.1)
        raise AssertionError(f"the SCP did not answer within {timeout} s:\n{self.log()}")

    def kill(self, part: str, signum: int = signal.SIGKILL) -> None:
        process = self.processes.pop(part)
        process.send_signal(signum)
        process.wait(timeout=30)

    def stop_all(self) -> None:
        for part in list(self.processes):
            process = self.processes[part]
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
            self.processes.pop(part)

    def log(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.root.glob("*.log")))

    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.data_dir / "aomas.db", timeout=30)
        conn.row_factory = sqlite3.Row
        return conn

    def query(self, sql: str, params=()) -> list[sqlite3.Row]:
        conn = self.db()
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def runs_for_series(self, series_instance_uid: str) -> list[sqlite3.Row]:
        return self.query("SELECT r.* FROM runs r JOIN cases c USING (case_id) "
                          "WHERE c.series_instance_uid = ? ORDER BY r.queued_at",
                          (series_instance_uid,))

    def wait_for_run(self, series_instance_uid: str, states=("SUCCEEDED", "FAILED"),
                     timeout: float = 60, count: int = 1) -> sqlite3.Row:
        """The newest run of the series once it reaches one of ``states``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self.data_dir / "aomas.db").exists():
                rows = self.runs_for_series(series_instance_uid)
                if len(rows) >= count and rows[-1]["state"] in states:
                    return rows[-1]
            time.sleep(0.05)
        raise AssertionError(f"no run of the series reached {states} in {timeout} s; runs: "
                             f"{[dict(r) for r in self.runs_for_series(series_instance_uid)]}"
                             f"\n{self.log()[-4000:]}")

    def object_files(self) -> list[Path]:
        return sorted(p for p in (self.data_dir / "objects").rglob("*") if p.is_file())


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    b = Box(tmp_path)
    yield b
    b.stop_all()


@pytest.fixture
def make_box(tmp_path: Path):
    boxes = []

    def make(**overrides) -> Box:
        root = tmp_path / f"box{len(boxes)}"
        root.mkdir()
        boxes.append(Box(root, **overrides))
        return boxes[-1]

    yield make
    for b in boxes:
        b.stop_all()


@pytest.fixture(scope="session")
def studies(tmp_path_factory) -> dict[str, dict]:
    """Small phantom studies shared by the tests: multi-frame, and split per B-scan."""
    root = tmp_path_factory.mktemp("studies")
    out = {}
    for name, seed, split in (("multiframe", 11, False), ("split", 12, True)):
        truth = write_phantom_study(root / name, PhantomSpec(seed=seed, **SMALL),
                                    split_frames=split)
        out[name] = {**truth, "dir": root / name / "dicom"}
    return out


def storescu(port: int, *paths: Path | str, aet: str = "STORESCU", extra=()) -> \
        subprocess.CompletedProcess:
    """DCMTK's storescu as the scanner; -v so the log shows each store response."""
    if any(Path(p).is_dir() for p in paths) and "+sd" not in extra:
        extra = ["+sd", *extra]
    args = [need("storescu"), "-v", "-aet", aet, "-aec", "AOMAS", *extra, "127.0.0.1",
            str(port), *map(str, paths)]
    return subprocess.run(args, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="session")
def run_outputs(tmp_path_factory) -> dict:
    """One run of a small phantom through the pipeline, its outputs in an object store (both
    layer SEG types), and the same run written a second time."""
    import io

    import numpy as np

    from appliance.pipeline import run_pipeline
    from appliance.registry import model_record
    from appliance.storage import ObjectStore

    root = tmp_path_factory.mktemp("outputs")
    write_phantom_study(root / "study", PhantomSpec(seed=7, **SMALL))
    paths = sorted((root / "study" / "dicom").glob("*.dcm"))
    record, store = model_record(), ObjectStore(root / "data")
    run = {"run_id": "r" * 32, "queued_at": 1_800_000_000.0,
           "manifest": {"model": record.manifest_entry(),
                        "pipeline": {"package": "0.1.0", "commit": "abc"}}}
    stages: list[str] = []
    run_result = run_pipeline(run, paths, store, record,
                              segmentation_types=("BINARY", "LABELMAP"), on_stage=stages.append)
    # "result" as the worker stores it (JSON); "run_result" as readers get it back.
    result = run_result.to_json()
    again = run_pipeline(run, paths, store, record,
                         segmentation_types=("BINARY", "LABELMAP")).to_json()
    objects = {o["kind"]: store.path_for(o["sha256"]) for o in result["outputs"]}
    npz = np.load(io.BytesIO(store.path_for(result["artifacts"]["preprocessed_npz"])
                             .read_bytes()))
    return {"result": result, "run_result": run_result, "again": again, "objects": objects,
            "npz": npz, "store": store, "run_id": run["run_id"], "stages": stages}


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([need("openssl"), *args], cwd=cwd, check=True, capture_output=True)


def _issue(directory: Path, name: str, ca: str, *, server: bool) -> None:
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)
    extensions = directory / f"{name}.ext"
    usage = "serverAuth, clientAuth" if server else "clientAuth"
    extensions.write_text("subjectAltName = DNS:localhost, IP:127.0.0.1\n"
                          f"extendedKeyUsage = {usage}\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "2", "-sha256", "-extfile", extensions.name,
             "-out", f"{name}.crt", cwd=directory)


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Path:
    """Certificates made by openssl for the TLS tests: site-ca signs the box, the scanner and
    the PACS; rogue-ca signs an intruder."""
    directory = tmp_path_factory.mktemp("pki")
    for ca in ("site-ca", "rogue-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key",
                 "-out", f"{ca}.crt", "-days", "2", "-subj", f"/CN={ca}", cwd=directory)
    _issue(directory, "box", "site-ca", server=True)
    _issue(directory, "pacs", "site-ca", server=True)
    _issue(directory, "scanner", "site-ca", server=False)
    _issue(directory, "intruder", "rogue-ca", server=False)
    for key in directory.glob("*.key"):
        key.chmod(0o600)
    return directory


class Orthanc(LocalOrthanc):
    """A real Orthanc as the PACS, on free loopback ports, its storage under the test's dir."""

    def get(self, path: str):
        return self.client().get_json(path)

    def instances(self) -> list[dict]:
        return [self.get(f"/instances/{i}/simplified-tags") for i in self.get("/instances")]

    def stop(self) -> None:
        # A test's Orthanc keeps nothing worth a clean shutdown (its storage is the test's
        # tmp dir): killed, it is gone at once instead of in ~2 s.
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    pacs = Orthanc(tmp_path / "orthanc")
    yield pacs
    pacs.stop()


PASSWORD = "correct horse battery"
# One account per role (and a second labeler for blind review and conflicts).
ACCOUNTS = {"admin": "admin", "lena": "labeler", "lars": "labeler", "carl": "clinician",
            "mia": "ml-engineer", "rita": "researcher"}


class ReviewBox:
    """A running appliance (``aomas serve``) with one processed phantom, an account per role
    and a real Orthanc as its PACS; ``login`` gives a requests session that sends the CSRF
    token on writes."""

    def __init__(self, box: Box, run_id: str, pacs: Orthanc):
        self.box, self.run_id, self.pacs = box, run_id, pacs
        self.url = f"http://127.0.0.1:{box.web_port}"

    def login(self, username: str, password: str = PASSWORD):
        import requests

        client = requests.Session()
        answer = client.post(f"{self.url}/api/v1/session",
                             json={"username": username, "password": password}, timeout=30)
        assert answer.status_code == 201, answer.text
        client.headers["X-CSRF-Token"] = answer.json()["csrf_token"]
        return client

    def tiles(self) -> list[sqlite3.Row]:
        return self.box.query("SELECT * FROM tiles WHERE run_id = ? ORDER BY tile_id",
                              (self.run_id,))

    def untouched_tile_id(self) -> int:
        """A tile nobody has labelled or flagged yet (earlier tests, the fuzz run included,
        write to the same box)."""
        rows = self.box.query(
            "SELECT tile_id FROM tiles WHERE run_id = ? AND head_version = 0 AND tile_id NOT "
            "IN (SELECT tile_id FROM adjudications) ORDER BY tile_id", (self.run_id,))
        assert rows, "every tile of the review box has been used; process a larger phantom"
        return rows[0]["tile_id"]


class WebApp:
    """The Flask app in this process on a fresh data dir, flaskr's shape: no server, no worker,
    nothing another test wrote. ``client(username)`` is a test client logged in as that account
    (made on first use with its role from ``ACCOUNTS``) whose writes carry the CSRF token."""

    def __init__(self, root: Path, **overrides):
        from appliance.access.accounts import create_user
        from appliance.config import load_config
        from appliance.services import build
        from ui.app import create_app

        root.mkdir(parents=True, exist_ok=True)
        self.config = load_config(str(Box(root, **overrides).config_path))
        self.appliance = build(self.config)
        self.databases, self.store = self.appliance.databases, self.appliance.store
        self.app = create_app(self.appliance)
        self._create_user = create_user

    @property
    def db(self):
        return self.databases.get()

    def seed_run(self, shape: tuple[int, int] = (64, 96), tile_px: int = 32, *,
                 number: int = 5, cones_px: np.ndarray | None = None,
                 probability: np.ndarray | None = None, model_id: str | None = None,
                 finished_at: float | None = None) -> str:
        """A SUCCEEDED run with review tiles and the arrays the editor reads, written straight
        into this data dir: the review routes' logic without a pipeline run or a server.
        ``number`` makes another case and run; ``cones_px``/``probability`` what the model
        found; ``model_id`` the version it ran with."""
        from appliance import run_result as declared
        from appliance import runs
        from appliance.database import write_transaction
        from appliance.review import tiles

        rng = np.random.default_rng(number)
        if cones_px is None:
            rows, columns = np.mgrid[3:shape[0]:6, 3:shape[1]:6]
            cones_px = np.column_stack([rows.ravel(), columns.ravel()]).astype(float)
        arrays_of_run = {declared.Arrays.enface("ISOS"): rng.random(shape, np.float32),
                         declared.Arrays.enface("COST"): rng.random(shape, np.float32),
                         declared.Arrays.CONE_UNCERTAINTY: rng.random(shape, np.float32) * 0.2,
                         declared.Arrays.CONES_PX: cones_px}
        if probability is not None:
            arrays_of_run[declared.Arrays.CONE_PROBABILITY] = probability
        buffer = io.BytesIO()
        np.savez(buffer, **arrays_of_run)
        arrays = self.store.put_bytes(buffer.getvalue())
        review = declared.ReviewTiles(tile_px, shape, tuple(
            {"row_px": r, "column_px": c, "mean_uncertainty": float(rng.random() * 0.1),
             "error_probability": float(rng.random())}
            for r in range(0, shape[0], tile_px) for c in range(0, shape[1], tile_px)))
        result = declared.RunResult(
            volume=declared.VolumeSummary((shape[0], 100, shape[1]), "uint16",
                                          (0.001, 0.001, 0.001)),
            device="cpu", motion=declared.Motion(0.0, 0.0, 0.0, 0.0), layers={},
            layer_segmentation={},
            cones={"cone_count": len(cones_px)}, cone_regions=(), most_uncertain_tiles=(),
            band_contrast=1.0, needs_review=declared.ReviewFlag(False, (), {"percent": 0.0}),
            artifacts=declared.Artifacts(qc_png=arrays, preprocessed_npz=arrays, cones_csv=arrays),
            outputs=(), stage_seconds={"read_volume": 0.5, "cones": 2.0})
        db, now = self.db, finished_at or time.time()
        uid = "1.2.826.0.1.3680043.10.1455.42" + ("" if number == 5 else f".{number}")
        run_id = "5" * 32 if number == 5 else f"{number:032d}"
        with write_transaction(db):
            db["series"].insert({"series_instance_uid": uid, "study_instance_uid": uid + ".1",
                                 "sop_class_uid": "1.2.840.10008.5.1.4.1.1.77.1.5.4",
                                 "instance_count": 1, "frame_count": shape[0],
                                 "state": "complete", "first_received_at": now})
            case_id = db["cases"].insert({"series_instance_uid": uid, "created_at": now}).last_pk
            db["runs"].insert({"run_id": run_id, "case_id": case_id, "state": runs.SUCCEEDED,
                               "manifest": "{}", "attempts": 1, "queued_at": now,
                               "finished_at": now, "result": json.dumps(result.to_json()),
                               "model_id": model_id, "arm": "production"})
            tiles.record(db, run_id, case_id, review)
        return run_id

    def client(self, username: str | None = None):
        client = self.app.test_client()
        if username is None:
            return client
        self._create_user(self.db, username, PASSWORD, ACCOUNTS[username], actor="test")
        answer = client.post("/api/v1/session",
                             json={"username": username, "password": PASSWORD})
        assert answer.status_code == 201, answer.get_data(as_text=True)
        client.environ_base["HTTP_X_CSRF_TOKEN"] = answer.get_json()["csrf_token"]
        return client


@pytest.fixture
def web_app(tmp_path: Path, monkeypatch) -> WebApp:
    # Accounts are made and logged in per test: a cheap scrypt keeps that quick (the
    # appliance's own cost is tested in tests/test_accounts.py).
    from appliance.access import accounts

    monkeypatch.setattr(accounts, "SCRYPT", {"n": 2**4, "r": 8, "p": 1})
    return WebApp(tmp_path)


def png_of(mask: np.ndarray) -> str:
    """A boolean mask as the API takes it: base64 PNG, 255 = cone."""
    buffer = io.BytesIO()
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def mask_from(tile_json: dict) -> np.ndarray:
    """The mask PNG of a GET /api/v1/tiles/<id> answer as a boolean array."""
    png = base64.b64decode(tile_json["images"]["mask_png"])
    return np.asarray(Image.open(io.BytesIO(png))) > 0


def wait_for_http(url: str, timeout: float = 30) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=2)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout} s")


@pytest.fixture(scope="session")
def review_box(tmp_path_factory) -> Iterator[ReviewBox]:
    root = tmp_path_factory.mktemp("review")
    pacs = Orthanc(root / "orthanc")
    pacs.start()
    box = Box(root, destinations=[{"name": "orthanc", "kind": "dimse",
                                   "ae_title": pacs.ae_title, "host": "127.0.0.1",
                                   "port": pacs.dicom_port}],
              worker__outbox_retry_base_seconds=0.2)
    password_file = root / "password"
    password_file.write_text(PASSWORD)
    box.aomas("init", "--admin-user", "admin", "--admin-password-file", str(password_file))
    for username, role in ACCOUNTS.items():
        if username != "admin":
            box.aomas("user", "add", username, "--role", role, "--password-file",
                      str(password_file))
    # 64 B-scans x 192 A-lines: an en-face image of 2 x 6 tiles, enough for every test that
    # needs a tile nobody has touched (the fuzz run writes to some).
    truth = write_phantom_study(root / "study", PhantomSpec(seed=21, b_scans=64, depth=112,
                                                            a_lines=192))
    box.start("serve")
    try:
        assert storescu(box.dicom_port, root / "study" / "dicom").returncode == 0
        run = box.wait_for_run(truth["series_instance_uid"], timeout=180)
        assert run["state"] == "SUCCEEDED", run["reason"]
        wait_for_http(f"http://127.0.0.1:{box.web_port}/healthz")
        yield ReviewBox(box, run["run_id"], pacs)
    finally:
        box.stop_all()
        pacs.stop()
