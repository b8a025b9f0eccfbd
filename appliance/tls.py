"""The box's TLS settings turned into contexts: the SCP's, its own health probe's, and each
TLS destination's (``dicom.tls`` builds them; this module knows the settings)."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator

from appliance.config import Config
from appliance.exceptions import ConfigurationError
from dicom import tls


@contextlib.contextmanager
def _settings_named(what: str) -> Iterator[None]:
    """A certificate problem as the configuration error it is, naming whose settings."""
    try:
        yield
    except tls.TlsSetupError as error:
        raise ConfigurationError(f"{what}: {error}") from None


def enabled(config: Config) -> bool:
    return bool(config.dicom.tls_certificate or config.dicom.tls_private_key)


def scp_context(config: Config) -> ssl.SSLContext | None:
    """None when the SCP speaks plain TCP."""
    if not enabled(config):
        return None
    dicom = config.dicom
    with _settings_named("dicom TLS"):
        return tls.server_context(
            certificate=dicom.tls_certificate, private_key=dicom.tls_private_key,
            ca_certificates=dicom.tls_ca_certificates,
            require_client_certificate=dicom.tls_require_client_certificate)


def probe_tls_args(config: Config) -> tuple[ssl.SSLContext, str | None] | None:
    """How the box's health check reaches its own SCP: with its own certificate, trusting
    its own certificate (loopback: no host name to check)."""
    if not enabled(config):
        return None
    dicom = config.dicom
    with _settings_named("dicom TLS"):
        return tls.client_context(
            ca_certificates=dicom.tls_ca_certificates or dicom.tls_certificate,
            certificate=dicom.tls_certificate, private_key=dicom.tls_private_key,
            check_hostname=False), None


def destination_tls_args(destination: dict) -> tuple[ssl.SSLContext, str] | None:
    """The context and the server name to check for a TLS destination; None for plain TCP.
    Built per send, so a renewed certificate is used without a restart."""
    if not destination["tls"]:
        return None
    with _settings_named(f"destination '{destination['name']}'"):
        context = tls.client_context(
            ca_certificates=destination["tls_ca_certificates"],
            certificate=destination["tls_certificate"],
            private_key=destination["tls_private_key"])
    return context, destination["tls_server_name"] or destination["host"]
