"""`[router] tls`: TLS at the front door, read from the stack file and its certificate
files checked where the stack file names them.

    tls = "self-signed"                                  # development: sqlifier makes one
    tls = { cert = "certs/shop.pem", key = "certs/shop.key" }
    tls = { certs = [{ cert = "a.pem", key = "a.key" }, { cert = "b.pem", key = "b.key" }],
            redirect = "127.0.0.1:8080", hsts = "365d" }
    tls = "off"                                          # an environment without TLS

Errors (positioned at the key that names the file): a file missing or unreadable, a file
that holds no PEM certificate or key, an encrypted key, a key that is not the
certificate's. Warnings: a certificate expired or not valid yet, and a route's host that
no certificate names (clients asking for it would get the default certificate).

`read_pair` is also how the data plane checks a certificate replaced on disk before it
takes it.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlifier.lang.errors import quote
from sqlifier.stack import model as m
from sqlifier.stack.reader import StackReader
from sqlifier.stack.tomlpos import Path as KeyPath

__all__ = ["CertificateError", "Pair", "check_tls", "covers", "read_pair", "read_tls"]

_EXAMPLE = '{ cert = "certs/site.pem", key = "certs/site.key" }'


class CertificateError(Exception):
    """A certificate or key file that cannot be used; `which` is "cert" or "key"."""

    def __init__(self, which: str, message: str) -> None:
        super().__init__(message)
        self.which = which


@dataclass(frozen=True)
class Pair:
    """A certificate chain and its key, read and checked to belong together."""

    chain: bytes  # PEM, the certificate first
    key: bytes  # PEM
    names: tuple[str, ...]  # DNS names it answers for (SAN, else the subject's CN)
    subject: str
    not_before: datetime.datetime
    not_after: datetime.datetime


def read_tls(reader: StackReader, value: object, path: KeyPath) -> m.Tls | None:
    """The `tls` value at `path`; None (with an error reported) when it is not valid."""
    if value == "self-signed":
        return m.Tls(self_signed=True)
    if value == "off":
        return m.Tls()
    if not isinstance(value, dict):
        reader.error(
            path,
            f'{_dotted(path)} must be "self-signed", "off" or a table like {_EXAMPLE}',
        )
        return None
    typed = reader.table(
        value,
        path,
        {
            "cert": reader.text,
            "key": reader.text,
            "certs": lambda raw, at: raw,
            "self_signed": reader.boolean,
            "redirect": reader.text,
            "hsts": reader.duration,
        },
        _dotted(path),
    )
    if typed is None or len(typed) < len(value):  # a key unknown or not valid: said
        return None
    certificates = _certificates(reader, typed, path)
    redirect = _address(reader, (*path, "redirect"), typed.get("redirect"))
    self_signed = bool(typed.get("self_signed", False))
    if certificates is None:
        return None
    if not certificates and not self_signed:
        reader.error(
            path,
            f"{_dotted(path)} names no certificate: give cert and key, certs = [...], "
            'or self_signed = true (or write tls = "self-signed")',
        )
        return None
    if certificates and self_signed:
        reader.error((*path, "self_signed"), f"{_dotted(path)} has certificates: no self_signed")
        return None
    return m.Tls(certificates, self_signed, redirect, typed.get("hsts"))


def _certificates(
    reader: StackReader, typed: dict[str, Any], path: KeyPath
) -> tuple[m.TlsCertificate, ...] | None:
    single = "cert" in typed or "key" in typed
    if single and "certs" in typed:
        reader.error((*path, "certs"), f"{_dotted(path)} has cert and key: no certs beside them")
        return None
    if single:
        missing = "key" if "cert" in typed else "cert"
        if missing not in typed:
            reader.error(path, f"{_dotted(path)} has no {missing}; write {_EXAMPLE}")
            return None
        return (m.TlsCertificate(typed["cert"], typed["key"]),)
    raw = typed.get("certs")
    if raw is None:
        return ()
    at = (*path, "certs")
    if not isinstance(raw, list) or not raw:
        reader.error(at, f"{_dotted(at)} must be a list of tables like [{_EXAMPLE}]")
        return None
    out = []
    for index, item in enumerate(raw):
        one = reader.table(
            item, (*at, index), {"cert": reader.text, "key": reader.text}, _dotted(at)
        )
        if one is None:
            return None
        if "cert" not in one or "key" not in one:
            reader.error((*at, index), f"each of {_dotted(at)} needs cert and key: {_EXAMPLE}")
            return None
        out.append(m.TlsCertificate(one["cert"], one["key"]))
    return tuple(out)


def _address(reader: StackReader, path: KeyPath, text: str | None) -> tuple[str, int] | None:
    if text is None:
        return None
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        reader.error(
            path,
            f'{_dotted(path)} must be host:port, like "127.0.0.1:8080", found {quote(text)}',
        )
        return None
    return host.strip("[]"), int(port)


# --- the files ---------------------------------------------------------------------------


def read_pair(cert: Path, key: Path) -> Pair:
    """The certificate at `cert` and the key at `key`, checked to belong together."""
    # cryptography is imported when a stack has certificates, not by every command
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    chain = _read(cert, "cert")
    try:
        certificates = x509.load_pem_x509_certificates(chain)
    except ValueError:
        raise CertificateError(
            "cert", f"{cert} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ) from None
    key_pem = _read(key, "key")
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise CertificateError(
            "key",
            f"{key} is encrypted; the router needs it unencrypted "
            f"(openssl pkey -in {key.name} -out plain.key), readable by you alone",
        ) from None
    except (ValueError, Exception) as exc:  # unsupported algorithms raise their own
        raise CertificateError(
            "key", f"{key} holds no PEM private key (-----BEGIN PRIVATE KEY-----): {exc}"
        ) from None
    leaf = certificates[0]
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(*raw) != leaf.public_key().public_bytes(*raw):
        raise CertificateError("key", f"{key} is not the key of {cert} (their public keys differ)")
    return Pair(
        chain=b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates),
        key=private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        names=_names(leaf),
        subject=leaf.subject.rfc4514_string(),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
    )


def _read(path: Path, which: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CertificateError(which, f"{path} does not exist") from None
    except OSError as exc:
        raise CertificateError(which, f"{path} cannot be read: {exc.strerror}") from None


def _names(certificate: Any) -> tuple[str, ...]:
    from cryptography import x509  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = [
            str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ]
    return tuple(name.lower() for name in names)


def covers(names: Iterable[str], host: str) -> bool:
    """Whether a certificate naming `names` answers for `host` (`*.a.b` covers `x.a.b`)."""
    host = host.lower().rstrip(".")
    for name in names:
        if name == host:
            return True
        if name.startswith("*.") and host.partition(".")[2] == name[2:] and "." in name[2:]:
            return True
    return False


def check_tls(
    reader: StackReader,
    tls: m.Tls,
    path: KeyPath,
    hosts: dict[str, str],
    now: datetime.datetime | None = None,
) -> None:
    """Report what is wrong with the files `tls` (written at `path`) names; `hosts` are
    the route hosts the router serves, each with a service that routes it."""
    now = now or datetime.datetime.now(datetime.UTC)
    root = reader.path.parent
    pairs: list[Pair] = []
    for index, certificate in enumerate(tls.certificates):
        at = (*path, "certs", index) if len(tls.certificates) > 1 else path
        try:
            pair = read_pair(root / certificate.cert, root / certificate.key)
        except CertificateError as exc:
            shown = str(exc).replace(f"{root}/", "")  # the paths as the stack file writes them
            reader.error((*at, exc.which), f"{_dotted(path)}: {shown}", _HINTS.get(exc.which))
            continue
        pairs.append(pair)
        where = (*at, "cert")
        if pair.not_after < now:
            reader.warning(
                where,
                f"the certificate {certificate.cert} expired on {pair.not_after:%Y-%m-%d}: "
                "clients will refuse it",
            )
        elif pair.not_before > now:
            reader.warning(
                where,
                f"the certificate {certificate.cert} is not valid before "
                f"{pair.not_before:%Y-%m-%d %H:%M} UTC: clients will refuse it until then",
            )
    if not pairs or len(pairs) < len(tls.certificates):
        return
    for host, service in sorted(hosts.items()):
        if not any(covers(pair.names, host) for pair in pairs):
            named = ", ".join(pairs[0].names) or "no host"
            reader.warning(
                path,
                f"no certificate of {_dotted(path)} names {host} (a route of {service}): "
                f"clients asking for it get {tls.certificates[0].cert}, which names {named}",
            )


_HINTS = {
    "cert": "a PEM file with the certificate first, then its chain",
    "key": "a PEM file with the certificate's private key, unencrypted",
}


def _dotted(path: KeyPath) -> str:
    return ".".join(str(part) for part in path if not isinstance(part, int))
