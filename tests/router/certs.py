"""Certificates for the TLS tests, made with `cryptography` (no CA: each one signs itself),
and a TLS client that says what the router answered with."""

from __future__ import annotations

import datetime
import socket
import ssl
import warnings
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NOW = datetime.datetime.now(datetime.UTC)


def make_cert(
    folder: Path,
    name: str,
    hosts: list[str],
    days: float = 30,
    start: datetime.datetime | None = None,
) -> tuple[Path, Path]:
    """A certificate with CN `name` for `hosts`, and its key: (cert, key) files."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    begin = start or NOW - datetime.timedelta(days=1)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(begin)
        .not_valid_after(begin + datetime.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Handshake:
    version: str | None
    subject: str  # the certificate's CN
    alpn: str | None


def client_context(
    low: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2, high: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    """A client that takes any certificate (the tests look at which one came)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if low < ssl.TLSVersion.TLSv1_2:  # OpenSSL 3 refuses old versions itself otherwise
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():  # asking for TLS 1.0 or 1.1 is the point here
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = low
        if high is not None:
            context.maximum_version = high
    context.set_alpn_protocols(["http/1.1"])
    return context


def handshake(
    port: int, server_name: str | None, context: ssl.SSLContext | None = None
) -> Handshake:
    """Connect, shake hands with SNI `server_name` (none: no SNI), and hang up."""
    context = context or client_context()
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        return Handshake(tls.version(), common_name(tls), tls.selected_alpn_protocol())


def common_name(tls: ssl.SSLSocket) -> str:
    der = tls.getpeercert(binary_form=True)
    assert der is not None
    names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value)
