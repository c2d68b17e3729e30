"""An isolated instance calls other services by name: its `<NAME>_URL` names the data
plane's internal listener on the stack's bridge (the loopback it would otherwise be given
is its own namespace's), and its egress allows exactly the listeners of the services it
names. Through `sqlifier up`, on real namespaces and nftables, with both data planes."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from sqlifier.platform.traffic import Traffic
from sqlifier.router.internal import bridged, discovery_env, haproxy_frontends, reachable
from sqlifier.router.state import DesiredState, Listener, ServiceTraffic
from sqlifier.runtime.fence import bridge_address
from sqlifier.runtime.netns import StackNetwork
from sqlifier.runtime.supervisor import Supervisor
from sqlifier.stack import load_stack
from tests.apps import APP
from tests.cli.test_up import ps
from tests.conftest import run_sqlifier
from tests.isolation.nets import REASON, leftovers, wait_for

# GET /url/NAME: fetch the URL in the variable NAME; answer its body, or "failed ...".
# GET /env/NAME: the variable's value.
CALLER = """\
import os, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        _, kind, name = self.path.split("/")
        if kind == "env":
            body = os.environ.get(name, "").encode()
        else:
            try:
                with urllib.request.urlopen(os.environ[name], timeout=3) as r:
                    body = b"ok " + r.read()
            except Exception as exc:
                body = f"failed {exc}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


def test_bridged_listeners_and_the_urls_each_side_is_told() -> None:
    loopback = (
        Listener("orders", "orders", None, "127.0.0.1", 4101),
        Listener("orders-0", "orders", "orders-0", "127.0.0.1", 4103),
        Listener("web", "web", None, "127.0.0.1", 4102),
    )
    both = bridged(loopback, "10.7.0.1")
    assert len(both) == 6 and bridged(loopback, None) == loopback
    # A plain instance is told the loopback, an isolated one the bridge.
    assert discovery_env(both, "web") == {
        "ORDERS_URL": "http://127.0.0.1:4101",
        "ORDERS_0_URL": "http://127.0.0.1:4103",
    }
    assert discovery_env(both, "web", "10.7.0.1") == {
        "ORDERS_URL": "http://10.7.0.1:4101",
        "ORDERS_0_URL": "http://10.7.0.1:4103",
    }
    # `egress = ["orders"]` allows orders' listeners on the bridge, no other.
    assert reachable(both, "orders", "10.7.0.1") == [("10.7.0.1", 4101), ("10.7.0.1", 4103)]
    # HAProxy: one frontend per name, a named bind per address; the bridge's is
    # `transparent`, bound before the bridge exists.
    state = DesiredState({}, {"orders": ServiceTraffic(), "web": ServiceTraffic()}, both)
    lines = haproxy_frontends(state, {"orders": 1, "web": 2}, "int(0)", "{ always_false }")
    at = lines.index("frontend internal.orders")
    assert lines[at + 1 : at + 3] == [
        "    bind 127.0.0.1:4101 name loopback",
        "    bind 10.7.0.1:4101 name bridge transparent",
    ]
    assert sum(line.startswith("frontend internal.orders") for line in lines) == 2


