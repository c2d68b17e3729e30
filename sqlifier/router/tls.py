"""TLS at the front door, for both data planes: the certificates in force, watched on
disk and replaced without dropping a connection.

What the data plane is told (`--tls FILE`, a JSON file the agent writes, `Settings`): the
certificate and key files, in order (the first is the default: for a client that sends no
server name, or one no certificate names), the plain address that answers 308 to https
(`redirect`), and HSTS's max-age.

`Certificates` reads them (each pair checked to belong together, stack/tls.py's
`read_pair`) and writes each pair as one private PEM file (chain, then key; 0600) under
`<state>/tls/live/`: HAProxy's crt-list names these files, and the embedded plane loads
them into its SSL contexts. Every `POLL` seconds (and on SIGHUP) it looks at the files'
modification times, sizes and inodes; when one changed, it reads them all again, and
only if every pair is valid are the new certificates put in force. A half-written pair
(a new certificate beside the old key) is refused, said once in router.out, and looked at
again at the next poll.

Putting them in force never closes a connection:
- embedded: the listening socket's context chooses, for each new handshake, the context
  of the certificate that names the client's server name (`sni_callback`); a reload
  replaces those contexts, so handshakes from then on get the new certificate, and
  connections already open keep theirs;
- HAProxy: `set ssl cert` and `commit ssl cert` on its admin socket, for each file that
  changed (HAProxy 2.6's runtime API): no reload.

Protocols and ciphers are Mozilla's "intermediate" recommendation: TLS 1.2 and 1.3,
ECDHE key exchange with AES-GCM or ChaCha20-Poly1305 for TLS 1.2; HTTP/1.1 by ALPN.

`self_signed()` makes the development certificate (`tls = "self-signed"`): an ECDSA P-256
key and a certificate for localhost, the loopback addresses and the stack's route hosts,
valid for 90 days, kept in `<state>/tls/` (0600) and made again only when it no longer
covers those names or expires within 30 days.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import ipaddress
import json
import os
import ssl
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sqlifier.router import h1
from sqlifier.router.client import Client
from sqlifier.router.listen import probe_bind
from sqlifier.stack import model as m
from sqlifier.stack.tls import CertificateError, Pair, covers, read_pair

__all__ = [
    "CIPHERS",
    "POLL",
    "TLS13_SUITES",
    "Certificates",
    "Contexts",
    "Redirect",
    "Settings",
    "fingerprint",
    "https_location",
    "load_settings",
    "prepare",
    "probe_redirect",
    "self_signed",
]

POLL = 2.0  # seconds between looks at the certificate files
# Mozilla's "intermediate" configuration: TLS 1.2's ECDHE suites with AEAD ciphers.
CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
TLS13_SUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
SELF_SIGNED_DAYS = 90
RENEW_BEFORE = datetime.timedelta(days=30)
_END = "-----END CERTIFICATE-----"


@dataclass(frozen=True)
class Settings:
    """The TLS listener as the data plane runs it."""

    certificates: tuple[tuple[Path, Path], ...]  # (cert, key), the first the default
    redirect: tuple[str, int] | None = None  # a plain listener answering 308 to https
    hsts: int | None = None  # Strict-Transport-Security max-age, seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "certificates": [[str(cert), str(key)] for cert, key in self.certificates],
            "redirect": list(self.redirect) if self.redirect else None,
            "hsts": self.hsts,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Settings:
        redirect = data.get("redirect")
        return cls(
            tuple((Path(cert), Path(key)) for cert, key in data["certificates"]),
            (str(redirect[0]), int(redirect[1])) if redirect else None,
            int(data["hsts"]) if data.get("hsts") is not None else None,
        )

    @property
    def hsts_line(self) -> bytes:
        """The HSTS header line, after a CRLF (none without `hsts`)."""
        if self.hsts is None:
            return b""
        return b"\r\nStrict-Transport-Security: max-age=%d" % self.hsts


@dataclass
class Certificates:
    """The certificates in force and the files they come from."""

    settings: Settings
    live: Path  # where each pair is written as one PEM file
    pairs: list[Pair] = field(default_factory=list)
    _seen: tuple[Any, ...] | None = None  # the files' signature when last read
    _refused: tuple[Any, ...] | None = None  # ... when last refused (said once)

    def __post_init__(self) -> None:
        self.live.mkdir(parents=True, exist_ok=True, mode=0o700)

    def files(self) -> list[Path]:
        """The combined PEM file of each pair, in order (HAProxy's crt-list)."""
        return [self.live / f"{index}.pem" for index in range(len(self.settings.certificates))]

    def load(self) -> list[Path]:
        """Read every pair and write the combined files; the files that changed.
        CertificateError (naming the file) when one pair is not valid: nothing changes."""
        signature = self._signature()
        pairs = [read_pair(cert, key) for cert, key in self.settings.certificates]
        changed = []
        for path, pair in zip(self.files(), pairs, strict=True):
            text = pair.chain + pair.key
            with contextlib.suppress(OSError):
                if path.read_bytes() == text:
                    continue
            _write_private(path, text)
            changed.append(path)
        self.pairs, self._seen = pairs, signature
        return changed

    def stale(self) -> bool:
        """Whether a file changed since the certificates were read (and was not refused
        as it is now)."""
        signature = self._signature()
        return signature not in (self._seen, self._refused)

    def refused(self, exc: CertificateError) -> None:
        signature = self._signature()
        if signature != self._refused:
            print(f"router: certificate not reloaded: {exc}; the previous one stays", flush=True)
        self._refused = signature

    def _signature(self) -> tuple[Any, ...]:
        out: list[Any] = []
        for cert, key in self.settings.certificates:
            for path in (cert, key):
                try:
                    info = path.stat()
                except OSError:
                    out.append(None)
                else:
                    out.append((info.st_mtime_ns, info.st_size, info.st_ino))
        return tuple(out)

    async def watch(
        self,
        put_in_force: Callable[[list[Path]], Awaitable[None]],
        wake: asyncio.Event,
        interval: float = POLL,
    ) -> None:
        """Reload when a file changed (looked at every `interval` s) or `wake` is set."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await wake.wait()
            forced = wake.is_set()
            wake.clear()
            if forced or self.stale():
                await self.reload(put_in_force)

    async def reload(self, put_in_force: Callable[[list[Path]], Awaitable[None]]) -> bool:
        try:
            changed = self.load()
        except CertificateError as exc:
            self.refused(exc)
            return False
        except OSError as exc:  # the combined file could not be written (a full disk)
            print(f"router: certificate not reloaded: {exc}", flush=True)
            return False
        if changed:
            try:
                await put_in_force(changed)
            except OSError as exc:  # ssl.SSLError among them: the contexts in force stay
                print(f"router: certificate not reloaded: {exc}", flush=True)
                return False
            for path in changed:
                pair = self.pairs[self.files().index(path)]
                print(
                    f"router: certificate reloaded: {pair.subject} "
                    f"(valid until {pair.not_after:%Y-%m-%d})",
                    flush=True,
                )
        return True


class Contexts:
    """The embedded plane's SSL contexts: one per certificate, chosen by server name."""

    def __init__(self, certificates: Certificates) -> None:
        self.certificates = certificates
        self._by_name: dict[str, ssl.SSLContext] = {}
        self._wildcards: dict[str, ssl.SSLContext] = {}
        self._default: ssl.SSLContext | None = None
        self.front = _context(certificates.files()[0])
        self.front.sni_callback = self._choose
        self.install()

    def install(self) -> None:
        """Contexts for the certificates in force: new handshakes use them."""
        by_name: dict[str, ssl.SSLContext] = {}
        wildcards: dict[str, ssl.SSLContext] = {}
        contexts = [_context(path) for path in self.certificates.files()]
        for context, pair in zip(contexts, self.certificates.pairs, strict=True):
            for name in pair.names:
                if name.startswith("*."):
                    wildcards.setdefault(name[2:], context)
                else:
                    by_name.setdefault(name, context)
        self._by_name, self._wildcards, self._default = by_name, wildcards, contexts[0]

    async def put_in_force(self, changed: list[Path]) -> None:
        self.install()

    def _choose(
        self, connection: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: ssl.SSLContext
    ) -> None:
        context = self._default
        if name:
            name = name.lower()
            found = self._by_name.get(name) or self._wildcards.get(name.partition(".")[2])
            context = found or context
        if context is not None:
            connection.context = context


class Redirect(Client):
    """A connection to the plain redirect address: each request is answered `308` with
    the same host and target over https (the TLS listener's port, `listener.https_port`)."""

    __slots__ = ()

    def _request(self, head: bytes) -> None:
        try:
            request = self._parse(head)
        except h1.BadMessage as bad:  # TooLarge is one too: 400 is as good an answer here
            self.reply(400, str(bad), close=True)
            return
        port = self.listener.https_port or 443
        location = https_location(request.host or "localhost", request.target, port)
        close = request.close or request.length > 0 or request.chunked
        self.send(h1.reply(308, "", close, b"\r\nLocation: " + location.encode("latin-1")))
        self.ready(close)


def probe_redirect(settings: Settings) -> None:
    """OSError naming the redirect address and what holds it, when it is taken."""
    if settings.redirect is None:
        return
    where, port = settings.redirect
    try:
        probe_bind(where, port)
    except OSError as exc:
        raise OSError(exc.errno, f"its redirect address {where}:{port}: {exc.strerror}") from None


def _context(path: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHERS)
    context.set_alpn_protocols(["http/1.1"])
    context.options |= ssl.OP_NO_COMPRESSION
    context.load_cert_chain(path)
    return context


def https_location(host: str, target: str, port: int) -> str:
    """Where a plain request for `host` and `target` is sent: the same host and target
    over https on the TLS listener's port."""
    name = host
    if host.startswith("["):  # [::1]:8080
        name = host[: host.find("]") + 1] or host
    elif host.count(":") == 1:
        name = host.partition(":")[0]
    suffix = "" if port == 443 else f":{port}"
    return f"https://{name}{suffix}{target}"


def fingerprint(pem: bytes) -> str:
    """SHA-256 of the (first) certificate's DER, as browsers show it: AB:CD:..."""
    first = pem.decode("ascii", "replace").partition(_END)[0].strip() + "\n" + _END + "\n"
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(first)).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def self_signed(
    folder: Path, hosts: list[str], title: str, now: datetime.datetime | None = None
) -> tuple[Path, Path]:
    """The development certificate in `folder` (made, or made again, when needed)."""
    now = now or datetime.datetime.now(datetime.UTC)
    cert, key = folder / "self-signed.crt", folder / "self-signed.key"
    names = sorted({"localhost", *(h.lower() for h in hosts if not _is_ip(h))})
    with contextlib.suppress(CertificateError):
        pair = read_pair(cert, key)
        fresh = pair.not_after - now > RENEW_BEFORE
        if fresh and all(covers(pair.names, name) for name in names):
            return cert, key
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_private(key, _make(cert, names, title, now))
    return cert, key


