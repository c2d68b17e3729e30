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
from sqlifier.router.haproxy_config import ERROR_PAGES
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
                {"web": [{"host": None, "path": "/"}], "idle": [{"host": None, "path": "/idle"}]},
                {
                    "web": {"backends": [backend("web-0", int(recorder.server_address[1]))]},
                    "idle": {"backends": []},
                },
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


def _answer(plane: Plane, data: bytes) -> tuple[bytes, bytes]:
    """The head (status line and fields, lowercased) and the body of the answer to `data`."""
    head, _, body = raw(plane.port, data, wait=5).partition(b"\r\n\r\n")
    return head.lower(), body


def test_haproxy_answers_its_own_errors_in_the_embedded_data_planes_words(
    planes: dict[str, tuple[Plane, Recorder]],
) -> None:
    """A service with no instance ready: HAProxy's own 503 is the embedded data plane's
    plain-text answer, byte for byte in its body (`errorfile`, not HAProxy's HTML page)."""
    bodies = {}
    for kind, (plane, _) in planes.items():
        head, bodies[kind] = _answer(plane, _head().replace(b"GET /", b"GET /idle"))
        assert head.startswith(b"http/1.1 503 "), (kind, head)
        assert b"content-type: text/plain" in head, (kind, head)
    assert bodies == {"embedded": b"no instance ready\n", "haproxy": b"no instance ready\n"}
    assert ERROR_PAGES[503] == "no instance ready\n"


@pytest.mark.parametrize(
    "case", ["a head past HAProxy's buffer", "a transfer coding other than a final chunked"]
)
def test_haproxy_2_6_answers_its_parser_errors_with_its_built_in_page(
    planes: dict[str, tuple[Plane, Recorder]], case: str
) -> None:
    """The documented difference: HAProxy before 3.2 answers what its HTTP parser refuses
    with its compiled-in HTML page, whatever `errorfile 400` says (haproxy issue 3032).
    The day the installed HAProxy honours the error file, this fails: then the page is
    sqlifier's, and docs/traffic.md says so."""
    head, body = _answer(planes["haproxy"][0], CASES[case][0])
    assert head.startswith(b"http/1.1 400 "), head
    assert b"<html>" in body, body
    embedded_head, embedded_body = _answer(planes["embedded"][0], CASES[case][0])
    assert b"content-type: text/plain" in embedded_head
    assert b"<html>" not in embedded_body
