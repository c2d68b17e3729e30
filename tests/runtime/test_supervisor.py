"""The supervisor with real processes and real sockets: dependency order, readiness over
HTTP, restart after a crash, stateful identities, scaling, and nothing left behind."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil
import pytest

from sqlifier.runtime.supervisor import Event, StartFailed, Supervisor, start_order
from sqlifier.stack import load_stack
from tests.apps import APP
from tests.servers import free_port


def write_stack(root: Path, services: str) -> Path:
    (root / "app.py").write_text(APP)
    path = root / "sqlifier.toml"
    path.write_text(f'[stack]\nname = "t"\n{services}')
    return path


def service(name: str, extra: str = "") -> str:
    return (
        f'\n[services.{name}]\nrun = "{sys.executable} app.py"\n'
        f'probes.readiness = {{ http = "/", period = "100ms" }}\n{extra}'
    )


def run(root: Path, services: str, body: Callable[[Supervisor], Awaitable[None]]) -> list[Event]:
    stack, _ = load_stack(write_stack(root, services))
    events: list[Event] = []

    async def main() -> None:
        supervisor = Supervisor(stack, "dev", root / ".sqlifier" / "dev", on_event=events.append)
        try:
            await supervisor.start(ready_timeout=20)
            await body(supervisor)
        finally:
            await supervisor.stop()
            assert (
                all(i["state"] == "stopped" for i in supervisor.snapshot())
                or not supervisor.snapshot()
            )

    asyncio.run(main())
    return events


def get(port: object) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        return str(response.read().decode())


def test_services_start_in_dependency_order_and_answer(tmp_path: Path) -> None:
    seen: dict[str, str] = {}

    async def body(supervisor: Supervisor) -> None:
        for instance in supervisor.snapshot():
            assert instance["state"] == "ready"
            seen[str(instance["instance"])] = await asyncio.to_thread(get, instance["port"])

    events = run(
        tmp_path, service("web", 'depends_on = ["api"]\ninstances = 2') + service("api"), body
    )
    assert seen == {"web-0": "web-0", "web-1": "web-1", "api-0": "api-0"}
    ready = [e.instance for e in events if e.state == "ready"]
    assert ready.index("api-0") < ready.index("web-0")


def test_a_crashed_instance_is_restarted(tmp_path: Path) -> None:
    async def body(supervisor: Supervisor) -> None:
        (instance,) = supervisor.instances["web"]
        assert instance.launched is not None
        first_pid = instance.launched.pid
        os.kill(first_pid, signal.SIGKILL)
        for _ in range(200):
            await asyncio.sleep(0.05)
            if (
                instance.launched
                and instance.launched.pid != first_pid
                and instance.life.state.value == "ready"
            ):
                break
        assert instance.life.restarts == 1
        assert instance.launched is not None and instance.launched.pid != first_pid

    events = run(tmp_path, service("web"), body)
    assert any(e.reason == "exited with code -9; restarting in 1s" for e in events)


def test_a_service_that_cannot_start_names_itself_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(
        StartFailed, match=r"^broken-0 did not start: exited with code 3; restarting in 2s$"
    ):
        run(
            tmp_path,
            service("broken", 'env = { FAIL_AT_START = "cannot open database" }'),
            lambda s: asyncio.sleep(0),
        )
    log = (tmp_path / ".sqlifier" / "dev" / "logs" / "broken-0.log").read_text()
    assert '"level": "critical", "line": "CRITICAL cannot open database"' in log
    left = [p for p in psutil.process_iter(["cwd"]) if p.info["cwd"] == str(tmp_path)]
    assert left == []


def test_a_missing_command_is_reported(tmp_path: Path) -> None:
    services = '\n[services.ghost]\nrun = "no-such-program --port $PORT"\n'
    with pytest.raises(StartFailed, match="ghost-0: command not found: no-such-program"):
        run(tmp_path, services, lambda s: asyncio.sleep(0))


def test_stateful_instances_start_in_order_and_keep_their_data(tmp_path: Path) -> None:
    async def body(supervisor: Supervisor) -> None:
        await supervisor.scale("db", 1)
        assert [i["instance"] for i in supervisor.snapshot()] == ["db-0"]
        await supervisor.scale("db", 2)

    events = run(tmp_path, service("db", "stateful = true\ninstances = 2"), body)
    data = tmp_path / ".sqlifier" / "dev" / "data"
    assert (data / "db-0" / "starts").read_text() == "db-0\n"
    assert (data / "db-1" / "starts").read_text() == "db-1\ndb-1\n"
    starting = [e.instance for e in events if e.state == "ready"]
    assert starting[:2] == ["db-0", "db-1"]


def test_restart_replaces_instances_one_at_a_time(tmp_path: Path) -> None:
    async def body(supervisor: Supervisor) -> None:
        before = {i["instance"]: i["pid"] for i in supervisor.snapshot()}
        await supervisor.restart("web")
        after = {i["instance"]: i["pid"] for i in supervisor.snapshot()}
        assert before.keys() == after.keys()
        assert all(before[k] != after[k] for k in before)

    events = run(tmp_path, service("web", "instances = 2"), body)
    order = [(e.instance, e.state) for e in events if e.state in ("stopped", "ready")]
    # Each replacement is ready before the instance it replaces stops (no port or data
    # folder pins the service), and the next one starts only after that.
    assert order[2:8] == [
        ("web-0", "ready"),  # the replacement
        ("web-0", "stopped"),  # the instance it replaces
        ("web-0", "ready"),  # the name is the replacement's now
        ("web-1", "ready"),
        ("web-1", "stopped"),
        ("web-1", "ready"),
    ]


def test_restart_of_a_fixed_port_service_stops_each_instance_first(tmp_path: Path) -> None:
    async def body(supervisor: Supervisor) -> None:
        await supervisor.restart("web")

    port = free_port()
    events = run(tmp_path, service("web", f"instances = 1\nport = {port}"), body)
    order = [(e.instance, e.state) for e in events if e.state in ("stopped", "ready")]
    assert order[:3] == [("web-0", "ready"), ("web-0", "stopped"), ("web-0", "ready")]


def test_start_order_follows_dependencies() -> None:
    from sqlifier.stack.model import Service

    services = {
        "web": Service("web", "x", Path("."), depends_on=("api", "cache")),
        "api": Service("api", "x", Path("."), depends_on=("db",)),
        "cache": Service("cache", "x", Path(".")),
        "db": Service("db", "x", Path(".")),
    }
    order = start_order(services)
    assert order.index("db") < order.index("api") < order.index("web")
    assert order.index("cache") < order.index("web")


def test_a_service_that_never_becomes_ready_is_named_when_the_wait_ends(tmp_path: Path) -> None:
    stack, _ = load_stack(write_stack(tmp_path, service("slow", 'env = { START_DELAY = "30" }')))

    async def main() -> None:
        supervisor = Supervisor(stack, "dev", tmp_path / ".sqlifier" / "dev")
        try:
            await supervisor.start(ready_timeout=1)
        finally:
            await supervisor.stop()

    with pytest.raises(StartFailed, match=r"^slow-0 was not ready after 1s \(unready: "):
        asyncio.run(main())


def test_a_failing_liveness_probe_restarts_the_instance(tmp_path: Path) -> None:
    # Live until the file `sick` appears: the instance is ready first, however slow the
    # machine, and only then does its liveness probe start failing.
    liveness = (
        'probes.liveness = { exec = "test ! -f sick", period = "100ms", failure_threshold = 2 }\n'
    )

    async def body(supervisor: Supervisor) -> None:
        (instance,) = supervisor.instances["web"]
        (tmp_path / "sick").write_text("")
        for _ in range(100):
            await asyncio.sleep(0.05)
            if instance.life.restarts >= 1:
                break
        assert instance.life.restarts >= 1

    events = run(tmp_path, service("web", liveness), body)
    assert any(e.reason.startswith("liveness probe failed: exit code 1") for e in events)


def test_concurrent_scale_calls_do_not_interleave(tmp_path: Path) -> None:
    async def body(supervisor: Supervisor) -> None:
        await asyncio.gather(supervisor.scale("web", 3), supervisor.scale("web", 1))
        assert [i["instance"] for i in supervisor.snapshot() if i["state"] != "stopped"] == [
            "web-0"
        ]

    run(tmp_path, service("web"), body)


def test_what_an_instance_started_dies_with_it(tmp_path: Path) -> None:
    run_line = '\n[services.web]\nrun = "sleep 1000 & sleep 0.3; exit 1"\nshell = true\nrestart = "never"\n'

    async def body(supervisor: Supervisor) -> None:
        (instance,) = supervisor.instances["web"]
        for _ in range(100):
            await asyncio.sleep(0.05)
            if instance.life.state.value == "stopped":
                break
        await asyncio.sleep(0.1)
        left = [  # in this stack's folder: other tests run `sleep 1000` too
            p
            for p in psutil.process_iter(["cmdline", "cwd"])
            if p.info["cmdline"] == ["sleep", "1000"] and p.info["cwd"] == str(tmp_path)
        ]
        assert left == []

    run(tmp_path, run_line, body)
