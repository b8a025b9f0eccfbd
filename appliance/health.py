"""Health: the state of each component, for ``GET /healthz`` and ``aomas doctor``."""

from __future__ import annotations

import shutil
import sqlite3
from typing import Any

from appliance import tls
from appliance.config import Config
from appliance.exceptions import ConfigurationError
from appliance.queue import make_huey
from dicom.send import probe


def check(config: Config, *, services: bool = True) -> dict[str, Any]:
    """Each component's state; without ``services``, only what needs no running part (an
    installer's check before the services start)."""
    components = {
        "db": _check_db(config),
        "queue": _check_queue(config),
        "disk": _check_disk(config),
    }
    if services:
        components["scp"] = _check_scp(config)
    return {"ok": all(c["ok"] for c in components.values()), "components": components}


def _check_db(config: Config) -> dict[str, Any]:
    path = config.data_dir / "aomas.db"
    if not path.exists():
        return {"ok": False, "error": f"{path} does not exist; run `aomas init`"}
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            migrations = conn.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0]
            states = dict(conn.execute("SELECT state, count(*) FROM runs GROUP BY state"))
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as error:
        return {"ok": False, "error": str(error)}
    return {"ok": True, "migrations_applied": migrations, "journal_mode": mode, "runs": states}


def _check_queue(config: Config) -> dict[str, Any]:
    try:
        huey = make_huey(config)
        return {"ok": True, "backend": config.queue.backend, "pending": huey.pending_count()}
    except Exception as error:  # a Redis that is down raises its own error types
        return {"ok": False, "backend": config.queue.backend, "error": str(error)}


def _check_scp(config: Config) -> dict[str, Any]:
    host = "127.0.0.1" if config.dicom.bind in ("0.0.0.0", "") else config.dicom.bind
    try:
        tls_args = tls.probe_tls_args(config)
    except ConfigurationError as error:
        return {"ok": False, "address": f"{host}:{config.dicom.port}", "error": str(error)}
    answer = probe(host, config.dicom.port, called_ae=config.dicom.ae_title, tls_args=tls_args)
    # A rejection (calling AE not on the allow-list) still proves the SCP is up and answering.
    result = {"ok": answer in ("accepted", "rejected"), "address": f"{host}:{config.dicom.port}",
              "answer": answer, "tls": tls_args is not None}
    if not result["ok"]:
        result["error"] = "no DICOM answer; is `aomas scp` (or `aomas serve`) running?"
    return result


def _check_disk(config: Config) -> dict[str, Any]:
    path = config.data_dir if config.data_dir.exists() else config.data_dir.parent
    free_mb = shutil.disk_usage(path).free // 2**20
    watermark = config.dicom.min_free_disk_mb
    return {"ok": free_mb >= watermark, "free_mb": free_mb, "watermark_mb": watermark}
