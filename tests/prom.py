"""A real Prometheus for tests and benchmarks: a metrics server to scrape, a Prometheus
scraping it, and its query API.

    with MetricsServer(render(snapshot)) as metrics, running_prometheus(
        tmp_path, [metrics.address]
    ) as prometheus:
        assert wait_for_value(prometheus.url, 'sqlifier_engine_paused') == 0.0

Prometheus and promtool come from the Debian package `prometheus` (CI installs it); tests
that need them are skipped with a reason when they are missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from sqlifier.signals.exposition import CONTENT_TYPE
from tests.servers import QuietServer, free_port

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus is not installed (Debian package `prometheus`)"
)
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package `prometheus`)"
)

# Polling until a condition holds; the deadline only stops a test that would hang.
DEADLINE = 60.0
POLL = 0.2

# No proxy from the environment between a test and a server on 127.0.0.1.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class MetricsServer:
    """Serves `text` at /metrics with the exposition content type, from a thread.

    Assign `text` to change what the next scrape reads.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                body = owner.text.encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = QuietServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Prometheus:
    url: str  # "http://127.0.0.1:PORT"
    process: subprocess.Popen[bytes]
    log: Path  # its stdout and stderr

    def stop(self) -> None:
        """Terminate and wait: Prometheus closes its database on SIGTERM."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_prometheus(
    workdir: Path,
    targets: Sequence[str],
    scrape_interval: str = "1s",
    evaluation_interval: str = "1m",
    rule_files: Sequence[Path] = (),
) -> Prometheus:
    """Start Prometheus on a free port of 127.0.0.1, scraping `targets` ("host:port",
    /metrics) as job "sqlifier" and evaluating `rule_files`, with its database in
    `workdir`; return once it is ready."""
    if PROMETHEUS is None:
        raise RuntimeError("prometheus is not installed (Debian package `prometheus`)")
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(  # JSON is YAML
        json.dumps(
            {
                "global": {
                    "scrape_interval": scrape_interval,
                    "evaluation_interval": evaluation_interval,
                },
                "rule_files": [str(r) for r in rule_files],
                "scrape_configs": [
                    {"job_name": "sqlifier", "static_configs": [{"targets": list(targets)}]}
                ],
            }
        )
    )
    port = free_port()
    log = workdir / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    prometheus = Prometheus(f"http://127.0.0.1:{port}", process, log)
    try:
        _wait_until_ready(prometheus)
    except BaseException:
        prometheus.stop()
        raise
    return prometheus


@contextmanager
def running_prometheus(
    workdir: Path, targets: Sequence[str], scrape_interval: str = "1s"
) -> Iterator[Prometheus]:
    prometheus = start_prometheus(workdir, targets, scrape_interval)
    try:
        yield prometheus
    finally:
        prometheus.stop()


def _wait_until_ready(prometheus: Prometheus) -> None:
    give_up = time.monotonic() + DEADLINE
    while time.monotonic() < give_up:
        if prometheus.process.poll() is not None:
            raise RuntimeError(f"prometheus exited:\n{prometheus.log.read_text()}")
        if _get(prometheus.url + "/-/ready")[0] == 200:
            return
        time.sleep(POLL)
    raise RuntimeError(f"prometheus not ready after {DEADLINE:g}s:\n{prometheus.log.read_text()}")


def instant(url: str, promql: str) -> dict[str, Any]:
    """The `data` of an instant query: {"resultType": ..., "result": ...}."""
    status, body = _get(f"{url}/api/v1/query?{urlencode({'query': promql})}")
    answer = json.loads(body)
    assert answer["status"] == "success", (status, answer)
    data: dict[str, Any] = answer["data"]
    return data


def wait_for_value(url: str, promql: str) -> float:
    """Poll the query until it returns one sample (a scrape has brought it); its value."""
    give_up = time.monotonic() + DEADLINE
    while time.monotonic() < give_up:
        data = instant(url, promql)
        if data["resultType"] == "scalar":
            return float(data["result"][1])
        if len(data["result"]) == 1:
            return float(data["result"][0]["value"][1])
        time.sleep(POLL)
    raise AssertionError(f"{promql} has no single value after {DEADLINE:g}s")


def _get(url: str) -> tuple[int, bytes]:
    """(status, body); status 0 when nothing answers."""
    try:
        with _OPENER.open(url, timeout=DEADLINE) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()
    except OSError:
        return 0, b""
