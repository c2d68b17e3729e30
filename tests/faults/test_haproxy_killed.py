"""The HAProxy data plane's process killed with SIGKILL (issue: HAProxy was left behind,
holding the port, and the data plane started again failed on it).

Real processes throughout: the data plane as the agent starts it, HAProxy, a backend, and
clients on loopback. Runs when the `haproxy` binary is installed.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import psutil
import pytest

from tests.router.test_dataplanes import ROUTES, Backends, Plane, ask, backend
from tests.servers import free_port

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")


class Load:
    """A few clients sending GETs in a loop until stopped; what they got, counted."""

    def __init__(self, port: int, clients: int = 3) -> None:
        self.port = port
        self.seen: Counter[int | str] = Counter()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(20)

    def _run(self) -> None:
        while not self._stop.is_set():
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                connection.request("GET", "/")
                response = connection.getresponse()
                response.read()
                self.seen[response.status] += 1
            except OSError as exc:
                self.seen[type(exc).__name__] += 1
            finally:
                connection.close()


def _worker_pid(state_dir: Path) -> str:
    """The pid of HAProxy's worker: a reload would start a new one."""
    import asyncio

    from sqlifier.router.haproxy_admin import admin
    from sqlifier.router.haproxy_config import socket_dir

    path = socket_dir(state_dir / "haproxy") / "admin.sock"
    info = asyncio.run(admin(path, "show info"))
    return next(line.split(":", 1)[1] for line in info.splitlines() if line.startswith("Pid:"))


def _haproxy_pid(state_dir: Path) -> int:
    return int((state_dir / "haproxy" / "haproxy.pid").read_text().split()[0])


def test_a_restarted_data_plane_adopts_the_haproxy_left_running(tmp_path: Path) -> None:
    servers = Backends()
    state_dir = tmp_path / "state"
    first = Plane("haproxy", state_dir)
    first.start()
    second = Plane("haproxy", state_dir)
    second.port = first.port
    try:
        web = servers.start("web-0")
        first.sync(ROUTES, {"web": {"backends": [backend("web-0", web)]}})
        haproxy, worker = _haproxy_pid(state_dir), _worker_pid(state_dir)
        with Load(first.port) as load:
            while sum(load.seen.values()) < 50:
                threading.Event().wait(0.01)
            assert first.process is not None
            os.kill(first.process.pid, signal.SIGKILL)  # the data plane alone, not HAProxy
            first.process.wait()
            first.process = None
            second.start()  # it used to fail: "Address already in use"
            before = sum(load.seen.values())
            while sum(load.seen.values()) < before + 50:
                threading.Event().wait(0.01)
        assert set(load.seen) == {200}, load.seen  # HAProxy served throughout
        assert _haproxy_pid(state_dir) == haproxy  # the same HAProxy, adopted
        assert _worker_pid(state_dir) == worker  # without a reload: no connection closed
        second.sync(ROUTES, {"web": {"backends": [backend("web-0", web)]}})  # it is driven
        assert second.call({"op": "stats"})["backends"][f"web-0_{web}"]["requests"] > 0
    finally:
        second.stop()
        first.stop()
        servers.close()
    assert not psutil.pid_exists(haproxy) or psutil.Process(haproxy).status() == "zombie"
    with socket.socket() as probe:  # the port is free again: nothing was left behind
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", first.port))


