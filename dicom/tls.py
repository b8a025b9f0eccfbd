"""TLS contexts for the SCP and the C-STORE sender, after the DICOM BCP 195 profiles.

PS3.15 Annex B ("BCP 195 RFC 8996 TLS Profile", the non-downgrading one): TLS 1.2 or later,
never 1.0 or 1.1 or SSL; in TLS 1.2 only ECDHE/DHE key exchange with AES-GCM or ChaCha20
(forward secrecy, authenticated encryption), as BCP 195 (RFC 9325) recommends; TLS 1.3's
suites are all of that kind. DCMTK's default profile and Orthanc's are the same, so both talk
to us. The peer's certificate must chain to the configured CA bundle; a server asks for the
client's and, by default, refuses a client without one (as DCMTK and Orthanc do).
"""

from __future__ import annotations

import ssl
from pathlib import Path

# RFC 9325 §4.2's recommended TLS 1.2 suites, in OpenSSL's names.
TLS12_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384",
))


class TlsSetupError(ValueError):
    """A certificate, key or CA file is missing or unusable; the message names it."""


def _profile(*, server: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return context


def _load_chain(context: ssl.SSLContext, certificate: str, private_key: str) -> None:
    for what, path in (("certificate", certificate), ("private key", private_key)):
        if not Path(path).is_file():
            raise TlsSetupError(f"TLS {what} {path} does not exist")
    try:
        context.load_cert_chain(certificate, private_key)
    except (ssl.SSLError, OSError) as error:
        raise TlsSetupError(f"TLS certificate {certificate} with key {private_key} is "
                            f"unusable: {error}") from None


def _trust(context: ssl.SSLContext, *bundles: str) -> None:
    for bundle in bundles:
        if not bundle:
            continue
        try:
            context.load_verify_locations(cafile=bundle)
        except (ssl.SSLError, OSError) as error:
            raise TlsSetupError(f"TLS CA certificates {bundle} are unusable: {error}") from None
    # The box's own certificate may be a leaf, not a CA: trust it as an anchor as well.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN


def server_context(*, certificate: str, private_key: str, ca_certificates: str,
                   require_client_certificate: bool) -> ssl.SSLContext:
    """The SCP's context. Clients' certificates are checked against ``ca_certificates`` and
    the box's own certificate (its own health probe presents that one)."""
    context = _profile(server=True)
    _load_chain(context, certificate, private_key)
    if require_client_certificate and not ca_certificates:
        raise TlsSetupError("dicom.tls_require_client_certificate needs "
                            "dicom.tls_ca_certificates, the CA bundle clients must chain to")
    _trust(context, ca_certificates, certificate)
    context.verify_mode = ssl.CERT_REQUIRED if require_client_certificate else ssl.CERT_OPTIONAL
    return context


def client_context(*, ca_certificates: str, certificate: str = "", private_key: str = "",
                   check_hostname: bool = True) -> ssl.SSLContext:
    """A sender's context: the server's certificate must chain to ``ca_certificates``; ours
    is presented when given (a PACS that requires client certificates)."""
    if not ca_certificates:
        raise TlsSetupError("a TLS peer needs a CA bundle to check its certificate against "
                            "(tls_ca_certificates)")
    context = _profile(server=False)
    _trust(context, ca_certificates, certificate)
    context.check_hostname = check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    if certificate:
        _load_chain(context, certificate, private_key)
    return context
