"""TLS at the front door through both data planes, each the real process the agent starts
(`python -m sqlifier.router --tls FILE`), with Python's ssl client and `openssl s_client`:
protocol versions, the certificate chosen by SNI, the redirect and HSTS, and certificates
replaced on disk while requests keep coming."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sqlifier.router.tls import Settings, fingerprint
from tests.apps import APP
from tests.conftest import run_sqlifier
from tests.router.certs import client_context, common_name, handshake, make_cert
from tests.router.test_dataplanes import ROUTES, Backends, Plane, backend
from tests.servers import KINDS, free_port

OPENSSL = shutil.which("openssl")


class TlsPlane(Plane):
    """A data plane listening over TLS, with the settings file the agent would write."""

    def __init__(self, kind: str, state_dir: Path, settings: Settings) -> None:
        super().__init__(kind, state_dir)
        self.settings = settings

    @property
    def out(self) -> Path:
        return self.state_dir / "router.out"

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tls_file = self.state_dir / "tls.json"
        tls_file.write_text(json.dumps(self.settings.to_json()))
        with self.out.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "sqlifier.router", "--state-dir", str(self.state_dir)),
                    *("--kind", self.kind, "--listen", f"127.0.0.1:{self.port}"),
                    *("--tls", str(tls_file)),
                ],
                start_new_session=True,
                stdout=out,
                stderr=out,
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.out.read_text()
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(str(self.state_dir / "router.sock"))
                self.call({"op": "ping"})
                return
            except OSError:
                self.sock.close()
                time.sleep(0.05)
        raise AssertionError("the data plane did not answer")


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path / "certs"
    return {
        "a": make_cert(folder, "a.localhost", ["a.localhost", "localhost"]),
        "b": make_cert(folder, "b.localhost", ["b.localhost", "*.b.localhost"]),
    }


def start(kind: str, tmp_path: Path, settings: Settings) -> tuple[TlsPlane, Backends]:
    servers = Backends()
    plane = TlsPlane(kind, tmp_path / "state", settings)
    plane.start()
    web = servers.start("web-0")
    plane.sync(ROUTES, {"web": {"backends": [backend("web-0", web)]}})
    return plane, servers


@pytest.fixture(params=KINDS)
def tls_world(
    request: pytest.FixtureRequest, tmp_path: Path, certs: dict[str, tuple[Path, Path]]
) -> Iterator[tuple[TlsPlane, dict[str, tuple[Path, Path]]]]:
    redirect = ("127.0.0.1", free_port())
    settings = Settings((certs["a"], certs["b"]), redirect, hsts=600)
    plane, servers = start(request.param, tmp_path, settings)
    try:
        yield plane, certs
    finally:
        plane.stop()
        servers.close()


def test_http11_over_tls12_or_later_with_the_sni_certificate(tls_world: Any) -> None:
    plane, _ = tls_world
    first = handshake(plane.port, "a.localhost")
    assert first.version in ("TLSv1.2", "TLSv1.3")
    assert first.alpn == "http/1.1"
    assert first.subject == "a.localhost"
    assert handshake(plane.port, "b.localhost").subject == "b.localhost"
    assert handshake(plane.port, "x.b.localhost").subject == "b.localhost"  # a wildcard
    assert handshake(plane.port, "unknown.localhost").subject == "a.localhost"  # the default
    assert handshake(plane.port, None).subject == "a.localhost"  # no SNI: the default
    tls12 = client_context(high=ssl.TLSVersion.TLSv1_2)
    assert handshake(plane.port, "b.localhost", tls12).version == "TLSv1.2"


def test_requests_over_tls_say_https_to_the_instance(tls_world: Any) -> None:
    plane, _ = tls_world
    context = client_context()
    with (
        socket.create_connection(("127.0.0.1", plane.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="a.localhost") as tls,
    ):
        for _ in range(3):  # kept alive
            tls.sendall(b"GET /x HTTP/1.1\r\nHost: a.localhost\r\n\r\n")
            status, headers, body = read_response(tls)
            assert status == 200
            assert json.loads(body)["xfp"] == "https"
            assert headers["strict-transport-security"] == "max-age=600"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_10_and_11_are_refused(tls_world: Any, version: ssl.TLSVersion) -> None:
    plane, _ = tls_world
    old = client_context(low=version, high=version)
    with pytest.raises(ssl.SSLError) as refused:
        handshake(plane.port, "a.localhost", old)
    # HAProxy answers with a protocol_version alert; uvloop's TLS hangs up without one.
    assert "version" in str(refused.value).lower() or isinstance(refused.value, ssl.SSLEOFError)


def test_tls12_without_forward_secrecy_or_aead_is_refused(tls_world: Any) -> None:
    """Mozilla's intermediate ciphers: RSA key exchange and CBC suites are not offered."""
    plane, _ = tls_world
    weak = client_context(high=ssl.TLSVersion.TLSv1_2)
    weak.set_ciphers("AES128-SHA:AES256-GCM-SHA384:ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError):
        handshake(plane.port, "a.localhost", weak)
    strong = client_context(high=ssl.TLSVersion.TLSv1_2)
    strong.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    assert handshake(plane.port, "a.localhost", strong).version == "TLSv1.2"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_the_old_client_does_offer_the_old_version(
    version: ssl.TLSVersion, certs: dict[str, tuple[Path, Path]]
) -> None:
    """The test above means something: the same client shakes hands with a server that
    still allows TLS 1.0 and 1.1."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server.minimum_version = ssl.TLSVersion.TLSv1
    server.load_cert_chain(*certs["a"])
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def accept() -> None:
            connection, _ = listener.accept()
            with contextlib.suppress(OSError), server.wrap_socket(connection, server_side=True):
                pass

        thread = threading.Thread(target=accept)
        thread.start()
        port = listener.getsockname()[1]
        assert handshake(port, "a.localhost", client_context(version, version)).version in (
            "TLSv1",
            "TLSv1.1",
        )
        thread.join(10)


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
def test_openssl_s_client_sees_the_protocol_and_the_sni_certificate(tls_world: Any) -> None:
    plane, _ = tls_world
    out = s_client(plane.port, "-servername", "b.localhost", "-tls1_2")
    assert "Protocol  : TLSv1.2" in out or "Protocol: TLSv1.2" in out
    assert "subject=CN = b.localhost" in out
    assert "ALPN protocol: http/1.1" in out
    out = s_client(plane.port, "-servername", "a.localhost", "-tls1_3")
    assert "TLSv1.3" in out
    assert "subject=CN = a.localhost" in out
    refused = s_client(
        plane.port, "-servername", "a.localhost", "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"
    )
    assert "subject=" not in refused
    assert "no peer certificate available" in refused
    # HAProxy's alert, or uvloop's TLS hanging up (the client offered TLS 1.1: not refused
    # on its own side, which would say "no protocols available")
    assert "alert protocol version" in refused or "unexpected eof while reading" in refused


def s_client(port: int, *args: str) -> str:
    assert OPENSSL is not None
    done = subprocess.run(
        [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-alpn", "http/1.1", *args],
        input=b"",
        capture_output=True,
        timeout=20,
        check=False,
    )
    return (done.stdout + done.stderr).decode(errors="replace")


def test_the_plain_address_redirects_to_https_with_308(tls_world: Any) -> None:
    plane, _ = tls_world
    assert plane.settings.redirect is not None
    connection = http.client.HTTPConnection(*plane.settings.redirect, timeout=10)
    for path in ("/shop/cart?id=1", "/"):  # on one kept-alive connection
        connection.request("GET", path, headers={"Host": "a.localhost:8080"})
        response = connection.getresponse()
        response.read()
        assert response.status == 308
        assert response.getheader("Location") == f"https://a.localhost:{plane.port}{path}"
        assert response.getheader("Strict-Transport-Security") is None
    connection.close()


def test_hsts_is_on_the_routers_own_answers_too(tls_world: Any) -> None:
    plane, _ = tls_world
    with (
        socket.create_connection(("127.0.0.1", plane.port), timeout=10) as raw,
        client_context().wrap_socket(raw, server_hostname="a.localhost") as tls,
    ):
        tls.sendall(b"GET /empty HTTP/1.1\r\nHost: a.localhost\r\n\r\n")
        status, headers, _ = read_response(tls)
    assert status == 503
    assert headers["strict-transport-security"] == "max-age=600"


def read_response(tls: ssl.SSLSocket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(65536)
        assert chunk, "the connection closed"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = tls.recv(65536)
        assert chunk, "the connection closed"
        body += chunk
    return int(lines[0].split()[1]), headers, body


# --- certificates replaced on disk ---------------------------------------------------------


class TlsLoad:
    """Clients on kept-alive TLS connections, and one that shakes hands anew for each
    request; every outcome counted, and the certificates the new handshakes saw."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.outcomes: Counter[str] = Counter()
        self.subjects: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._kept_alive),
            threading.Thread(target=self._kept_alive),
            threading.Thread(target=self._fresh),
        ]

    def __enter__(self) -> TlsLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(20)

    def _kept_alive(self) -> None:
        try:
            with (
                socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw,
                client_context().wrap_socket(raw, server_hostname="a.localhost") as tls,
            ):
                while not self._stop.is_set():
                    tls.sendall(b"GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n")
                    status, _, _ = read_response(tls)
                    self.outcomes[f"kept {status}"] += 1
                    time.sleep(0.005)
        except (OSError, AssertionError) as exc:
            self.outcomes[f"kept {type(exc).__name__}: {exc}"] += 1

    def _fresh(self) -> None:
        while not self._stop.is_set():
            try:
                with (
                    socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw,
                    client_context().wrap_socket(raw, server_hostname="a.localhost") as tls,
                ):
                    tls.sendall(b"GET / HTTP/1.1\r\nHost: a.localhost\r\nConnection: close\r\n\r\n")
                    status, _, _ = read_response(tls)
                    self.subjects.append(common_name(tls))
                self.outcomes[f"fresh {status}"] += 1
            except (OSError, AssertionError) as exc:
                self.outcomes[f"fresh {type(exc).__name__}: {exc}"] += 1
            time.sleep(0.01)


