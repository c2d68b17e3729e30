"""The router reaches isolated instances on both data planes: a backend in its own network
namespace, listening on its loopback only, answers through the data plane process at the
namespace's address (the veth pair, then the namespace's redirect to 127.0.0.1)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlifier.runtime.netns import StackNetwork, enter_namespace
from tests.isolation.nets import REASON
from tests.router.test_dataplanes import Plane, ask
from tests.servers import KINDS

pytestmark = pytest.mark.skipif(REASON is not None, reason=f"cannot isolate here: {REASON}")

ECHO = """\
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = json.dumps({"instance": sys.argv[2], "peer": self.client_address[0]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Echo)
print("ready", flush=True)
server.serve_forever()
"""


@pytest.fixture(params=KINDS)
def plane(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Plane]:
    running = Plane(request.param, tmp_path / "router")
    running.start()
    try:
        yield running
    finally:
        running.stop()


def test_the_router_reaches_an_isolated_instance(plane: Plane, tmp_path: Path) -> None:
    net = StackNetwork(tmp_path / "state")
    process = None
    try:
        slot = net.attach("web-0_8000", 8000, [])
        process = subprocess.Popen(
            [*enter_namespace(slot.path), sys.executable, "-c", ECHO, "8000", "web-0"],
            stdout=subprocess.PIPE,
        )
        assert process.stdout is not None and process.stdout.readline() == b"ready\n"
        backend = {
            "id": "web-0_8000",
            "instance": "web-0",
            "address": f"{slot.address}:8000",
            "track": "stable",
            "state": "ready",
            "probe": 0,
        }
        plane.sync({"web": [{"host": None, "path": "/"}]}, {"web": {"backends": [backend]}})
        for _ in range(3):
            status, body = ask(plane.port, "/")
            assert status == 200, body
            # It came through the bridge: the host's bridge address is the peer.
            assert json.loads(body) == {"instance": "web-0", "peer": net.host}
    finally:
        if process is not None:
            process.kill()
            process.wait()
            if process.stdout is not None:
                process.stdout.close()
        net.teardown()
