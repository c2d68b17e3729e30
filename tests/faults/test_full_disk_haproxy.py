"""The HAProxy data plane on a full disk: a small tmpfs mounted for the test under the data
plane's state folder (the tests run as root; without the right to mount they are skipped,
saying so). A change of routes needs a new haproxy.cfg that cannot be written: HAProxy goes
on serving its running configuration, the failure is counted and reported, and the next
change, once there is room, writes it."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.test_full_disk import fill
from tests.router.test_dataplanes import Backends, Plane, ask, backend

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Plane, Backends, Path]]:
    state = tmp_path / "state"
    state.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(state)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"a small tmpfs cannot be mounted here: {mounted.stderr.strip()}")
    servers = Backends()
    plane = Plane("haproxy", state)
    try:
        plane.start()
        yield plane, servers, state
    finally:
        plane.stop()
        servers.close()
        subprocess.run(["umount", "-l", str(state)], check=False)


def _state(web: int, api: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
    routes: dict[str, Any] = {"web": [{"host": None, "path": "/"}]}
    services: dict[str, Any] = {"web": {"backends": [backend(f"web-{web}", web)]}}
    if api is not None:
        routes["api"] = [{"host": None, "path": "/api"}]
        services["api"] = {"backends": [backend("api-0", api)]}
    return routes, services


def _instance(plane: Plane, path: str) -> str:
    status, body = ask(plane.port, path)
    assert status == 200, body
    return str(json.loads(body)["instance"])


def test_a_config_that_cannot_be_written_leaves_haproxy_serving(
    world: tuple[Plane, Backends, Path],
) -> None:
    plane, servers, state = world
    web, api = servers.start("web-0"), servers.start("api-0")
    plane.sync(*_state(web, None))
    assert _instance(plane, "/api/orders") == "web-0"

    fill(state)
    plane.sync(*_state(web, api))  # a new route: a new configuration, with no room for it
    assert plane.process is not None and plane.process.poll() is None
    assert _instance(plane, "/api/orders") == "web-0"  # the running configuration serves
    stats = plane.call({"op": "stats"})
    assert stats["write_failures"] >= 1
    assert stats["write_error"].startswith(f"cannot write {state / 'haproxy' / 'haproxy.cfg'}: ")
    assert stats["write_error"].endswith("No space left on device")

    # Meanwhile the services the running configuration routes still get their instances.
    other = servers.start("web-1")
    plane.sync(*_state(other, api))
    assert {_instance(plane, "/") for _ in range(4)} == {"web-1"}
    assert plane.call({"op": "stats"})["write_failures"] >= 2

    (state / "filler").unlink()
    plane.sync(*_state(other, api))  # the next change writes the whole state again
    assert _instance(plane, "/api/orders") == "api-0"
    assert _instance(plane, "/") == "web-1"
    assert plane.call({"op": "stats"})["write_error"] is None