def replace(certs: dict[str, tuple[Path, Path]], new_name: str, tmp_path: Path) -> None:
    """Put a new certificate and key where `a`'s are, as an operator does (each file
    replaced whole by a rename; for a moment the new certificate sits beside the old key)."""
    cert, key = make_cert(tmp_path / "new", new_name, ["a.localhost", "localhost"])
    os.replace(cert, certs["a"][0])
    time.sleep(0.3)  # the half-replaced pair is there to be seen (and refused)
    os.replace(key, certs["a"][1])


def wait_for(condition: Any, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.05)


def test_a_replaced_certificate_is_taken_without_failing_a_request(
    tls_world: Any, tmp_path: Path
) -> None:
    plane, certs = tls_world
    with TlsLoad(plane.port) as load:
        wait_for(lambda: len(load.subjects) > 5)
        replace(certs, "renewed.localhost", tmp_path)
        wait_for(lambda: load.subjects[-1:] == ["renewed.localhost"])  # the file watch
        seen = len(load.subjects)
        wait_for(lambda: len(load.subjects) > seen + 5)
    assert load.subjects[-1] == "renewed.localhost"
    assert set(load.outcomes) == {"kept 200", "fresh 200"}, load.outcomes
    assert handshake(plane.port, "b.localhost").subject == "b.localhost"  # the others stay


