"""The same behaviour from both data planes, each run as the real process the agent starts
(`python -m sqlifier.router`), driven over its control socket, with real backends.

HAProxy tests run when the `haproxy` binary is installed (.ci/run installs it) and are
skipped with that reason otherwise.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import pytest

from sqlifier.router.haproxy import LOGGED, SAMPLE_RANGE, sample_size
from tests.servers import KINDS, QuietServer, free_port


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body are two writes: no 40 ms wait between
    name = "?"

    def do_GET(self) -> None:
        if self.path.startswith("/slow"):
            time.sleep(1.0)
        payload = json.dumps(
            {
                "instance": self.name,
                "path": self.path,
                # One header or several: the same list (RFC 9110, 5.3).
                "xff": ", ".join(self.headers.get_all("X-Forwarded-For") or []),
                "xfh": self.headers.get("X-Forwarded-Host"),
                "xfp": self.headers.get("X-Forwarded-Proto"),
                "via": self.headers.get("Via"),
            }
        ).encode()
        self.send_response(500 if self.path == "/fail" else 200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        payload = json.dumps({"instance": self.name, "received": len(body)}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


class Backends:
    def __init__(self) -> None:
        self.servers: dict[str, ThreadingHTTPServer] = {}

    def start(self, name: str) -> int:
        handler = type(f"Echo_{name}", (Echo,), {"name": name})
        server = QuietServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.servers[name] = server
        return int(server.server_address[1])

    def close(self) -> None:
        for server in self.servers.values():
            server.shutdown()
            server.server_close()


class Plane:
    """A running data plane process and a blocking control connection to it."""

    def __init__(self, kind: str, state_dir: Path) -> None:
        self.kind = kind
        self.state_dir = state_dir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sqlifier.router",
                "--state-dir",
                str(self.state_dir),
                "--kind",
                self.kind,
                "--listen",
                f"127.0.0.1:{self.port}",
            ],
            start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "the data plane exited"
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(str(self.state_dir / "router.sock"))
                self.call({"op": "ping"})
                return
            except OSError:
                assert self.sock is not None
                self.sock.close()
                time.sleep(0.05)
        raise AssertionError("the data plane did not answer")

    def call(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.sock is not None
        self.sock.sendall(json.dumps(message).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = self.sock.recv(1 << 20)
            assert chunk, "the data plane closed the control connection"
            data += chunk
        reply: dict[str, Any] = json.loads(data)
        assert reply["ok"], reply
        return reply

    def sync(self, routes: dict[str, list[dict[str, Any]]], services: dict[str, Any]) -> None:
        self.call({"op": "sync", "state": {"routes": routes, "services": services}})

    def kill(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if self.process is not None:
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            self.process = None


def backend(
    name: str, port: int, track: str = "stable", state: str = "ready", probe: int = 0
) -> dict[str, Any]:
    return {
        "id": f"{name}_{port}",
        "instance": name,
        "address": f"127.0.0.1:{port}",
        "track": track,
        "state": state,
        "probe": probe,
    }


@pytest.fixture(params=KINDS)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Plane, Backends]]:
    servers = Backends()
    plane = Plane(request.param, tmp_path / "state")
    plane.start()
    try:
        yield plane, servers
    finally:
        plane.stop()
        servers.close()


def ask(
    port: int, path: str = "/", host: str = "localhost", method: str = "GET", **kw: Any
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        connection.request(method, path, headers={"Host": host, **kw.pop("headers", {})}, **kw)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def instances(port: int, count: int, path: str = "/") -> Counter[str | int]:
    """Who answered `count` GETs on one kept-alive connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    seen: Counter[str | int] = Counter()
    try:
        for _ in range(count):
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
            seen[json.loads(body)["instance"] if response.status == 200 else response.status] += 1
    finally:
        connection.close()
    return seen


ROUTES: dict[str, list[dict[str, Any]]] = {
    "web": [{"host": None, "path": "/"}],
    "api": [{"host": "api.localhost", "path": "/"}, {"host": None, "path": "/api"}],
    "empty": [{"host": None, "path": "/empty"}],
}


def test_routes_longest_prefix_and_forwarded_headers(world: tuple[Plane, Backends]) -> None:
    plane, servers = world
    web, api = servers.start("web-0"), servers.start("api-0")
    plane.sync(
        ROUTES,
        {
            "web": {"backends": [backend("web-0", web)]},
            "api": {"backends": [backend("api-0", api)]},
        },
    )
    status, body = ask(plane.port, "/api/orders", headers={"X-Forwarded-For": "10.0.0.9"})
    answer = json.loads(body)
    assert (status, answer["instance"]) == (200, "api-0")
    assert answer["xff"] == "10.0.0.9, 127.0.0.1"
    assert (answer["xfh"], answer["xfp"], answer["via"]) == ("localhost", "http", "1.1 sqlifier")
    assert json.loads(ask(plane.port, "/apix")[1])["instance"] == "web-0"  # whole segments
    assert json.loads(ask(plane.port, "/", host="api.localhost:8080")[1])["instance"] == "api-0"


