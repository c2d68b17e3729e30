"""Request heads that RFC 9110/9112 forbid get 400 from the embedded data plane, run as
the real process (`python -m sqlifier.router`), and never reach the instance."""

from __future__ import annotations

import contextlib
import shutil
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.router.test_dataplanes import Plane, backend
from tests.router.test_proxy_edges import raw


class Recorder(socketserver.ThreadingTCPServer):
    """An instance that keeps every byte it receives and answers each head with 200."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Recorded)
        self.received = b""
        self.lock = threading.Lock()


class Recorded(socketserver.BaseRequestHandler):
    server: Recorder

    def handle(self) -> None:
        with contextlib.suppress(ConnectionError):
            self._relay()

    def _relay(self) -> None:
        pending = b""
        while chunk := self.request.recv(65536):
            with self.server.lock:
                self.server.received += chunk
            pending += chunk
            while b"\r\n\r\n" in pending:
                _, _, pending = pending.partition(b"\r\n\r\n")
                self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Plane, Recorder]]:
    recorder = Recorder()
    threading.Thread(target=recorder.serve_forever, daemon=True).start()
    running = Plane("embedded", Path(tmp_path_factory.mktemp("strict")) / "state")
    running.start()
    try:
        port = int(recorder.server_address[1])
        running.sync(
            {"web": [{"host": None, "path": "/"}]},
            {"web": {"backends": [backend("web-0", port)]}},
        )
        yield running, recorder
    finally:
        running.stop()
        recorder.shutdown()
        recorder.server_close()


def answer(plane: Plane, head: bytes) -> tuple[bytes, bytes]:
    """The status line and body the data plane answers `head` with (on a connection it
    closes after it)."""
    out = raw(plane.port, head, wait=5)
    status_line, _, rest = out.partition(b"\r\n")
    return status_line, rest.partition(b"\r\n\r\n")[2]


def reaches_instance(world: tuple[Plane, Recorder], marker: bytes) -> bool:
    """Whether the instance has received `marker`, known once a later request has reached it."""
    plane, recorder = world
    assert (
        answer(plane, b"GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")[0]
        == b"HTTP/1.1 200 OK"
    )
    with recorder.lock:
        return marker in recorder.received


def test_a_valid_request_reaches_the_instance(plane: tuple[Plane, Recorder]) -> None:
    head = b"GET /valid HTTP/1.1\r\nHost: a\r\nX-Value: caf\xe9 \t ok\r\nConnection: close\r\n\r\n"
    assert answer(plane[0], head)[0] == b"HTTP/1.1 200 OK"
    assert reaches_instance(plane, b"/valid")


@pytest.mark.parametrize(
    ("head", "why"),
    [
        (b"GET /lf HTTP/1.1\r\nHost: a\nTransfer-Encoding: chunked\r\n\r\n", b"bare LF or CR"),
        (b"GET /lf HTTP/1.1\r\nX: a\nY: b\r\n\r\n", b"bare LF or CR"),
        (b"GET /cr HTTP/1.1\r\nX: a\rY: b\r\n\r\n", b"bare LF or CR"),
        (b"GET /lf HTTP/1.1\nHost: a\n\n", b"bare LF in the request head"),
        (b"GET /lf HTTP/1.1\nHost: a\r\n\r\n", b"bare LF or CR in the request line"),
        (b"GET /nul HTTP/1.1\r\nX: a\x00b\r\n\r\n", b"control character 0x00"),
        (b"GET /ctl HTTP/1.1\r\nX: a\x08b\r\n\r\n", b"control character 0x08"),
        (b"GET /del HTTP/1.1\r\nX: a\x7f\r\n\r\n", b"control character 0x7f"),
        (b"GET /space HTTP/1.1\r\nHost : a\r\n\r\n", b"whitespace between the field name"),
        (b"GET /name HTTP/1.1\r\nX@Y: a\r\n\r\n", b"bad field name"),
        (b"GET /fold HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", b"obs-fold"),
        (b"G@T /method HTTP/1.1\r\nHost: a\r\n\r\n", b"bad method"),
        (b"GET /tar\x01get HTTP/1.1\r\nHost: a\r\n\r\n", b"bad request target"),
        (b"GET /hosts HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", b"more than one Host"),
    ],
)
def test_a_forbidden_request_head_gets_400_and_never_reaches_the_instance(
    plane: tuple[Plane, Recorder], head: bytes, why: bytes
) -> None:
    status_line, body = answer(plane[0], head)
    assert status_line == b"HTTP/1.1 400 Bad Request"
    assert why in body, body
    assert not reaches_instance(plane, head.split(b" ")[1])


@pytest.fixture(scope="module")
def haproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Plane, Recorder]]:
    recorder = Recorder()
    threading.Thread(target=recorder.serve_forever, daemon=True).start()
    running = Plane("haproxy", Path(tmp_path_factory.mktemp("strict-haproxy")) / "state")
    running.start()
    try:
        port = int(recorder.server_address[1])
        running.sync(
            {"web": [{"host": None, "path": "/"}]},
            {"web": {"backends": [backend("web-0", port)]}},
        )
        yield running, recorder
    finally:
        running.stop()
        recorder.shutdown()
        recorder.server_close()


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
@pytest.mark.parametrize(
    "value",
    [b"a\x00b", b"a\x01b", b"\x1b[0m", b"a\x08b", b"a\x0bb", b"a\x0cb", b"a\x1fb", b"a\x7f"],
)
def test_haproxy_refuses_control_characters_in_a_field_value(
    haproxy: tuple[Plane, Recorder], value: bytes
) -> None:
    """HAProxy 2.6 passes them on by itself; the data plane's configuration refuses them
    with the same 400 as the embedded data plane."""
    marker = b"/ctl-%s" % value.hex().encode()
    head = b"GET %s HTTP/1.1\r\nHost: a\r\nX: %s\r\nConnection: close\r\n\r\n" % (marker, value)
    status_line, body = answer(haproxy[0], head)
    assert status_line == b"HTTP/1.1 400 Bad Request"
    assert body == (
        b"control character in a field value: a field value holds visible characters,"
        b" spaces and tabs only\n"
    )
    assert not reaches_instance(haproxy, marker)


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_passes_tabs_and_obs_text_in_a_field_value(
    haproxy: tuple[Plane, Recorder],
) -> None:
    head = b"GET /ok-tab HTTP/1.1\r\nHost: a\r\nX: caf\xe9 \t ok\r\nConnection: close\r\n\r\n"
    assert answer(haproxy[0], head)[0] == b"HTTP/1.1 200 OK"
    assert reaches_instance(haproxy, b"/ok-tab")