def test_sighup_reloads_at_once_and_a_bad_pair_keeps_the_old_certificate(
    tls_world: Any, tmp_path: Path
) -> None:
    plane, certs = tls_world
    wrong_cert, _ = make_cert(tmp_path / "wrong", "wrong.localhost", ["a.localhost"])
    os.replace(wrong_cert, certs["a"][0])  # a certificate beside a key not its own
    os.kill(plane.process.pid, signal.SIGHUP)
    wait_for(lambda: "certificate not reloaded" in plane.out.read_text())
    assert (
        f"router: certificate not reloaded: {certs['a'][1]} is not the key of {certs['a'][0]} "
        "(their public keys differ); the previous one stays"
    ) in plane.out.read_text()
    assert handshake(plane.port, "a.localhost").subject == "a.localhost"
    cert, key = make_cert(tmp_path / "good", "good.localhost", ["a.localhost"])
    os.replace(key, certs["a"][1])
    os.replace(cert, certs["a"][0])
    os.kill(plane.process.pid, signal.SIGHUP)
    wait_for(lambda: handshake(plane.port, "a.localhost").subject == "good.localhost")


def test_a_bad_certificate_at_start_is_said_and_the_plane_does_not_start(
    tmp_path: Path, certs: dict[str, tuple[Path, Path]]
) -> None:
    settings = Settings(((certs["a"][0], certs["b"][1]),))
    tls_file = tmp_path / "tls.json"
    tls_file.write_text(json.dumps(settings.to_json()))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sqlifier.router",
            "--state-dir",
            str(tmp_path / "s"),
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--tls",
            str(tls_file),
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.decode().strip() == (
        f"the router cannot use its certificate: {certs['b'][1]} is not the key of "
        f"{certs['a'][0]} (their public keys differ)"
    )


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_an_adopted_haproxy_gets_a_certificate_replaced_while_no_data_plane_ran(
    tmp_path: Path, certs: dict[str, tuple[Path, Path]]
) -> None:
    """The data plane is killed (HAProxy keeps serving), the certificate is replaced, and
    the data plane started again adopts HAProxy and hands it the new certificate."""
    first, servers = start("haproxy", tmp_path, Settings((certs["a"],)))
    second = TlsPlane("haproxy", tmp_path / "state", first.settings)
    second.port = first.port
    try:
        assert handshake(first.port, "a.localhost").subject == "a.localhost"
        assert first.process is not None
        os.kill(first.process.pid, signal.SIGKILL)  # the data plane alone, not HAProxy
        first.process.wait()
        first.process = None
        replace(certs, "renewed.localhost", tmp_path)
        assert handshake(first.port, "a.localhost").subject == "a.localhost"  # no one told it
        second.start()
        assert handshake(first.port, "a.localhost").subject == "renewed.localhost"
        assert "adopted" in second.out.read_text()
    finally:
        second.stop()
        first.stop()
        servers.close()