def test_no_route_is_404_and_no_ready_instance_is_503(world: tuple[Plane, Backends]) -> None:
    plane, servers = world
    api = servers.start("api-0")
    plane.sync(
        {"empty": ROUTES["empty"], "api": ROUTES["api"]},
        {"empty": {"backends": []}, "api": {"backends": [backend("api-0", api, state="drain")]}},
    )
    status, body = ask(plane.port, "/nothing")
    assert status == 404 and body.startswith(b"no route")
    status, body = ask(plane.port, "/empty")
    assert status == 503 and body.startswith(b"no instance ready")
    assert ask(plane.port, "/api")[0] == 503  # draining instances take nothing new
    for text in (body, ask(plane.port, "/nothing")[1]):
        assert b"127.0.0.1" not in text and b"haproxy" not in text.lower()


@pytest.mark.parametrize("share", [1, 10, 50])
def test_canary_share_is_honoured(world: tuple[Plane, Backends], share: int) -> None:
    plane, servers = world
    stable = [backend(f"web-{i}", servers.start(f"web-{i}")) for i in range(2)]
    canary = backend("web-canary-0", servers.start("web-canary-0"), track="canary")
    plane.sync(
        {"web": ROUTES["web"]}, {"web": {"canary": share * 10, "backends": [*stable, canary]}}
    )
    seen = instances(plane.port, 2000)
    assert abs(seen["web-canary-0"] / 2000 * 100 - share) <= 1.5, seen
    assert abs(seen["web-0"] - seen["web-1"]) <= 2  # balanced within the stable track


def test_a_split_change_is_in_force_for_the_next_request(world: tuple[Plane, Backends]) -> None:
    plane, servers = world
    stable = backend("web-0", servers.start("web-0"))
    canary = backend("web-c", servers.start("web-c"), track="canary")
    routes = {"web": ROUTES["web"]}
    plane.sync(routes, {"web": {"canary": 1000, "backends": [stable, canary]}})
    assert instances(plane.port, 20) == {"web-c": 20}
    plane.sync(routes, {"web": {"canary": 0, "backends": [stable, canary]}})
    assert instances(plane.port, 20) == {"web-0": 20}


def test_drain_finishes_in_flight_and_sends_nothing_new(world: tuple[Plane, Backends]) -> None:
    plane, servers = world
    first = backend("web-0", servers.start("web-0"))
    second = backend("web-1", servers.start("web-1"))
    routes = {"web": ROUTES["web"]}
    plane.sync(routes, {"web": {"backends": [first, second]}})
    results: list[tuple[int, bytes]] = []
    slow = [
        threading.Thread(target=lambda: results.append(ask(plane.port, "/slow"))) for _ in range(4)
    ]
    for thread in slow:
        thread.start()
    time.sleep(0.3)  # the slow requests are at the backends now
    plane.sync(routes, {"web": {"backends": [{**first, "state": "drain"}, second]}})
    inflight = {
        b["instance"]: b["inflight"] for b in plane.call({"op": "stats"})["backends"].values()
    }
    assert inflight["web-0"] >= 1
    assert instances(plane.port, 10) == {"web-1": 10}
    for thread in slow:
        thread.join(10)
    assert [status for status, _ in results] == [200] * 4


def test_a_refusing_instance_is_ejected_until_its_probe_passes(
    world: tuple[Plane, Backends],
) -> None:
    plane, servers = world
    good = backend("web-0", servers.start("web-0"))
    dead = backend("web-1", free_port())  # nothing listens there
    routes = {"web": ROUTES["web"]}
    plane.sync(routes, {"web": {"backends": [good, dead]}})
    assert instances(plane.port, 20) == {"web-0": 20}  # retried elsewhere, never failed
    time.sleep(0.6)  # HAProxy's driver looks at connection errors four times a second
    stats = plane.call({"op": "stats"})["backends"]
    assert stats[dead["id"]]["ejected"] is True
    plane.sync(routes, {"web": {"backends": [good, {**dead, "probe": 1}]}})
    stats = plane.call({"op": "stats"})["backends"]
    assert stats[dead["id"]]["ejected"] is False