@pytest.mark.parametrize("kind", ["haproxy", "embedded"])
def test_a_taken_port_is_named_with_what_holds_it(tmp_path: Path, kind: str) -> None:
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        result = subprocess.run(
            [
                *(sys.executable, "-m", "sqlifier.router", "--state-dir", str(tmp_path)),
                *("--kind", kind, "--listen", f"127.0.0.1:{port}"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 1
    name = psutil.Process().name()
    assert result.stderr.strip() == (
        f"the router cannot listen on 127.0.0.1:{port}: Address already in use"
        f" (held by {name}, pid {os.getpid()})"
    )


def test_a_pid_file_naming_another_process_is_not_adopted(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    (state_dir / "haproxy").mkdir(parents=True)
    (state_dir / "haproxy" / "haproxy.pid").write_text(f"{os.getpid()}\n")  # not HAProxy
    plane = Plane("haproxy", state_dir)
    try:
        plane.start()
        assert _haproxy_pid(state_dir) != os.getpid()
    finally:
        plane.stop()


def test_a_data_plane_that_cannot_start_again_is_the_routers_error(tmp_path: Path) -> None:
    """The agent's side: the data plane ended and cannot be started again (its port is
    taken). `ps` shows the router's error, naming the port and its holder; before, the
    agent's loop died on the exception and `ps` said `(pid None)`."""
    import asyncio

    from sqlifier.platform.traffic import Traffic
    from sqlifier.stack.stackfile import load_stack

    port = free_port()
    (tmp_path / "sqlifier.toml").write_text(
        f'[stack]\nname = "shop"\n[router]\nkind = "haproxy"\nlisten = "127.0.0.1:{port}"\n'
        '[services.web]\nrun = "python -m web"\nroutes = ["/"]\n'
    )
    stack, _ = load_stack(tmp_path / "sqlifier.toml")

    class NoInstances:
        def all_instances(self) -> list[object]:
            return []

    async def run() -> str | None:
        traffic = Traffic(stack, "dev", tmp_path / "state", NoInstances())  # type: ignore[arg-type]
        (tmp_path / "state").mkdir()
        task = asyncio.create_task(traffic._run())  # the data plane is gone: start it again
        try:
            async with asyncio.timeout(30):
                while traffic.error is None:
                    await asyncio.sleep(0.05)
        finally:
            traffic._stopping = True
            task.cancel()
        snapshot = traffic.snapshot()
        assert snapshot is not None
        return snapshot["error"]

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        error = asyncio.run(run())
    assert error == (
        f"the router did not start: the router cannot listen on 127.0.0.1:{port}:"
        f" Address already in use (held by {psutil.Process().name()}, pid {os.getpid()})"
    )


def test_down_while_the_data_plane_is_dead_leaves_no_haproxy(tmp_path: Path) -> None:
    """The data plane was killed and `down` comes before the agent started it again:
    the HAProxy it left is stopped too, found by its pid file."""
    import asyncio

    from sqlifier.router.haproxy import stop_left_behind

    state_dir = tmp_path / "state"
    plane = Plane("haproxy", state_dir)
    plane.start()
    try:
        haproxy = _haproxy_pid(state_dir)
        assert plane.process is not None
        os.kill(plane.process.pid, signal.SIGKILL)
        plane.process.wait()
        plane.process = None
        assert psutil.pid_exists(haproxy)  # left behind, still serving
        assert asyncio.run(stop_left_behind(state_dir / "haproxy")) is True
        assert not psutil.pid_exists(haproxy) or psutil.Process(haproxy).status() == "zombie"
        assert asyncio.run(stop_left_behind(state_dir / "haproxy")) is False
    finally:
        plane.stop()


def test_an_adopted_haproxy_is_brought_to_the_saved_state(tmp_path: Path) -> None:
    """HAProxy has a server the saved state no longer lists (the agent removed it while
    no data plane ran, say) and one drained that the state says is ready: adoption
    deletes the first and readies the second, with no reload."""
    import json
    import time

    servers = Backends()
    state_dir = tmp_path / "state"
    first = Plane("haproxy", state_dir)
    first.start()
    second = Plane("haproxy", state_dir)
    second.port = first.port
    try:
        web0, web1 = servers.start("web-0"), servers.start("web-1")
        first.sync(
            {"web": ROUTES["web"]},
            {"web": {"backends": [backend("web-0", web0, state="drain"), backend("web-1", web1)]}},
        )
        worker = _worker_pid(state_dir)
        assert first.process is not None
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait()
        first.process = None
        saved = {
            "routes": {"web": ROUTES["web"]},
            "services": {"web": {"backends": [backend("web-0", web0)]}},
        }
        (state_dir / "router-state.json").write_text(json.dumps(saved))
        second.start()
        deadline = time.monotonic() + 10
        while f"web-1_{web1}" in second.call({"op": "stats"})["backends"]:
            assert time.monotonic() < deadline, "the server the state lacks was not deleted"
            time.sleep(0.05)
        assert {json.loads(ask(second.port)[1])["instance"] for _ in range(4)} == {"web-0"}
        assert _worker_pid(state_dir) == worker
    finally:
        second.stop()
        first.stop()
        servers.close()