@pytest.mark.parametrize("kind", KINDS)
def test_a_taken_redirect_address_is_named_and_the_plane_does_not_start(
    kind: str, tmp_path: Path, certs: dict[str, tuple[Path, Path]]
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        redirect = ("127.0.0.1", taken.getsockname()[1])
        settings = Settings((certs["a"],), redirect)
        tls_file = tmp_path / "tls.json"
        tls_file.write_text(json.dumps(settings.to_json()))
        port = free_port()
        done = subprocess.run(
            [
                *(sys.executable, "-m", "sqlifier.router", "--state-dir", str(tmp_path / "s")),
                *("--kind", kind, "--listen", f"127.0.0.1:{port}", "--tls", str(tls_file)),
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert done.stderr.decode().startswith(
        f"the router cannot listen on 127.0.0.1:{port}: its redirect address "
        f"127.0.0.1:{redirect[1]}: Address already in use (held by "
    ), done.stderr


# --- as a user meets it ----------------------------------------------------------------------


@pytest.fixture(params=KINDS)
def self_signed_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, int]]:
    port, plain = free_port(), free_port()
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "sqlifier.toml").write_text(
        f'[stack]\nname = "t"\n\n[router]\nkind = "{request.param}"\n'
        f'listen = "127.0.0.1:{port}"\n'
        f'tls = {{ self_signed = true, redirect = "127.0.0.1:{plain}", hsts = "1h" }}\n\n'
        f'[services.web]\nrun = "{sys.executable} app.py"\nroutes = ["shop.localhost/"]\n'
    )
    yield tmp_path, port
    run_sqlifier("down", cwd=tmp_path)


def test_up_and_ps_say_https_and_the_self_signed_fingerprint(
    self_signed_stack: tuple[Path, int],
) -> None:
    root, port = self_signed_stack
    up = run_sqlifier("up", "--detach", cwd=root)
    assert up.returncode == 0, up.stderr
    cert = root / ".sqlifier" / "dev" / "tls" / "self-signed.crt"
    shown = fingerprint(cert.read_bytes())
    assert f"on https://127.0.0.1:{port}" in up.stdout
    assert f"router: self-signed certificate {cert}, SHA-256 {shown}" in up.stdout
    ps = run_sqlifier("ps", cwd=root)
    assert f"SHA-256 {shown}" in ps.stdout
    assert handshake(port, "shop.localhost").version in ("TLSv1.2", "TLSv1.3")
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        client_context().wrap_socket(raw, server_hostname="shop.localhost") as tls,
    ):
        tls.sendall(b"GET / HTTP/1.1\r\nHost: shop.localhost\r\n\r\n")
        status, headers, body = read_response(tls)
    assert (status, body, headers["strict-transport-security"]) == (200, b"web-0", "max-age=3600")
    renewed = make_cert(root / "new", "renewed.localhost", ["shop.localhost", "localhost"], days=90)
    os.replace(renewed[1], cert.with_suffix(".key"))
    os.replace(renewed[0], cert)
    restart = run_sqlifier("restart", "router", cwd=root)
    assert restart.returncode == 0, restart.stderr
    assert "reads its certificates again" in restart.stdout
    wait_for(lambda: handshake(port, "shop.localhost").subject == "renewed.localhost")
    shown = fingerprint(cert.read_bytes())
    run_sqlifier("down", cwd=root)
    again = run_sqlifier("up", "--detach", cwd=root)  # the certificate is kept
    assert again.returncode == 0, again.stderr
    assert f"SHA-256 {shown}" in again.stdout