@pytest.mark.skipif(REASON is not None, reason=f"cannot isolate here: {REASON}")
@pytest.mark.parametrize("kind", ["embedded", "haproxy"])
def test_an_isolated_service_reaches_the_service_it_names_and_nothing_else(
    kind: str, tmp_path: Path
) -> None:
    (tmp_path / "caller.py").write_text(CALLER)
    (tmp_path / "app.py").write_text(APP)
    ready = 'probes.readiness = { tcp = true, period = "100ms" }'
    (tmp_path / "sqlifier.toml").write_text(
        f'[stack]\nname = "bridge"\n[router]\nkind = "{kind}"\n[metrics]\nlisten = "off"\n'
        f'[services.web]\nrun = "{sys.executable} caller.py"\n{ready}\n'
        'isolation = "network"\negress = ["orders"]\n'
        f'[services.orders]\nrun = "{sys.executable} app.py"\n{ready}\n'
        f'[services.payments]\nrun = "{sys.executable} app.py"\n{ready}\n'
    )
    state = tmp_path / ".sqlifier" / "dev"
    bridge = bridge_address(state)
    try:
        up = run_sqlifier("up", "--detach", cwd=tmp_path)
        assert up.returncode == 0, up.stderr + up.stdout
        rows = {row["instance"]: row for row in ps(tmp_path)}
        web = f"http://{rows['web-0']['address']}"
        assert str(rows["orders-0"]["address"]).startswith("127.0.0.1:")

        def get(path: str) -> str:
            with urllib.request.urlopen(web + path, timeout=10) as response:
                return str(response.read().decode())

        ports = json.loads((state / "internal-ports.json").read_text())
        assert get("/env/ORDERS_URL") == f"http://{bridge}:{ports['orders']}"
        assert get("/env/PAYMENTS_URL") == f"http://{bridge}:{ports['payments']}"
        assert get("/url/ORDERS_URL") == "ok orders-0"
        denied = get("/url/PAYMENTS_URL")
        assert denied.startswith("failed") and "refused" in denied, denied
        # The agent's record of its instances' events (`up` in the foreground prints them).
        agent_log = state / "agent.log"
        wait_for(lambda: "egress-denied" in agent_log.read_text())
        assert f"to {bridge}:{ports['payments']} denied by its egress" in agent_log.read_text()
        table = subprocess.run(
            ["nft", "list", "table", "inet", StackNetwork(state).table],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        allowed = [line.strip() for line in table.splitlines() if line.strip().endswith("accept")]
        assert [line for line in allowed if "saddr" in line] == [
            f"ip saddr {str(rows['web-0']['address']).split(':')[0]} ip daddr {bridge}"
            f" tcp dport {ports['orders']} accept"
        ]
    finally:
        run_sqlifier("down", cwd=tmp_path)
        StackNetwork(state).teardown()
    assert leftovers(StackNetwork(state).digest) == []


def test_the_traffic_side_tells_the_fence_and_the_instances_where_services_are(
    tmp_path: Path,
) -> None:
    # No process runs: the agent's traffic side as it is wired, read back.
    path = tmp_path / "sqlifier.toml"
    plain = (
        '[stack]\nname = "t"\n'
        '[services.web]\nrun = "web"\n'
        '[services.orders]\nrun = "orders"\nstateful = true\ninstances = 2\n'
        '[services.payments]\nrun = "payments"\n'
    )
    path.write_text(plain)
    stack, _ = load_stack(path)
    state = tmp_path / ".sqlifier" / "dev"
    traffic = Traffic(stack, "dev", state, Supervisor(stack, "dev", state))
    # A stack that asks for no isolation: the loopback only, as before.
    assert traffic.bridge is None
    assert {lst.host for lst in traffic.listeners()} == {"127.0.0.1"}

    path.write_text(
        plain.replace('run = "web"\n', 'run = "web"\nisolation = "network"\negress = ["orders"]\n')
    )
    stack, _ = load_stack(path)
    supervisor = Supervisor(stack, "dev", state)
    traffic = Traffic(stack, "dev", state, supervisor)
    bridge = bridge_address(state)
    ports = traffic.ports.ports
    assert traffic.bridge == bridge
    assert supervisor.fence.internal is not None
    assert sorted(supervisor.fence.internal("orders")) == sorted(
        (bridge, ports[name]) for name in ("orders", "orders-0", "orders-1")
    )
    assert traffic.discovery_env(stack.services["web"])["ORDERS_1_URL"] == (
        f"http://{bridge}:{ports['orders-1']}"
    )
    assert traffic.discovery_env(stack.services["payments"])["ORDERS_URL"] == (
        f"http://127.0.0.1:{ports['orders']}"
    )
