"""Services finding each other by name, as a user meets it with each data plane: one app
calls another by `$ORDERS_URL` (and a stateful instance by `$DB_0_URL`), a variable set in
the service's `env` wins, and the addresses stay the same when the stack comes up again.
"""

from __future__ import annotations

import http.client
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apps import APP
from tests.conftest import run_sqlifier
from tests.servers import KINDS, free_port

CALLER = """\
import os, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        name = self.path.strip("/")
        url = os.environ.get(name, "")
        if url.startswith("http"):
            body = urllib.request.urlopen(url + "/from-web", timeout=10).read()
        else:
            body = ("unset" if not url else "value:" + url).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


@pytest.fixture(params=KINDS)
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, int]]:
    port = free_port()
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "caller.py").write_text(CALLER)
    ready = 'probes.readiness = { http = "/", period = "200ms" }\n'
    (tmp_path / "sqlifier.toml").write_text(
        f'[stack]\nname = "t"\n\n[router]\nkind = "{request.param}"\n'
        f'listen = "127.0.0.1:{port}"\n\n'
        f'[services.web]\nrun = "{sys.executable} caller.py"\nroutes = ["/"]\n'
        f'env = {{ PAY_URL = "mine" }}\n{ready}\n'
        f'[services.orders]\nrun = "{sys.executable} app.py"\ninstances = 2\n{ready}\n'
        f'[services.pay]\nrun = "{sys.executable} app.py"\n{ready}\n'
        f'[services.db]\nrun = "{sys.executable} app.py"\nstateful = true\ninstances = 2\n{ready}'
    )
    yield tmp_path, port
    run_sqlifier("down", cwd=tmp_path)


def get(port: int, path: str) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status == 200, response.status
        return response.read().decode()
    finally:
        connection.close()


def test_an_app_calls_another_by_its_url_and_the_addresses_last(
    stack: tuple[Path, int],
) -> None:
    root, port = stack
    up = run_sqlifier("up", "--detach", cwd=root)
    assert up.returncode == 0, up.stderr
    assert {get(port, "/ORDERS_URL") for _ in range(6)} == {"orders-0", "orders-1"}
    assert {get(port, "/DB_1_URL") for _ in range(3)} == {"db-1"}
    assert get(port, "/DB_URL") in ("db-0", "db-1")
    assert get(port, "/PAY_URL") == "value:mine"  # the service's own `env` wins
    assert get(port, "/WEB_URL") == "unset"  # an instance is told the others only
    ports = json.loads((root / ".sqlifier" / "dev" / "internal-ports.json").read_text())

    assert run_sqlifier("down", cwd=root).returncode == 0
    up = run_sqlifier("up", "--detach", cwd=root)
    assert up.returncode == 0, up.stderr
    assert json.loads((root / ".sqlifier" / "dev" / "internal-ports.json").read_text()) == ports
    assert get(port, "/DB_0_URL") == "db-0"


@pytest.mark.parametrize("kind", KINDS)
def test_a_stack_without_routes_runs_the_router_for_its_internal_addresses_only(
    tmp_path: Path, kind: str
) -> None:
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "caller.py").write_text(CALLER)
    ready = 'probes.readiness = { http = "/", period = "200ms" }\n'
    (tmp_path / "sqlifier.toml").write_text(
        f'[stack]\nname = "t"\n\n[router]\nkind = "{kind}"\n\n'
        f'[services.worker]\nrun = "{sys.executable} caller.py"\n{ready}\n'
        f'[services.db]\nrun = "{sys.executable} app.py"\n{ready}'
    )
    try:
        up = run_sqlifier("up", "--detach", cwd=tmp_path)
        assert up.returncode == 0, up.stderr
        assert f"router: {kind} for the services' internal addresses (no routes)" in up.stdout
        shown = run_sqlifier("ps", cwd=tmp_path).stdout
        assert f"router: {kind} for the services' internal addresses (no routes)" in shown
        rows = json.loads(run_sqlifier("ps", "--json", cwd=tmp_path).stdout)
        worker = next(r for r in rows if r["instance"] == "worker-0")
        assert get(int(worker["port"]), "/DB_URL") == "db-0"
    finally:
        run_sqlifier("down", cwd=tmp_path)
