"""Issue 22 §1 as a user meets it: `sqlifier up` with HAProxy as the data plane, clients
on loopback, the data plane process killed with SIGKILL. HAProxy keeps serving, the agent
starts the data plane again and it adopts HAProxy, `ps` shows no error, `restart` fails
no request, and `down` leaves no HAProxy behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.apps import APP
from tests.conftest import run_sqlifier
from tests.load import Load
from tests.servers import free_port

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    port = free_port()
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "sqlifier.toml").write_text(
        f'[stack]\nname = "t"\n\n[router]\nkind = "haproxy"\nlisten = "127.0.0.1:{port}"\n\n'
        f'[services.web]\nrun = "{sys.executable} app.py"\ninstances = 2\nroutes = ["/"]\n'
        'stop_timeout = "5s"\nprobes.readiness = { http = "/", period = "200ms" }\n'
    )
    yield tmp_path, port
    run_sqlifier("down", cwd=tmp_path)


def _until(condition: Callable[[], bool], bound: float = 20) -> None:
    """Wait until `condition()` holds; fail if it does not within `bound` seconds."""
    deadline = time.monotonic() + bound
    while not condition():
        assert time.monotonic() < deadline, "not within the bound"
        time.sleep(0.05)


def _router_pid(root: Path) -> int | None:
    try:
        return int(json.loads((root / ".sqlifier/dev/agent.json").read_text())["router"]["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def test_a_killed_haproxy_data_plane_is_replaced_and_adopts_haproxy(
    stack: tuple[Path, int],
) -> None:
    root, port = stack
    up = run_sqlifier("up", "--detach", cwd=root)
    assert up.returncode == 0, up.stderr
    haproxy = int((root / ".sqlifier/dev/haproxy/haproxy.pid").read_text().split()[0])
    router = _router_pid(root)
    assert router is not None
    with Load(port, clients=4, pause=0) as load:
        _until(lambda: load.outcomes["200"] > 50)
        os.kill(router, signal.SIGKILL)  # the data plane only; HAProxy is left running
        _until(lambda: _router_pid(root) not in (None, router))
        seen = load.outcomes["200"]
        restart = run_sqlifier("restart", "web", cwd=root)
        _until(lambda: load.outcomes["200"] > seen + 50)
    assert restart.returncode == 0, restart.stderr
    assert load.failed == {}, load.outcomes  # HAProxy served throughout, restart included
    shown = run_sqlifier("ps", cwd=root).stdout
    assert f"router: haproxy on http://127.0.0.1:{port}" in shown
    assert "error" not in shown, shown
    assert int((root / ".sqlifier/dev/haproxy/haproxy.pid").read_text().split()[0]) == haproxy

    assert run_sqlifier("down", cwd=root).returncode == 0
    assert not psutil.pid_exists(haproxy) or psutil.Process(haproxy).status() == "zombie"
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))  # nothing holds the port any more