def _make(cert: Path, names: list[str], title: str, now: datetime.datetime) -> bytes:
    private = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, title[:64])])
    addresses = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    alternative: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
    alternative += [x509.IPAddress(address) for address in addresses]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    _write_private(cert, certificate.public_bytes(serialization.Encoding.PEM))
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _write_private(path: Path, data: bytes) -> None:
    """Replace `path` whole, readable by its owner alone."""
    temp = path.with_name(f".{path.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(temp, 0o600)
    temp.replace(path)


def prepare(
    tls: m.Tls, root: Path, state_dir: Path, hosts: list[str], title: str
) -> tuple[Path, dict[str, Any]]:
    """The agent's side: the settings file for the data plane (`--tls`), the development
    certificate made if the stack asks for one, and what `up` and `ps` say of it."""
    folder = state_dir / "tls"
    pairs: tuple[tuple[Path, Path], ...]
    if tls.self_signed:
        pairs = (self_signed(folder, hosts, title),)
    else:
        pairs = tuple((root / c.cert, root / c.key) for c in tls.certificates)
    hsts = round(tls.hsts) if tls.hsts is not None else None
    settings = Settings(pairs, tls.redirect, hsts)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / "settings.json"
    _write_private(path, json.dumps(settings.to_json()).encode())
    shown: dict[str, Any] = {"self_signed": tls.self_signed, "hsts": hsts}
    shown["redirect"] = f"{tls.redirect[0]}:{tls.redirect[1]}" if tls.redirect else None
    if tls.self_signed:
        shown["fingerprint"] = fingerprint(pairs[0][0].read_bytes())
        shown["certificate"] = str(pairs[0][0])
    return path, shown


def load_settings(path: Path) -> Settings:
    """The settings file the agent wrote (`--tls`)."""
    try:
        return Settings.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"the router cannot read its TLS settings {path}: {exc}", file=sys.stderr)
        raise
