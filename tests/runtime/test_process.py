"""Real processes: identity in the environment, output captured by level, whole process
groups stopped, and clear errors for commands that cannot start."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

import psutil
import pytest

from sqlifier.runtime.logs import LogFile, OutputTail
from sqlifier.runtime.process import (
    LaunchError,
    argv_for,
    instance_env,
    is_same_process,
    launch,
    stop_group,
    wait,
)
from sqlifier.stack.model import Service

PY = sys.executable


def service(run: str, **options: object) -> Service:
    return Service(name="web", run=run, source=Path("."), **options)  # type: ignore[arg-type]


def test_the_instance_environment_carries_its_identity(tmp_path: Path) -> None:
    svc = service("x", env={"LOG_LEVEL": "info", "HOME": "/override"})
    env = instance_env(
        svc, 1, 8001, "production", "v7", tmp_path, {"HOME": "/root", "PATH": "/bin"}
    )
    assert env == {
        "HOME": "/override",
        "PATH": "/bin",
        "LOG_LEVEL": "info",
        "PORT": "8001",
        "SERVICE": "web",
        "INSTANCE": "web-1",
        "INSTANCE_INDEX": "1",
        "RELEASE": "v7",
        "ENV": "production",
        "DATA_DIR": str(tmp_path),
    }


def test_commands_are_split_without_a_shell_unless_asked() -> None:
    assert argv_for(service("python3 -m http.server '8 0'")) == [
        "python3",
        "-m",
        "http.server",
        "8 0",
    ]
    assert argv_for(service("echo $PORT | cat", shell=True)) == [
        "/bin/sh",
        "-c",
        "echo $PORT | cat",
    ]


def test_output_is_captured_line_by_line_with_levels(tmp_path: Path) -> None:
    script = (
        "import sys, os; print('INFO hello', os.environ['INSTANCE']); "
        "print('CRITICAL payment failed', file=sys.stderr); print('no newline at end', end='')"
    )

    async def run() -> int | None:
        env = instance_env(service("x"), 0, 9000, "dev", "r1", None, dict(os.environ))
        launched = await launch([PY, "-c", script], tmp_path, env, "web-0", tmp_path / "web-0.out")
        return await wait(launched)

    assert asyncio.run(run()) == 0
    tail = OutputTail(tmp_path / "web-0.out", LogFile(tmp_path / "web-0.log"))
    assert tail.poll(1.0) == 2  # the unfinished last line waits for its newline
    records = [json.loads(x) for x in (tmp_path / "web-0.log").read_text().splitlines()]
    assert sorted((r["level"], r["line"]) for r in records) == [
        ("critical", "CRITICAL payment failed"),
        ("info", "INFO hello web-0"),
    ]


def test_stop_reaches_grandchildren(tmp_path: Path) -> None:
    async def run() -> tuple[int, list[int]]:
        launched = await launch(
            ["/bin/sh", "-c", "sleep 300 & sleep 300 & wait"],
            tmp_path,
            dict(os.environ),
            "web-0",
            tmp_path / "o",
        )
        for _ in range(100):
            children = psutil.Process(launched.pid).children(recursive=True)
            if len(children) == 2:
                break
            await asyncio.sleep(0.02)
        pids = [c.pid for c in children]
        code = await stop_group(launched, timeout=5)
        return code, pids

    code, pids = asyncio.run(run())
    assert code == -15
    assert len(pids) == 2
    for pid in pids:
        # The signal is on its way to them when stop_group returns: wait for them to end
        # (an ended orphan nobody reaps is a zombie, which is ended too).
        with pytest.raises(psutil.NoSuchProcess):
            process = psutil.Process(pid)
            with contextlib.suppress(psutil.TimeoutExpired):
                process.wait(timeout=10)
            if process.status() == psutil.STATUS_ZOMBIE:
                raise psutil.NoSuchProcess(pid)


def test_a_process_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(300)"

    async def run() -> int:
        out = tmp_path / "o"
        launched = await launch([PY, "-c", script], tmp_path, dict(os.environ), "web-0", out)
        while not out.read_text():
            await asyncio.sleep(0.01)
        return await stop_group(launched, timeout=0.3)

    assert asyncio.run(run()) == -9


def test_a_stopped_process_is_killed_without_waiting_out_the_grace(tmp_path: Path) -> None:
    """SIGTERM does nothing to a process stopped with SIGSTOP (a hung instance): it is
    killed at once. Without that, stop_group would wait its whole 600 s grace."""

    async def run() -> int:
        launched = await launch(
            ["sleep", "300"], tmp_path, dict(os.environ), "web-0", tmp_path / "o"
        )
        os.kill(launched.pid, signal.SIGSTOP)
        while psutil.Process(launched.pid).status() != psutil.STATUS_STOPPED:
            await asyncio.sleep(0.01)
        code = await asyncio.wait_for(stop_group(launched, timeout=600), 30)
        assert code is not None
        return code

    assert asyncio.run(run()) == -9


def test_a_command_that_does_not_exist_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match=r"^web-0: command not found: no-such-command-xyz$"):
        asyncio.run(launch(["no-such-command-xyz"], tmp_path, {}, "web-0", tmp_path / "o"))
    with pytest.raises(LaunchError, match=r"its directory .* does not exist"):
        asyncio.run(launch(["true"], tmp_path / "missing", {}, "web-0", tmp_path / "o"))


def test_a_recycled_pid_is_not_the_same_process(tmp_path: Path) -> None:
    async def run() -> tuple[int, float, bool]:
        launched = await launch(
            ["sleep", "300"], tmp_path, dict(os.environ), "web-0", tmp_path / "o"
        )
        alive = is_same_process(launched.pid, launched.started)
        await stop_group(launched, timeout=5)
        return launched.pid, launched.started, alive

    pid, started, alive = asyncio.run(run())
    assert alive
    assert not is_same_process(pid, started)
    assert not is_same_process(os.getpid(), started)