def test_counts_and_latencies_per_backend_and_track(world: tuple[Plane, Backends]) -> None:
    plane, servers = world
    port = servers.start("web-0")
    plane.sync({"web": ROUTES["web"]}, {"web": {"backends": [backend("web-0", port)]}})
    for path in ["/"] * 7 + ["/fail"] * 3:
        ask(plane.port, path)
    deadline = time.monotonic() + 5
    while True:
        stats = plane.call({"op": "stats"})
        mine = stats["backends"][f"web-0_{port}"]
        if sum(mine["latency"]) == 10 or time.monotonic() > deadline:
            break
        time.sleep(0.1)  # HAProxy's log lines arrive a moment after the answers
    assert mine["requests"] == 10
    assert (mine["status"]["2xx"], mine["status"]["5xx"]) == (7, 3)
    assert sum(mine["latency"]) == 10
    assert stats["services"]["web"]["stable"]["status"]["2xx"] == 7
    assert stats["kind"] == plane.kind


def test_bodies_pass_through(world: tuple[Plane, Backends]) -> None:
    plane, servers = world
    port = servers.start("web-0")
    plane.sync({"web": ROUTES["web"]}, {"web": {"backends": [backend("web-0", port)]}})
    big = b"x" * 3_000_000
    status, body = ask(plane.port, "/upload", method="POST", body=big)
    assert (status, json.loads(body)["received"]) == (200, len(big))


def test_a_restarted_data_plane_serves_its_last_state(world: tuple[Plane, Backends]) -> None:
    plane, servers = world
    port = servers.start("web-0")
    plane.sync({"web": ROUTES["web"]}, {"web": {"backends": [backend("web-0", port)]}})
    plane.kill()
    plane.start()
    assert instances(plane.port, 5) == {"web-0": 5}


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_comes_back_as_it_was_after_it_dies(tmp_path: Path) -> None:
    servers = Backends()
    plane = Plane("haproxy", tmp_path / "state")
    plane.start()
    try:
        stable = [backend(f"web-{i}", servers.start(f"web-{i}")) for i in range(2)]
        canary = backend("web-c", servers.start("web-c"), track="canary")
        drained = {**stable[1], "state": "drain"}
        plane.sync(
            {"web": ROUTES["web"]},
            {"web": {"canary": 100, "backends": [stable[0], drained, canary]}},
        )
        assert plane.process is not None
        haproxy = [p for p in psutil.Process(plane.process.pid).children() if p.name() == "haproxy"]
        assert haproxy, "no haproxy under the data plane"
        for process in haproxy:
            process.kill()
        deadline = time.monotonic() + 15
        while True:  # the data plane starts it again from its state
            try:
                seen = instances(plane.port, 1000)
                break
            except OSError:
                assert time.monotonic() < deadline, "haproxy did not come back"
                time.sleep(0.2)
        assert seen == {"web-0": 900, "web-c": 100}
        state = (tmp_path / "state" / "haproxy" / "haproxy.state").read_text()
        assert "web-1_" in state  # runtime changes are saved in the server-state file
    finally:
        plane.stop()
        servers.close()


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_samples_busy_stable_latencies_and_logs_every_canary_request(
    tmp_path: Path,
) -> None:
    """Above LOGGED requests/s HAProxy logs a sample of the stable track's requests (its
    latencies are percentiles either way), but every canary request: canary analysis
    never works from a sample."""
    servers = Backends()
    plane = Plane("haproxy", tmp_path / "state")
    plane.start()
    try:
        stable = backend("web-0", servers.start("web-0"))
        canary = backend("web-c", servers.start("web-c"), track="canary")
        plane.sync({"web": ROUTES["web"]}, {"web": {"canary": 100, "backends": [stable, canary]}})

        def tracks() -> tuple[dict[str, Any], dict[str, Any]]:
            services = plane.call({"op": "stats"})["services"]["web"]
            return services["stable"], services["canary"]

        deadline = time.monotonic() + 60
        while True:  # busy until the stable track's log is a sample
            threads = [threading.Thread(target=instances, args=(plane.port, 400)) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            mine, _ = tracks()
            if sum(mine["latency"]) < mine["requests"]:
                break
            assert time.monotonic() < deadline, "never above 250 requests/s; nothing sampled"
        while True:  # the canary's log lines arrive a moment after the answers
            _, theirs = tracks()
            if sum(theirs["latency"]) == theirs["requests"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert theirs["requests"] > 0
        assert sum(theirs["latency"]) == theirs["requests"]
    finally:
        plane.stop()
        servers.close()


def test_the_log_sample_keeps_about_250_stable_requests_a_second() -> None:
    assert sample_size(0) == sample_size(LOGGED) == SAMPLE_RANGE  # quiet: every request
    for rate in (500, 4_000, 40_000, 400_000):
        assert abs(rate * sample_size(rate) / SAMPLE_RANGE - LOGGED) < LOGGED * 0.03
    assert sample_size(10**9) == 1  # never nothing
