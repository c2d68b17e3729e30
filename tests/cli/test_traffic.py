"""The router as a user meets it, with each data plane: `up` starts it and says which one,
requests reach only ready instances, `restart` and scale-down under load fail no request,
killing the agent drops no request, no ready instance is a 503, `down` leaves nothing.

HAProxy runs when the `haproxy` binary is installed (.ci/run installs it); otherwise its
case is skipped with that reason.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from sqlifier.agent.client import AgentClient
from sqlifier.errors import UserError
from tests.apps import APP
from tests.conftest import run_sqlifier
from tests.load import Load
from tests.servers import KINDS, free_port


@pytest.fixture(params=KINDS)
def routed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, int]]:
    port = free_port()
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "sqlifier.toml").write_text(
        f'[stack]\nname = "t"\n\n[router]\nkind = "{request.param}"\n'
        f'listen = "127.0.0.1:{port}"\n\n'
        f'[services.web]\nrun = "{sys.executable} app.py"\ninstances = 2\nroutes = ["/"]\n'
        'stop_timeout = "5s"\nprobes.readiness = { http = "/", period = "200ms" }\n\n'
        f'[services.pay]\nrun = "{sys.executable} app.py"\nroutes = ["/api/pay"]\n'
        'probes.readiness = { http = "/", period = "200ms" }\n'
    )
    yield tmp_path, port
    run_sqlifier("down", cwd=tmp_path)


def router_pid(root: Path) -> int:
    info = json.loads((root / ".sqlifier" / "dev" / "agent.json").read_text())
    return int(info["router"]["pid"])


def router_pid_or_none(root: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return router_pid(root)
    return None


def agent_pid(root: Path) -> int:
    return int(json.loads((root / ".sqlifier" / "dev" / "agent.json").read_text())["pid"])


def answer(port: int, path: str = "/") -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_requests_reach_ready_instances_and_replacements_fail_none(
    routed: tuple[Path, int],
) -> None:
    root, port = routed
    kind = "haproxy" if "haproxy" in (root / "sqlifier.toml").read_text() else "embedded"
    up = run_sqlifier("up", "--detach", cwd=root)
    assert up.returncode == 0, up.stderr
    assert f"router: {kind} on http://127.0.0.1:{port}" in up.stdout

    assert {answer(port)[1] for _ in range(4)} == {"web-0", "web-1"}
    assert answer(port, "/api/pay/x") == (200, "pay-0")

    with Load(port, clients=4, pause=0) as load:
        time.sleep(0.5)
        restart = run_sqlifier("restart", "web", cwd=root)
        time.sleep(0.5)
    assert restart.returncode == 0, restart.stderr
    assert load.outcomes["200"] > 20 and load.failed == {}, load.outcomes

    with Load(
        port, "/api/pay", clients=4, pause=0
    ) as load:  # one instance: its replacement starts first
        time.sleep(0.5)
        restart = run_sqlifier("restart", "pay", cwd=root)
        time.sleep(0.5)
    assert restart.returncode == 0, restart.stderr
    assert load.outcomes["200"] > 20 and load.failed == {}, load.outcomes

    with Load(port, clients=4, pause=0) as load:
        time.sleep(0.5)
        scale = run_sqlifier("scale", "web", "1", cwd=root)
        time.sleep(0.5)
    assert scale.returncode == 0, scale.stderr
    assert load.outcomes["200"] > 20 and load.failed == {}, load.outcomes
    assert {answer(port)[1] for _ in range(4)} == {"web-0"}

    time.sleep(1.2)  # the agent reads the router's counters every second
    shown = run_sqlifier("ps", cwd=root).stdout
    assert f"router: {kind} on http://127.0.0.1:{port}" in shown
    assert "REQ/S" in shown and "P99" in shown
    rows = json.loads(run_sqlifier("ps", "--json", cwd=root).stdout)
    web = next(r for r in rows if r["instance"] == "web-0")
    assert web["traffic"]["rps"] > 0

    assert run_sqlifier("scale", "web", "0", cwd=root).returncode == 0
    status, body = answer(port)
    assert status == 503 and body.startswith("no instance ready")

    router = router_pid(root)
    assert run_sqlifier("down", cwd=root).returncode == 0
    assert not psutil.pid_exists(router) or psutil.Process(router).status() == "zombie"


def test_killing_the_agent_drops_no_request(routed: tuple[Path, int]) -> None:
    root, port = routed
    assert run_sqlifier("up", "--detach", cwd=root).returncode == 0
    router = router_pid(root)
    with Load(port, clients=4, pause=0) as load:
        time.sleep(0.5)
        os.kill(agent_pid(root), signal.SIGKILL)
        time.sleep(1.0)
        again = run_sqlifier("up", "--detach", cwd=root)
        time.sleep(1.0)
    assert again.returncode == 0, again.stderr
    assert load.outcomes["200"] > 20 and load.failed == {}, load.outcomes
    assert router_pid(root) == router  # the same data plane, adopted
    assert {answer(port)[1] for _ in range(4)} == {"web-0", "web-1"}


def test_a_dead_data_plane_is_started_again_and_shares_are_set_over_the_api(
    routed: tuple[Path, int],
) -> None:
    root, port = routed
    assert run_sqlifier("up", "--detach", cwd=root).returncode == 0
    router = router_pid(root)
    os.killpg(router, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while True:
        try:
            if answer(port)[0] == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "the router was not started again"
        time.sleep(0.2)
    deadline = time.monotonic() + 5
    while router_pid_or_none(root) in (None, router) and time.monotonic() < deadline:
        time.sleep(0.1)  # the agent records the new process a moment after it answers
    assert router_pid_or_none(root) not in (None, router)

    client = AgentClient(root / ".sqlifier" / "dev", "dev")
    reply = client.request("POST", "/v1/traffic", {"service": "web", "canary_percent": 12.5})
    assert reply == {"ok": True, "canary_percent": 12.5}
    # No canary instance runs yet: the canary's share goes to stable rather than fail.
    assert {answer(port)[0] for _ in range(20)} == {200}
    with pytest.raises(UserError, match="from 0 to 100"):
        client.request("POST", "/v1/traffic", {"service": "web", "canary_percent": 101})
    with pytest.raises(UserError, match="routed: web, pay"):
        client.request("POST", "/v1/traffic", {"service": "nope", "canary_percent": 1})


def test_a_taken_router_port_stops_up_with_a_clear_message(routed: tuple[Path, int]) -> None:
    root, port = routed
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        up = run_sqlifier("up", "--detach", cwd=root)
    assert up.returncode == 1
    assert f"the router cannot listen on 127.0.0.1:{port}" in up.stderr
    assert "Traceback" not in up.stderr
