"""Settings: every key declared once, with its default and a one-line help.

The configuration is one TOML file. Which file: ``--config PATH``, else ``$AOMAS_CONFIG``, else
``./aomas.toml``, else ``/etc/aomas/aomas.toml``, else the built-in defaults below.
``AOMAS_<SECTION>_<KEY>`` environment variables override single keys.

``[[destinations]]`` is a list of tables (one per PACS) and is described by ``DESTINATION_KEYS``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from appliance.exceptions import ConfigurationError
from dicom.segmentation import BINARY, SEGMENTATION_TYPES


@dataclass(frozen=True)
class Setting:
    section: str
    key: str
    default: Any
    help: str

    @property
    def env_var(self) -> str:
        return f"AOMAS_{self.section.upper()}_{self.key.upper()}"


SETTINGS: tuple[Setting, ...] = (
    Setting("appliance", "data_dir", "var",
            "Directory for everything the appliance writes: database, object store, spool, queue."),
    Setting("appliance", "device_serial_number", "",
            "This box's serial in every output's equipment attributes; empty = the host name."),
    Setting("appliance", "log_level", "INFO", "Python log level: DEBUG, INFO, WARNING or ERROR."),
    Setting("dicom", "ae_title", "AOMAS", "Our AE title, the Called AE that scanners address."),
    Setting("dicom", "bind", "0.0.0.0", "Address the DICOM SCP listens on."),
    Setting("dicom", "port", 11112, "TCP port the DICOM SCP listens on."),
    Setting("dicom", "allowed_calling_aes", [],
            "Calling AE titles allowed to associate; empty accepts any (logged as a warning)."),
    Setting("dicom", "series_idle_seconds", 10.0,
            "Quiet time after which a multi-instance series counts as complete."),
    Setting("dicom", "max_associations", 10,
            "Concurrent associations; more are rejected as transient so senders retry."),
    Setting("dicom", "max_associations_per_peer", 4,
            "Open connections one IP address may hold; beyond it a new one is closed at once, so "
            "one sender (or attacker) cannot take every slot."),
    Setting("dicom", "association_request_seconds", 5.0,
            "A connection must deliver its complete association request within this time."),
    Setting("dicom", "pdu_seconds", 30.0,
            "Each later PDU must arrive whole within this time of its first byte, or the "
            "association is aborted (a stalled or dripping sender)."),
    Setting("dicom", "idle_seconds", 60.0,
            "An association that sends nothing for this long is aborted."),
    Setting("dicom", "max_pdu_bytes", 4_194_304,
            "Maximum PDU size we advertise to senders; a longer PDU is refused unread."),
    Setting("dicom", "min_free_disk_mb", 1024,
            "Refuse C-STORE with 0xA700 when the data dir's disk has less free space than this."),
    Setting("dicom", "spool_stale_seconds", 300.0,
            "Spool files untouched this long belong to transfers that died; they are deleted."),
    Setting("dicom", "tls_certificate", "",
            "PEM certificate (chain) of this box; with dicom.tls_private_key the SCP port "
            "speaks DICOM TLS only (BCP 195 profile: TLS 1.2+), and TLS destinations present "
            "it as the client certificate. Empty = plain TCP."),
    Setting("dicom", "tls_private_key", "",
            "PEM private key of dicom.tls_certificate, readable by the aomas user only."),
    Setting("dicom", "tls_ca_certificates", "",
            "PEM bundle of the CAs that scanners' client certificates, and TLS destinations' "
            "server certificates, must chain to."),
    Setting("dicom", "tls_require_client_certificate", True,
            "With TLS on, refuse a scanner that presents no valid client certificate (DCMTK "
            "and Orthanc do the same by default)."),
    Setting("web", "bind", "127.0.0.1", "Address the review page and JSON API listen on."),
    Setting("web", "port", 8080, "TCP port of the review page and JSON API."),
    Setting("web", "secure_cookies", False,
            "Send the session cookie over HTTPS only (and HSTS); turn on behind a TLS proxy."),
    Setting("web", "trusted_proxy", "",
            "Address of the reverse proxy that terminates HTTPS (nginx on this box: "
            "127.0.0.1); its X-Forwarded-For and X-Forwarded-Proto are believed, so rate "
            "limits, the audit log and the address allow-lists see the real client. Empty = "
            "no proxy: those headers are ignored."),
    Setting("web", "session_idle_minutes", 30.0,
            "A web session without a request for this long ends; the user logs in again."),
    Setting("web", "health_detail_addresses", ["127.0.0.1", "::1"],
            "Addresses whose anonymous GET /healthz gets each component's state (a monitor); "
            "others get only ok. Behind a reverse proxy on this box, list the monitor instead."),
    Setting("web", "threads", 8, "Requests the web server handles at the same time."),
    Setting("web", "metrics_addresses", ["127.0.0.1", "::1"],
            "Addresses that may read GET /metrics without a session (Prometheus); others need "
            "an admin's session."),
    Setting("web", "max_upload_mb", 2048,
            "Largest body POST /api/v1/cases takes (its files together): a 512-B-scan 16-bit "
            "volume with room to spare. Every other request is limited to 64 MiB."),
    Setting("queue", "backend", "sqlite",
            "Huey storage: 'sqlite' (one box) or 'redis' (workers on several boxes)."),
    Setting("queue", "redis_url", "redis://127.0.0.1:6379/0", "Redis URL when backend = 'redis'."),
    Setting("worker", "lease_seconds", 60.0,
            "A RUNNING run whose worker has not renewed its lease for this long is re-queued."),
    Setting("worker", "reconcile_seconds", 15.0,
            "How often the worker re-queues lost runs and fails runs past their deadline."),
    Setting("worker", "run_deadline_seconds", 3600.0,
            "A run still unfinished this long after it was queued is failed."),
    Setting("worker", "max_retries", 3, "Retries of a run after a transient error."),
    Setting("worker", "retry_base_seconds", 2.0,
            "First retry delay; doubles each retry, with random jitter."),
    Setting("worker", "outbox_retry_base_seconds", 5.0,
            "First delay before re-sending an output a PACS did not take; doubles, with jitter, "
            "up to an hour."),
    Setting("worker", "outbox_dead_after_seconds", 86400.0,
            "An output still not delivered this long after its run finished goes to the dead "
            "letter (re-send with `aomas outbox retry`)."),
    Setting("pipeline", "seed", 0, "Random seed recorded in every run manifest."),
    Setting("pipeline", "model_dir", "",
            "Model directory (weights.safetensors with both networks + model_card.json); empty = "
            "bundled bootstrap. Runs use it only while the registry names no production "
            "version (`aomas init` registers the bundled one as production)."),
    Setting("pipeline", "uncertainty_samples", 6,
            "Monte Carlo dropout passes for per-pixel cone uncertainty (1 = none)."),
    Setting("pipeline", "predictor", "torch",
            "Network inference: 'torch' (CPU or CUDA) or 'tensorrt' (fp16 engines; needs [gpu])."),
    Setting("pipeline", "gpu", "auto",
            "Preprocess with CuPy on an NVIDIA GPU: 'auto' (when one is usable) or 'off'."),
    Setting("models", "gate_min_f1", 0.90,
            "A model's gate: its mean cone F1 over the evaluation set must reach this."),
    Setting("models", "gate_max_ece", 0.05,
            "A model's gate: its detection ECE (the worse family's) may not exceed this."),
    Setting("models", "evaluation_seeds", "1-6",
            "Phantom seeds of the gate's evaluation set, each in both families (e.g. 1-6)."),
    Setting("models", "training_memory_mb", 16384,
            "Address space a retraining process (`aomas train --from-reviews`) may use; "
            "beyond it the training stops and nothing is registered."),
    Setting("drift", "min_reviewed_cases", 10,
            "Reviewed cases the weekly drift check needs; it widens its window up to four "
            "weeks to find them, else reports 'insufficient labels'."),
    Setting("drift", "ece_margin", 0.02,
            "The drift check alerts when the lower bound of the ECE's 95 % interval exceeds "
            "models.gate_max_ece plus this margin."),
    Setting("export", "date_shift_days", 0,
            "De-identified exports shift every date this many days back; 0 = a random shift "
            "of 62 to 730 days, one per export (intervals within an export are kept)."),
    Setting("alerts", "webhook_urls", [],
            "URLs that get each alert as Alertmanager-shaped JSON (Alertmanager, Grafana, a "
            "Slack relay); no patient data is ever in an alert."),
    Setting("alerts", "email_to", [], "Addresses that get each alert by e-mail."),
    Setting("alerts", "email_from", "aomas@localhost", "Sender of the alert e-mails."),
    Setting("alerts", "smtp_host", "localhost", "SMTP server for alert e-mails."),
    Setting("alerts", "smtp_port", 25, "Its port."),
    Setting("alerts", "retry_base_seconds", 30.0,
            "First delay before an alert that could not be delivered is tried again; doubles "
            "up to an hour."),
)

DESTINATION_KEYS: dict[str, str] = {
    "name": "Short name of the PACS, shown in the outbox.",
    "kind": "'dimse' (C-STORE) or 'orthanc' (REST).",
    "ae_title": "Called AE title of the PACS (kind = 'dimse').",
    "host": "Host of the PACS (kind = 'dimse').",
    "port": "DICOM port of the PACS (kind = 'dimse').",
    "url": "Base URL of the Orthanc REST API (kind = 'orthanc').",
    "username": "HTTP user for the Orthanc REST API (kind = 'orthanc'); empty = none.",
    "password_file": "File holding that user's password (kind = 'orthanc'), readable by the "
                     "worker only; never put the password itself in this file.",
    "transfer_syntax": "How pixels travel: 'uncompressed' (default), 'rle' or 'jpeg-ls' "
                       "(both lossless; sent as stored where the PACS or the pixels refuse).",
    "objects": "Output kinds to send (default all): derived_opt, enface_isos, enface_cost, "
               "layer_seg, cone_seg, report.",
    "segmentation": "Layer SEG type for this PACS: 'BINARY' (default) or 'LABELMAP'.",
    "tls": "C-STORE over DICOM TLS (kind = 'dimse'); default false.",
    "tls_ca_certificates": "CA bundle the PACS's certificate must chain to; default "
                           "dicom.tls_ca_certificates.",
    "tls_server_name": "Name the PACS's certificate must carry; default its host.",
    "tls_certificate": "Client certificate presented to the PACS; default "
                       "dicom.tls_certificate (empty: none).",
    "tls_private_key": "Its key; default dicom.tls_private_key.",
}

# What a destination may ask for (appliance/outputs.py builds them; kept here so the
# configuration needs no DICOM imports).
OUTPUT_KINDS = ("derived_opt", "enface_isos", "enface_cost", "layer_seg", "cone_seg", "report")
TRANSFER_SYNTAX_NAMES = ("uncompressed", "rle", "jpeg-ls")  # dicom/transfer_syntax.py maps them

SYSTEM_CONFIG = Path("/etc/aomas/aomas.toml")


@dataclass(frozen=True)
class Config:
    """The effective configuration: one namespace per section, plus the destinations."""

    appliance: SimpleNamespace
    dicom: SimpleNamespace
    web: SimpleNamespace
    queue: SimpleNamespace
    worker: SimpleNamespace
    pipeline: SimpleNamespace
    models: SimpleNamespace
    drift: SimpleNamespace
    export: SimpleNamespace
    alerts: SimpleNamespace
    destinations: tuple[dict, ...]
    source: str

    @property
    def data_dir(self) -> Path:
        return Path(self.appliance.data_dir)


def find_config_file(explicit: str | None, environ: dict[str, str]) -> Path | None:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigurationError(f"config file {path} does not exist")
        return path
    if environ.get("AOMAS_CONFIG"):
        path = Path(environ["AOMAS_CONFIG"])
        if not path.is_file():
            raise ConfigurationError(f"AOMAS_CONFIG names {path}, which does not exist")
        return path
    for candidate in (Path("aomas.toml"), SYSTEM_CONFIG):
        if candidate.is_file():
            return candidate
    return None


def load_config(explicit: str | None = None, environ: dict[str, str] | None = None) -> Config:
    """Read the configuration the way the command line does; see the module docstring."""
    environ = dict(os.environ if environ is None else environ)
    path = find_config_file(explicit, environ)
    document: dict[str, Any] = {}
    if path is not None:
        try:
            document = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise ConfigurationError(f"{path} is not valid TOML: {error}") from None

    known = {(s.section, s.key) for s in SETTINGS}
    for section, table in document.items():
        if section == "destinations":
            continue
        if not isinstance(table, dict) or section not in {s.section for s in SETTINGS}:
            raise ConfigurationError(f"{path}: unknown section [{section}]")
        for key in table:
            if (section, key) not in known:
                raise ConfigurationError(f"{path}: unknown key '{key}' in [{section}]")

    values: dict[str, dict[str, Any]] = {}
    for setting in SETTINGS:
        value = document.get(setting.section, {}).get(setting.key, setting.default)
        if setting.env_var in environ:
            value = _parse_env(setting, environ[setting.env_var])
        values.setdefault(setting.section, {})[setting.key] = _coerce(setting, value, path)

    values["appliance"]["data_dir"] = str(Path(values["appliance"]["data_dir"]).resolve())
    destinations = tuple(_with_tls_defaults(destination_profile(d, path), values["dicom"], path)
                         for d in document.get("destinations", []))
    names = [d["name"] for d in destinations]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"{path}: two [[destinations]] share a name; the outbox "
                                 "tells them apart by name")
    sections = {name: SimpleNamespace(**table) for name, table in values.items()}
    return Config(**sections, destinations=destinations,
                  source=str(path) if path else "built-in defaults")


def _parse_env(setting: Setting, text: str) -> Any:
    if isinstance(setting.default, list):
        return [item.strip() for item in text.split(",") if item.strip()]
    return text


def _coerce(setting: Setting, value: Any, path: Path | None) -> Any:
    where = f"{setting.section}.{setting.key}"
    kind = type(setting.default)
    try:
        if kind is list:
            if not isinstance(value, list):
                raise TypeError
            return [str(item) for item in value]
        if kind is bool:
            if isinstance(value, str):
                return value.lower() in ("1", "true", "yes", "on")
            return bool(value)
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"{where} must be a {kind.__name__}, got {value!r} (from {path or 'environment'})"
        ) from None


def destination_profile(table: dict, path: Path | None = None) -> dict:
    """One ``[[destinations]]`` table checked, with every key's default filled in."""
    unknown = set(table) - set(DESTINATION_KEYS)
    if unknown:
        raise ConfigurationError(f"{path}: unknown key(s) {sorted(unknown)} in [[destinations]]")
    kind = table.get("kind", "dimse")
    if kind not in ("dimse", "orthanc"):
        raise ConfigurationError(f"{path}: destination kind must be 'dimse' or 'orthanc'")
    if "name" not in table:
        raise ConfigurationError(f"{path}: every [[destinations]] entry needs a name")
    if kind == "orthanc" and "url" not in table:
        raise ConfigurationError(f"{path}: destination '{table['name']}' needs a url")
    if table.get("segmentation", BINARY) not in SEGMENTATION_TYPES:
        raise ConfigurationError(f"{path}: destination '{table['name']}' segmentation must be "
                                 f"one of {', '.join(SEGMENTATION_TYPES)}")
    if table.get("transfer_syntax", "uncompressed") not in TRANSFER_SYNTAX_NAMES:
        raise ConfigurationError(f"{path}: destination '{table['name']}' transfer_syntax must "
                                 f"be one of {', '.join(TRANSFER_SYNTAX_NAMES)}")
    if not isinstance(table.get("tls", False), bool):
        raise ConfigurationError(f"{path}: destination '{table['name']}' tls must be true or "
                                 "false")
    unknown_kinds = set(table.get("objects", OUTPUT_KINDS)) - set(OUTPUT_KINDS)
    if unknown_kinds:
        raise ConfigurationError(f"{path}: destination '{table['name']}' names unknown "
                                 f"object kind(s) {sorted(unknown_kinds)}; known: "
                                 f"{', '.join(OUTPUT_KINDS)}")
    return {"kind": kind, "ae_title": "PACS", "host": "127.0.0.1", "port": 4242,
            "objects": list(OUTPUT_KINDS), "segmentation": BINARY,
            "transfer_syntax": "uncompressed", "username": "", "password_file": "",
            "tls": False, "tls_server_name": "", **table}


def _with_tls_defaults(destination: dict, dicom: dict, path: Path | None) -> dict:
    """A TLS destination's CA bundle and client identity default to the box's own."""
    for key in ("tls_ca_certificates", "tls_certificate", "tls_private_key"):
        destination[key] = destination.get(key) or dicom[key]
    if destination["tls"] and not destination["tls_ca_certificates"]:
        raise ConfigurationError(f"{path}: destination '{destination['name']}' has tls = true "
                                 "but no CA bundle to check the PACS's certificate: set its "
                                 "tls_ca_certificates or dicom.tls_ca_certificates")
    return destination


def reference_markdown() -> str:
    """The configuration reference as a Markdown table (kept in the README)."""
    lines = ["| key | default | environment | meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = f"`{s.default!r}`".replace("'", '"')
        lines.append(f"| `{s.section}.{s.key}` | {default} | `{s.env_var}` | {s.help} |")
    for key, text in DESTINATION_KEYS.items():
        lines.append(f"| `destinations[].{key}` | | | {text} |")
    return "\n".join(lines)
