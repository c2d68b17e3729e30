"""Limits per service on the real kernel: an instance allocating past its memory limit is
OOM-killed, said so, and restarted; a CPU-bound instance is held to its quota (its CPU
time read from the kernel's accounting); cgroups are removed when instances stop; where
no hierarchy can be used, the agent says so and the instance runs without limits.

They need a writable cgroup hierarchy (root, and cgroup v2 with the memory and cpu
controllers or v1's); elsewhere they are skipped with that reason.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil
import pytest

from sqlifier.runtime import cgroups
from sqlifier.runtime.cgroups import Cgroups
from sqlifier.runtime.supervisor import Event, Supervisor
from sqlifier.stack import load_stack


def _usable() -> str | None:
    found = Cgroups.detect(Path("/nonexistent-probe"))
    found.remove_all()
    return found.unavailable


UNUSABLE = _usable()
needs_cgroups = pytest.mark.skipif(UNUSABLE is not None, reason=f"no cgroups here: {UNUSABLE}")

# GET /hog allocates (and touches) 200 MiB, past a 64Mi limit; GET / answers the name.
HOG = """\
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/hog":
            hoard = bytearray(200 * 1024 * 1024)
            for i in range(0, len(hoard), 4096):
                hoard[i] = 1
        body = os.environ["INSTANCE"].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""

SPIN = "while True:\n    pass\n"


def run(
    root: Path, services: str, body: Callable[[Supervisor, list[tuple[str, str]]], Awaitable[None]]
) -> list[Event]:
    (root / "hog.py").write_text(HOG)
    (root / "spin.py").write_text(SPIN)
    path = root / "sqlifier.toml"
    path.write_text(f'[stack]\nname = "t"\n{services}')
    stack, _ = load_stack(path)
    events: list[Event] = []
    killed: list[tuple[str, str]] = []

    async def main() -> None:
        supervisor = Supervisor(stack, "dev", root / ".sqlifier" / "dev", on_event=events.append)
        supervisor.on_oom = lambda instance, what: killed.append((instance.name, what))
        try:
            await supervisor.start(ready_timeout=20)
            await body(supervisor, killed)
        finally:
            await supervisor.stop()

    asyncio.run(main())
    return events


def hog(memory: str = "64Mi") -> str:
    return (
        f'\n[services.hog]\nrun = "{sys.executable} hog.py"\n'
        f'resources = {{ memory = "{memory}" }}\n'
        'probes.readiness = { http = "/", period = "100ms" }\n'
    )


def get(port: int, path: str = "/") -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return str(response.read().decode())
    except OSError as exc:  # the connection is cut when the instance is killed
        return f"failed: {exc}"


