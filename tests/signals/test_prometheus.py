"""Reading one value from a Prometheus: a real one scraping a real /metrics, and servers
that answer wrong or not at all."""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from sqlifier.signals.exposition import render
from sqlifier.signals.prometheus import QueryResult, query
from tests.prom import PROMETHEUS, MetricsServer, running_prometheus, wait_for_value
from tests.servers import QuietServer, free_port

SNAPSHOT = {
    "stack": "shop",
    "env": "dev",
    "services": {"storefront": {"cpu": 0.42}, "checkout": {"cpu": 1.5}},
}


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a real Prometheus that has scraped SNAPSHOT."""
    if PROMETHEUS is None:
        pytest.skip("prometheus is not installed (Debian package `prometheus`)")
    workdir = tmp_path_factory.mktemp("prometheus")
    with (
        MetricsServer(render(SNAPSHOT)) as metrics,
        running_prometheus(workdir, [metrics.address]) as running,
    ):
        wait_for_value(running.url, 'sqlifier_service_cpu_ratio{service="checkout"}')
        yield running.url


def ask(url: str, promql: str, **options: Any) -> QueryResult:
    return asyncio.run(query(url, promql, **options))


def test_a_scraped_value(prometheus: str) -> None:
    assert ask(prometheus, 'sqlifier_service_cpu_ratio{service="storefront"}') == QueryResult(
        0.42, None
    )


def test_service_replaces_the_text_dollar_service(prometheus: str) -> None:
    promql = 'sqlifier_service_cpu_ratio{service="$service"}'
    assert ask(prometheus, promql, service="checkout") == QueryResult(1.5, None)
    assert ask(prometheus, promql, service="storefront") == QueryResult(0.42, None)


def test_a_scalar_and_a_base_url_with_a_trailing_slash(prometheus: str) -> None:
    assert ask(prometheus + "/", "sum(sqlifier_service_cpu_ratio) * 2") == QueryResult(3.84, None)
    assert ask(prometheus, "scalar(sqlifier_service_cpu_ratio{service='checkout'})") == QueryResult(
        1.5, None
    )


@pytest.mark.parametrize(
    ("promql", "error"),
    [
        (
            "sqlifier_service_cpu_ratio",
            "the query returned 2 series; a rule needs exactly one (use sum() or a label filter)",
        ),
        ('sqlifier_service_cpu_ratio{service="nowhere"}', "the query returned no series"),
        ("0 / 0", "the query returned NaN"),
        ("sum(sqlifier_service_cpu_ratio) / 0", "the query returned +Inf"),
        ("-1 / 0", "the query returned -Inf"),
        (
            "sqlifier_service_cpu_ratio[1m]",
            "the query returned a range vector; a rule needs a number",
        ),
        ('"text"', "the query returned a string; a rule needs a number"),
        (
            "sum(",
            'query error: bad_data: invalid parameter "query": 1:5: parse error: unclosed left parenthesis',
        ),
    ],
)
def test_no_single_number_is_no_data_with_the_reason(
    prometheus: str, promql: str, error: str
) -> None:
    assert ask(prometheus, promql) == QueryResult(None, error)


def test_a_wrong_path_is_not_a_prometheus_answer(prometheus: str) -> None:
    assert ask(prometheus + "/grafana", "1") == QueryResult(
        None, "not a Prometheus answer: HTTP 404, not JSON"
    )


def test_a_closed_port_is_connection_refused() -> None:
    assert ask(f"http://127.0.0.1:{free_port()}", "1") == QueryResult(None, "connection refused")


def test_a_server_that_never_answers_times_out() -> None:
    with socket.socket() as silent:  # the kernel completes the connection; nobody reads
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        assert ask(url, "1", timeout=0.3) == QueryResult(None, "timed out after 0.3s")


def test_a_url_that_is_not_http() -> None:
    assert ask("prometheus:9090", "1") == QueryResult(
        None, "not an http:// or https:// URL: 'prometheus:9090'"
    )


@contextmanager
def answering(status: int, body: bytes) -> Iterator[tuple[str, list[tuple[str, dict[str, str]]]]]:
    """A server answering every GET with `body`; the URL, and the requests it has seen."""
    seen: list[tuple[str, dict[str, str]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((self.path, dict(self.headers)))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = QuietServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (200, b"<html>hello</html>", "not a Prometheus answer: HTTP 200, not JSON"),
        (200, b'{"hello": "world"}', "not a Prometheus answer: HTTP 200"),
        (
            200,
            b'{"status": "success", "data": {"resultType": "vector"}}',
            "not a Prometheus answer: unexpected JSON",
        ),
        (
            200,
            b'{"status": "success", "data": {"resultType": "scalar", "result": [1, "x"]}}',
            "not a Prometheus answer: unexpected JSON",
        ),
        (
            503,
            b'{"status": "error", "errorType": "timeout", "error": "query timed out"}',
            "query error: timeout: query timed out",
        ),
        (502, b"Bad Gateway", "not a Prometheus answer: HTTP 502, not JSON"),
    ],
)
def test_a_wrong_answer_is_no_data_with_the_reason(status: int, body: bytes, error: str) -> None:
    with answering(status, body) as (address, _):
        assert ask(f"http://{address}", "1") == QueryResult(None, error)


def test_the_request_keeps_the_path_prefix_and_sends_credentials_and_the_timeout() -> None:
    scalar = b'{"status": "success", "data": {"resultType": "scalar", "result": [1, "7"]}}'
    with answering(200, scalar) as (address, seen):
        url = f"http://reader:p%40ss@{address}/prometheus/"
        assert ask(url, 'up{job="$service"}', timeout=1.5, service="web") == QueryResult(7.0, None)
    [(path, headers)] = seen
    assert path == "/prometheus/api/v1/query?query=up%7Bjob%3D%22web%22%7D&timeout=1.5"
    assert headers["Host"] == address
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"reader:p@ss").decode()
