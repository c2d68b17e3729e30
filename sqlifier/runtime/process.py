"""Starting and stopping one instance's process, and capturing what it writes.

Each instance runs in its own session (process group), so stopping it reaches every
process it started: SIGTERM to the group, then SIGKILL after the stop timeout. Its output
goes straight to a file of its own (`web-0.out`), not through the agent: an agent that
dies takes no instance's output with it, and the agent that follows reads on from where
the file is. The pid and the process's start time together identify an instance, so a
restarted agent can adopt it and never mistake a recycled pid for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from sqlifier.errors import UserError
from sqlifier.runtime.cgroups import InstanceGroup
from sqlifier.stack.model import Service

__all__ = [
    "LaunchError",
    "Launched",
    "instance_env",
    "is_same_process",
    "is_stopped",
    "launch",
    "signal_group",
    "stop_group",
    "wait",
]


class LaunchError(UserError):
    """An instance's command could not be started; the message says why."""


@dataclass(frozen=True, slots=True)
class Launched:
    """A running instance: started by this agent (`process` set) or adopted from one
    before it (`process` None: no exit code will be known)."""

    pid: int
    started: float  # the process's start time, from the kernel
    process: asyncio.subprocess.Process | None = None


def instance_env(
    service: Service,
    index: int,
    port: int,
    env_name: str,
    release: str,
    data_dir: Path | None,
    base: Mapping[str, str],
    discovered: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The agent's environment, then the other services' addresses (`discovered`:
    `ORDERS_URL`...), then the service's `env`, then the instance's identity."""
    env = {**base, **(discovered or {}), **service.env}
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


def _join_then_switch(cgroup: InstanceGroup, uid: int, gid: int) -> Callable[[], None]:
    """In the child, before its command: into `cgroup`, then the account (no groups)."""

    def run() -> None:
        cgroup.join()
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    return run


async def launch(
    argv: list[str],
    cwd: Path,
    env: Mapping[str, str],
    who: str,
    output: Path,
    prefix: Sequence[str] = (),
    account: tuple[int, int] | None = None,
    cgroup: InstanceGroup | None = None,
) -> Launched:
    """Start a process in a new session, its stdout and stderr appended to `output`;
    LaunchError names the instance and the cause. `prefix` goes before the command (the
    `nsenter` that puts it in its namespace); `account` (uid, gid) is the one it runs as,
    supplementary groups dropped: `runtime/fence.py` gives both. It is in `cgroup` from
    before its command runs."""
    switch: dict[str, Any] = {}
    if cgroup is not None and account is not None:
        # Joined as root first (the cgroup's files are root's), then the account taken.
        switch = {"preexec_fn": _join_then_switch(cgroup, *account)}
    elif cgroup is not None:
        switch = {"preexec_fn": cgroup.join}
    elif account is not None:
        switch = {"user": account[0], "group": account[1], "extra_groups": []}
    output.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        process = await asyncio.create_subprocess_exec(
            *prefix,
            *argv,
            cwd=cwd,
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            start_new_session=True,
            **switch,
        )
    except subprocess.SubprocessError:  # raised by the cgroup's join, in the child
        raise LaunchError(f"{who}: cannot put it in its cgroup for its resources") from None
    except FileNotFoundError as exc:
        missing = exc.filename if exc.filename else argv[0]
        if not cwd.is_dir():
            raise LaunchError(f"{who}: its directory {cwd} does not exist") from None
        raise LaunchError(f"{who}: command not found: {missing}") from None
    except PermissionError:
        raise LaunchError(f"{who}: {argv[0]} is not executable") from None
    except OSError as exc:
        raise LaunchError(f"{who}: cannot start {argv[0]}: {exc.strerror}") from None
    finally:
        os.close(fd)
    try:
        started = psutil.Process(process.pid).create_time()
    except psutil.Error:
        started = time.time()
    return Launched(process.pid, started, process)


def is_same_process(pid: int, started: float) -> bool:
    """Is `pid` still the process that started at `started` (not a recycled pid)?"""
    try:
        process = psutil.Process(pid)
        same = abs(process.create_time() - started) < 0.05
        return same and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


async def wait(launched: Launched) -> int | None:
    """Until the instance exits: its exit code, or None for an adopted one."""
    if launched.process is not None:
        return await launched.process.wait()
    while is_same_process(launched.pid, launched.started):
        await asyncio.sleep(0.1)
    return None


async def stop_group(launched: Launched, timeout: float) -> int | None:
    """SIGTERM to the process group; SIGKILL to it after `timeout`, or at once if its
    leader is stopped (SIGSTOP: it would only handle SIGTERM once continued, so waiting
    is time lost); the exit code (None for an adopted instance)."""
    if is_stopped(launched.pid):
        _signal_group(launched.pid, signal.SIGKILL)
    else:
        _signal_group(launched.pid, signal.SIGTERM)
    try:
        return await asyncio.wait_for(wait(launched), timeout)
    except TimeoutError:
        _signal_group(launched.pid, signal.SIGKILL)
        return await wait(launched)
    finally:
        # Whatever the leader did, nothing it started outlives it.
        _signal_group(launched.pid, signal.SIGKILL)


def is_stopped(pid: int) -> bool:
    """Whether `pid` is stopped by a signal or a tracer (state T or t in /proc/PID/stat)."""
    try:
        status = psutil.Process(pid).status()
    except psutil.Error:
        return False
    return status in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Signal a process group that may be gone already."""
    _signal_group(pgid, sig)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