async def until(what: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not what():
        assert time.monotonic() < deadline, "it did not happen in time"
        await asyncio.sleep(0.05)


@needs_cgroups
def test_an_instance_past_its_memory_limit_is_oom_killed_said_and_restarted(
    tmp_path: Path,
) -> None:
    folders: list[Path] = []

    async def body(supervisor: Supervisor, killed: list[tuple[str, str]]) -> None:
        (instance,) = supervisor.instances["hog"]
        group = supervisor.groups[instance.id]
        folders.extend(group.folders)
        limit = (group.folders[0] / "memory.limit_in_bytes").read_text().strip()
        assert group.version == 2 or limit == str(64 * 1024 * 1024)
        assert await asyncio.to_thread(get, instance.port, "/hog") != "hog-0"
        await until(lambda: bool(killed))
        assert killed[0][0] == "hog-0"
        assert "OOM-killed: its memory reached its limit of 64Mi" in killed[0][1]
        assert "OOM-killed" in instance.life.reason and "restarting in" in instance.life.reason
        await until(lambda: instance.life.state.value == "ready")  # restarted by its policy
        assert instance.life.restarts == 1
        log = (tmp_path / ".sqlifier" / "dev" / "logs" / "hog-0.log").read_text()
        assert "ERROR hog-0 was OOM-killed" in log

    run(tmp_path, hog(), body)
    assert folders and not any(folder.exists() for folder in folders)  # removed on stop
    assert not any(folder.parent.exists() for folder in folders)  # the stack's folder too


@needs_cgroups
def test_an_instance_that_exits_by_itself_is_not_called_oom_killed(tmp_path: Path) -> None:
    async def body(supervisor: Supervisor, killed: list[tuple[str, str]]) -> None:
        (instance,) = supervisor.instances["hog"]
        assert instance.launched is not None
        pid = instance.launched.pid
        os.kill(pid, signal.SIGKILL)  # killed, but not by the kernel for memory
        await until(lambda: "restarting" in instance.life.reason)
        assert "OOM" not in instance.life.reason and killed == []

    run(tmp_path, hog(), body)


@needs_cgroups
def test_a_cpu_bound_instance_is_held_to_its_quota(tmp_path: Path) -> None:
    spin = f'\n[services.spin]\nrun = "{sys.executable} spin.py"\nresources = {{ cpu = "200m" }}\n'
    used: list[float] = []

    async def body(supervisor: Supervisor, killed: list[tuple[str, str]]) -> None:
        (instance,) = supervisor.instances["spin"]
        group = supervisor.groups[instance.id]
        if group.version == 1:
            quota = (group.folders[1] / "cpu.cfs_quota_us").read_text().strip()
            assert quota == "20000"
        await asyncio.sleep(0.5)
        before, started = group.cpu_seconds(), time.monotonic()
        await asyncio.sleep(3.0)
        after, ended = group.cpu_seconds(), time.monotonic()
        assert before is not None and after is not None
        used.append((after - before) / (ended - started))

    run(tmp_path, spin, body)
    # A fifth of a core, measured by the kernel: generously bounded (a busy machine may
    # give it less, never more than the quota and a period's slack).
    print(f"cpu used with a 0.2 quota: {used[0]:.3f} cores")
    assert 0 < used[0] <= 0.3, used


def test_without_a_usable_hierarchy_the_agent_says_so_and_runs_unlimited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stands in for a host without cgroups (or without root): no hierarchy is mounted.
    empty = tmp_path / "mountinfo"
    empty.write_text("")
    monkeypatch.setattr(cgroups, "_MOUNTINFO", empty)

    async def body(supervisor: Supervisor, killed: list[tuple[str, str]]) -> None:
        (instance,) = supervisor.instances["hog"]
        assert instance.life.state.value == "ready" and supervisor.groups == {}

    events = run(tmp_path, hog(), body)
    warnings = [e.reason for e in events if e.instance == "resources"]
    assert warnings == [
        "limits are not enforced: no cgroup hierarchy with the memory and cpu controllers"
        " is mounted"
    ]


def test_a_service_without_resources_gets_no_cgroup(tmp_path: Path) -> None:
    plain = f'\n[services.web]\nrun = "{sys.executable} hog.py"\n'

    async def body(supervisor: Supervisor, killed: list[tuple[str, str]]) -> None:
        assert supervisor.groups == {} and supervisor.cgroups is None

    events = run(tmp_path, plain, body)
    assert not [e for e in events if e.instance == "resources"]


ESCAPE = """\
import subprocess, time
child = subprocess.Popen(["sleep", "1000"], start_new_session=True)
open("escaped.pid", "w").write(str(child.pid))
while True:
    time.sleep(1)
"""


@needs_cgroups
def test_a_process_that_left_its_group_goes_with_its_cgroup(tmp_path: Path) -> None:
    (tmp_path / "escape.py").write_text(ESCAPE)
    escape = (
        f'\n[services.escape]\nrun = "{sys.executable} escape.py"\n'
        'resources = { memory = "64Mi" }\n'
    )
    folders: list[Path] = []

    async def body(supervisor: Supervisor, killed: list[tuple[str, str]]) -> None:
        (instance,) = supervisor.instances["escape"]
        folders.extend(supervisor.groups[instance.id].folders)
        await until((tmp_path / "escaped.pid").exists)

    run(tmp_path, escape, body)
    pid = int((tmp_path / "escaped.pid").read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert folders and not any(folder.exists() for folder in folders)
