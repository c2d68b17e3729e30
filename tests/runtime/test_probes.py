"""Probes: thresholds on a virtual clock; HTTP, TCP and exec probes against real sockets
and real processes."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sqlifier.runtime.probes import ProbeResult, ProbeTracker, run_probe
from sqlifier.stack.model import Probe, ProbeKind
from tests.servers import free_port

OK = ProbeResult(True, "HTTP 200")
FAIL = ProbeResult(False, "connection refused")


def test_no_verdict_until_a_threshold_is_reached() -> None:
    tracker = ProbeTracker(Probe(ProbeKind.HTTP, "/", period=2, failure_threshold=3))
    assert tracker.record(0, FAIL) is None
    assert tracker.record(2, FAIL) is None
    assert tracker.record(4, FAIL) is False
    assert tracker.record(6, FAIL) is None  # still failing: no change to report
    assert tracker.record(8, OK) is True


def test_success_threshold_needs_consecutive_successes() -> None:
    tracker = ProbeTracker(Probe(ProbeKind.TCP, "", success_threshold=2))
    assert tracker.record(0, OK) is None
    assert tracker.record(1, FAIL) is None
    assert tracker.record(2, OK) is None
    assert tracker.record(3, OK) is True


def test_a_probe_is_due_every_period() -> None:
    tracker = ProbeTracker(Probe(ProbeKind.TCP, "", period=5))
    assert tracker.due(0)
    tracker.record(0, OK)
    assert not tracker.due(4.9)
    assert tracker.due(5.0)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = {"/ok": 200, "/moved": 302, "/broken": 500}.get(self.path, 404)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def probe(kind: ProbeKind, target: str = "", **options: object) -> Probe:
    return Probe(kind, target, **options)  # type: ignore[arg-type]


def test_http_probe_accepts_2xx_and_3xx(http_port: int) -> None:
    assert asyncio.run(run_probe(probe(ProbeKind.HTTP, "/ok"), http_port)) == ProbeResult(
        True, "HTTP 200"
    )
    assert asyncio.run(run_probe(probe(ProbeKind.HTTP, "/moved"), http_port)).ok
    assert asyncio.run(run_probe(probe(ProbeKind.HTTP, "/broken"), http_port)) == ProbeResult(
        False, "HTTP 500"
    )


def test_http_probe_with_an_exact_status(http_port: int) -> None:
    assert asyncio.run(run_probe(probe(ProbeKind.HTTP, "/nothing", status=404), http_port)).ok
    assert not asyncio.run(run_probe(probe(ProbeKind.HTTP, "/ok", status=204), http_port)).ok


def test_probes_against_a_closed_port_fail_with_the_reason() -> None:
    port = free_port()
    for kind, target in ((ProbeKind.HTTP, "/"), (ProbeKind.TCP, "")):
        assert asyncio.run(run_probe(probe(kind, target), port)) == ProbeResult(
            False, "connection refused"
        )


def test_tcp_probe_connects(http_port: int) -> None:
    assert asyncio.run(run_probe(probe(ProbeKind.TCP), http_port)) == ProbeResult(True, "connected")


def test_exec_probe_uses_the_exit_code_and_gets_the_port() -> None:
    assert asyncio.run(run_probe(probe(ProbeKind.EXEC, "true"), 1)).ok
    assert asyncio.run(run_probe(probe(ProbeKind.EXEC, "false"), 1)) == ProbeResult(
        False, "exit code 1"
    )
    check_port = probe(ProbeKind.EXEC, "sh -c 'test \"$PORT\" = 4321'")
    assert asyncio.run(run_probe(check_port, 4321)).ok


def test_a_probe_that_hangs_times_out() -> None:
    slow = probe(ProbeKind.EXEC, "sleep 30", timeout=0.2)
    assert asyncio.run(run_probe(slow, 1)) == ProbeResult(False, "timed out after 0.2s")


def test_an_exec_probe_that_cannot_run_says_why() -> None:
    result = asyncio.run(run_probe(probe(ProbeKind.EXEC, "/no/such/command"), 1))
    assert result == ProbeResult(False, "cannot run '/no/such/command': No such file or directory")


async def _probe_against(answer: bytes) -> ProbeResult:
    """An HTTP probe against a server that reads the request and sends `answer`."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        return await run_probe(probe(ProbeKind.HTTP, "/"), port)


@pytest.mark.parametrize("answer", [b"", b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 abc Nope\r\n\r\n"])
def test_an_answer_that_is_not_http_fails_the_probe(answer: bytes) -> None:
    assert asyncio.run(_probe_against(answer)) == ProbeResult(False, "not an HTTP response")


def test_an_informational_answer_is_skipped_for_the_final_one() -> None:
    answer = b"HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
    assert asyncio.run(_probe_against(answer)) == ProbeResult(True, "HTTP 204")
