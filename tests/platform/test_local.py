"""The local platform with real processes: a canary beside the stable instances, held from
traffic until admitted, promoted in one update and the old instances retired; one-off
tasks in a release's folder; the live release set before the stack starts; scale, restart
and a service's log lines streamed as they are written.

The data plane is not started here (no route needs it): the traffic calls return once
the state they would send is set."""

from __future__ import annotations

import asyncio
import shutil
import sys
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlifier.platform import CANARY, STABLE, ReleaseRef
from sqlifier.platform.local import LocalPlatform
from sqlifier.platform.traffic import Traffic
from sqlifier.runtime.supervisor import Supervisor
from sqlifier.stack import load_stack
from sqlifier.stack.model import Probe, ProbeKind
from tests.apps import APP

STACK = """\
[stack]
name = "t"

[services.web]
run = "{python} app.py"
instances = 2
routes = ["/web"]
probes.readiness = {{ http = "/", period = "100ms" }}
"""


def release(root: Path, version: str) -> ReleaseRef:
    folder = root / "releases" / version
    folder.mkdir(parents=True)
    shutil.copy(root / "app.py", folder / "app.py")
    return ReleaseRef(version, folder)


def run(root: Path, body: Callable[[LocalPlatform, Path], Awaitable[None]]) -> None:
    (root / "app.py").write_text(APP)
    (root / "sqlifier.toml").write_text(STACK.format(python=sys.executable))
    stack, _ = load_stack(root / "sqlifier.toml")
    state = root / ".sqlifier" / "dev"

    async def main() -> None:
        supervisor = Supervisor(stack, "dev", state)
        platform = LocalPlatform(supervisor, Traffic(stack, "dev", state, supervisor), 20.0)
        try:
            await body(platform, root)
        finally:
            await supervisor.stop()

    asyncio.run(main())


def get(platform: LocalPlatform, name: str, track: str) -> str:
    supervisor = platform.supervisor
    found = supervisor.canaries["web"] if track == CANARY else supervisor.instances["web"]
    port = next(i.port for i in found if i.name == name)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        return str(response.read().decode())


def test_a_canary_is_held_until_admitted_then_promoted_and_the_old_instances_retired(
    tmp_path: Path,
) -> None:
    async def body(platform: LocalPlatform, root: Path) -> None:
        await platform.supervisor.start(ready_timeout=20)
        assert platform.stable_release("web") == platform.supervisor.release
        v2 = release(root, "v2")
        spec = platform.services()["web"]
        assert await platform.start_canaries(spec, v2, 1) == ["web-0"]
        (canary,) = platform.instances("web", CANARY)
        assert (canary.release, canary.ready, canary.held) == ("v2", True, True)
        assert [i.name for i in platform.instances("web", STABLE)] == ["web-0", "web-1"]
        probe = Probe(ProbeKind.HTTP, "/", timeout=2.0)
        assert (await platform.probe("web", "web-0", probe)).ok
        assert get(platform, "web-0", CANARY) == "web-0"

        await platform.admit("web", ["web-0"])
        platform.set_instance_weight("web", ["web-0"], 25)
        (canary,) = platform.instances("web", CANARY)
        assert not canary.held
        assert platform.supervisor.canaries["web"][0].weight == 25
        assert await platform.start_canaries(spec, v2, 2) == ["web-1"]

        old = await platform.promote(spec, v2)
        assert old == ["web-0", "web-1"]
        assert platform.stable_release("web") == "v2"
        assert all(i.draining for i in platform.instances("web") if i.release != "v2")
        await platform.retire("web", old)
        rows = [(i.name, i.track, i.release) for i in platform.instances("web")]
        assert rows == [("web-0", STABLE, "v2"), ("web-1", STABLE, "v2")]

    run(tmp_path, body)


def test_stop_canaries_leaves_the_stable_instances_alone(tmp_path: Path) -> None:
    async def body(platform: LocalPlatform, root: Path) -> None:
        await platform.supervisor.start(ready_timeout=20)
        stable = {i.name: i.restarts for i in platform.instances("web", STABLE)}
        await platform.start_canaries(platform.services()["web"], release(root, "v2"), 2)
        assert len(platform.instances("web", CANARY)) == 2
        await platform.stop_canaries("web")
        assert platform.instances("web", CANARY) == []
        assert {i.name: i.restarts for i in platform.instances("web", STABLE)} == stable

    run(tmp_path, body)


def test_a_task_runs_in_the_release_with_the_service_environment(tmp_path: Path) -> None:
    async def body(platform: LocalPlatform, root: Path) -> None:
        v3 = release(root, "v3")
        command = f"{sys.executable} -c \"import os; print(os.environ['RELEASE'], os.getcwd())\""
        result = await platform.run_task(platform.services()["web"], v3, "migrate", command, 30)
        assert (result.exit_code, result.output.split()) == (0, ["v3", str(v3.path)])

    run(tmp_path, body)


def test_the_live_release_set_before_the_start_is_what_runs(tmp_path: Path) -> None:
    async def body(platform: LocalPlatform, root: Path) -> None:
        platform.set_stable(platform.services()["web"], release(root, "v4"))
        await platform.supervisor.start(ready_timeout=20)
        assert {i.release for i in platform.instances("web")} == {"v4"}
        assert platform.stable_release("web") == "v4"

    run(tmp_path, body)


def test_scale_and_restart_go_through_the_supervisor(tmp_path: Path) -> None:
    async def body(platform: LocalPlatform, root: Path) -> None:
        await platform.supervisor.start(ready_timeout=20)
        await platform.scale("web", 3)
        assert [(i.name, i.ready) for i in platform.instances("web")] == [
            ("web-0", True),
            ("web-1", True),
            ("web-2", True),
        ]
        before = {str(i["instance"]): i["pid"] for i in platform.supervisor.snapshot()}
        await platform.restart("web")
        after = {str(i["instance"]): i["pid"] for i in platform.supervisor.snapshot()}
        assert before.keys() == after.keys() and all(before[n] != after[n] for n in before)
        await platform.scale("web", 1)
        assert [i.name for i in platform.instances("web")] == ["web-0"]

    run(tmp_path, body)


def test_logs_stream_a_services_lines_as_they_are_written(tmp_path: Path) -> None:
    async def body(platform: LocalPlatform, root: Path) -> None:
        await platform.supervisor.start(ready_timeout=20)
        lines = platform.logs("web")
        seen = set()
        while len(seen) < 2:  # each instance says it listens when it starts
            line = await asyncio.wait_for(anext(lines), timeout=20)
            assert (line.level, line.text) == ("info", f"INFO listening {line.instance}")
            seen.add(line.instance)
        assert seen == {"web-0", "web-1"}
        urllib.request.urlopen(
            f"http://127.0.0.1:{platform.supervisor.instances['web'][1].port}/boom", timeout=5
        ).close()
        line = await asyncio.wait_for(anext(lines), timeout=20)
        assert (line.instance, line.level, line.text) == ("web-1", "error", "ERROR boom requested")
        await lines.aclose()

    run(tmp_path, body)
