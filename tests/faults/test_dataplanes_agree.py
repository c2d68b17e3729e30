"""The same bytes through both data planes: the same answer, or the difference that
docs/traffic.md documents ("Where the two data planes differ").

Each data plane runs as the real process (and HAProxy), in front of an instance that
records every byte it receives.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlifier.router.h1 import MAX_FIELDS, MAX_HEAD
from tests.router.test_dataplanes import Plane, backend
from tests.router.test_proxy_edges import raw
from tests.router.test_strict_heads import Recorder

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")


def _head(*fields: bytes, method: bytes = b"GET", body: bytes = b"") -> bytes:
    lines = b"".join(field + b"\r\n" for field in fields)
    return method + b" / HTTP/1.1\r\nHost: a\r\n" + lines + b"Connection: close\r\n\r\n" + body


def _padded(size: int) -> bytes:
    """A valid head of `size` bytes (its blank line left out, as the limit counts it)."""
    bare = len(_head(b"X: ")) - 4
    return _head(b"X: " + b"a" * (size - bare))


def _fields(count: int) -> bytes:
    """A head of `count` header lines (Host and Connection included)."""
    return _head(*(b"X%03d: a" % i for i in range(count - 2)))


# case: (request bytes, embedded's status, HAProxy's status)
CASES: dict[str, tuple[bytes, int, int]] = {
    # RFC 9112 6.1: Transfer-Encoding wins, Content-Length is removed, the connection
    # closes after the answer. Both forward it (the embedded data plane refused it).
    "content-length with transfer-encoding": (
        _head(
            b"Content-Length: 5", b"Transfer-Encoding: chunked", method=b"POST", body=b"0\r\n\r\n"
        ),
        200,
        200,
    ),
    "a transfer coding other than a final chunked": (
        _head(b"Transfer-Encoding: chunked, gzip", method=b"POST"),
        400,
        400,
    ),
    "NUL in a field value": (_head(b"X: a\x00b"), 400, 400),
    "DEL in a field value": (_head(b"X: a\x7f"), 400, 400),
    "the largest head both take": (_padded(MAX_HEAD), 200, 200),
    "a head past HAProxy's buffer": (_padded(MAX_HEAD + 1536), 431, 400),
    "the most header lines both take": (_fields(MAX_FIELDS), 200, 200),
    "one header line more": (_fields(MAX_FIELDS + 1), 431, 400),
    # Documented differences: RFC 9112 lets a recipient refuse or repair these; the
    # embedded data plane refuses what it would have to rewrite, HAProxy repairs them.
    "obs-fold": (_head(b"X: a", b" b"), 400, 200),
    "a bare LF as a line end": (b"GET / HTTP/1.1\nHost: a\nConnection: close\n\n", 400, 200),
    "a list of equal Content-Length values": (
        _head(b"Content-Length: 5, 5", method=b"POST", body=b"hello"),
        400,
        200,
    ),
}


@pytest.fixture(scope="module")
def planes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Plane, Recorder]]]:
    running: dict[str, tuple[Plane, Recorder]] = {}
    try:
        for kind in ("embedded", "haproxy"):
            recorder = Recorder()
            threading.Thread(target=recorder.serve_forever, daemon=True).start()
            plane = Plane(kind, Path(tmp_path_factory.mktemp(kind)) / "state")
            running[kind] = (plane, recorder)
            plane.start()
            plane.sync(
                {"web": [{"host": None, "path": "/"}]},
                {"web": {"backends": [backend("web-0", int(recorder.server_address[1]))]}},
            )
        yield running
    finally:
        for plane, recorder in running.values():
            plane.stop()
            recorder.shutdown()
            recorder.server_close()


@pytest.mark.parametrize("case", CASES)
def test_both_data_planes_answer_as_documented(
    planes: dict[str, tuple[Plane, Recorder]], case: str
) -> None:
    data, embedded, haproxy = CASES[case]
    got = {}
    for kind, (plane, _) in planes.items():
        status_line = raw(plane.port, data, wait=5).partition(b"\r\n")[0]
        got[kind] = int(status_line.split(b" ")[1]) if status_line else 0
    assert got == {"embedded": embedded, "haproxy": haproxy}


def test_content_length_with_transfer_encoding_reaches_the_instance_chunked_only(
    planes: dict[str, tuple[Plane, Recorder]],
) -> None:
    for kind, (plane, recorder) in planes.items():
        with recorder.lock:
            recorder.received = b""
        head = _head(
            b"Content-Length: 100",
            b"Transfer-Encoding: chunked",
            method=b"POST",
            body=b"5\r\nhello\r\n0\r\n\r\n",
        ).replace(b"Connection: close\r\n", b"")
        out = raw(plane.port, head + b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n", wait=2)
        assert out.count(b"HTTP/1.1 ") == 1, (kind, out)  # the connection closed after it
        with recorder.lock:
            received = recorder.received.lower()
        assert b"content-length" not in received.partition(b"\r\n\r\n")[0], kind
        assert b"5\r\nhello\r\n0\r\n\r\n" in received, kind
