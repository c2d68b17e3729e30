"""Starting and stopping one instance's process, and capturing what it writes.

Each instance runs in its own session (process group), so stopping it reaches every
process it started: SIGTERM to the group, then SIGKILL after the stop timeout. Its output
goes, line by line, through the level classifier into its own rotated log file. The pid
and the process's start time together identify it, so a restarted agent can adopt it and
never mistake a recycled pid for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from sqlifier.errors import UserError
from sqlifier.runtime.logs import LogFile
from sqlifier.spec.model import Service

__all__ = [
    "LaunchError",
    "Launched",
    "instance_env",
    "is_same_process",
    "launch",
    "pump",
    "stop_group",
]

# A line longer than this is cut (and marked) rather than held in memory whole.
MAX_LINE = 64 * 1024


class LaunchError(UserError):
    """An instance's command could not be started; the message says why."""


@dataclass(frozen=True, slots=True)
class Launched:
    pid: int
    started: float  # the process's start time, from the kernel
    process: asyncio.subprocess.Process


def instance_env(
    service: Service,
    index: int,
    port: int,
    env_name: str,
    release: str,
    data_dir: Path | None,
    base: Mapping[str, str],
) -> dict[str, str]:
    """The agent's environment, then the service's `env`, then the instance's identity."""
    env = {**base, **service.env}
    env.update(
        PORT=str(port),
        SERVICE=service.name,
        INSTANCE=f"{service.name}-{index}",
        INSTANCE_INDEX=str(index),
        RELEASE=release,
        ENV=env_name,
    )
    if data_dir is not None:
        env["DATA_DIR"] = str(data_dir)
    return env


def argv_for(service: Service) -> list[str]:
    """The command as an argument list: split like a shell would, run without one unless
    the service asks for `shell = true`."""
    if service.shell:
        return ["/bin/sh", "-c", service.run]
    return shlex.split(service.run)


async def launch(argv: list[str], cwd: Path, env: Mapping[str, str], who: str) -> Launched:
    """Start a process in a new session; LaunchError names the instance and the cause."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            limit=MAX_LINE,
        )
    except FileNotFoundError as exc:
        missing = exc.filename if exc.filename else argv[0]
        if not cwd.is_dir():
            raise LaunchError(f"{who}: its directory {cwd} does not exist") from None
        raise LaunchError(f"{who}: command not found: {missing}") from None
    except PermissionError:
        raise LaunchError(f"{who}: {argv[0]} is not executable") from None
    except OSError as exc:
        raise LaunchError(f"{who}: cannot start {argv[0]}: {exc.strerror}") from None
    try:
        started = psutil.Process(process.pid).create_time()
    except psutil.Error:
        started = time.time()
    return Launched(process.pid, started, process)


def is_same_process(pid: int, started: float) -> bool:
    """Is `pid` still the process that started at `started` (not a recycled pid)?"""
    try:
        return abs(psutil.Process(pid).create_time() - started) < 0.05
    except psutil.Error:
        return False


async def pump(stream: asyncio.StreamReader, name: str, log: LogFile) -> None:
    """Copy a process's output into its log, a line at a time, until it closes."""
    while True:
        try:
            raw = await stream.readuntil(b"\n")
        except asyncio.IncompleteReadError as end:
            raw = end.partial
            if not raw:
                return
        except asyncio.LimitOverrunError as over:
            raw = await stream.readexactly(over.consumed)
            log.write(time.time(), name, raw.decode("utf-8", "replace") + " [line cut]")
            continue
        log.write(time.time(), name, raw.decode("utf-8", "replace").rstrip("\r\n"))


async def stop_group(process: asyncio.subprocess.Process, timeout: float) -> int:
    """SIGTERM to the process group; SIGKILL to it after `timeout`; the exit code."""
    _signal_group(process.pid, signal.SIGTERM)
    try:
        return await asyncio.wait_for(process.wait(), timeout)
    except TimeoutError:
        _signal_group(process.pid, signal.SIGKILL)
        return await process.wait()
    finally:
        # Whatever the leader did, nothing it started outlives it.
        _signal_group(process.pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
