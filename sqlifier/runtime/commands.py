"""RUN: a command of a rule's action or a deploy (migrate, schema_version, a release's build).

The command is split into words (`shlex`), never given to a shell, and runs in a
session of its own with stdin from /dev/null. Its stdout and stderr share one pipe that we
create ourselves, so waiting for the command means waiting for its process, not for every
process that inherited the pipe. Whatever the command leaves behind in its process group
is killed when it exits; on timeout the whole group gets SIGTERM, then SIGKILL.

It reports what happened as a value and never raises for the outside world's failures
(a missing program, a timeout): the caller records the value and carries on.
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

from sqlifier.runtime.process import LaunchError
from sqlifier.stack.expand import UnknownName, expand
from sqlifier.stack.model import Service

__all__ = ["OUTPUT_LIMIT", "RunResult", "run_command", "service_argv", "tail_text"]

OUTPUT_LIMIT = 64 * 1024  # bytes of a command's output kept: the tail
_DRAIN_GRACE = 1.0  # seconds to read what is left in the pipe once the command is gone


def service_argv(service: Service, env: Mapping[str, str], who: str) -> list[str]:
    """An instance's command as an argument list: `/bin/sh -c run` for `shell = true`, else
    `run` split into words like a shell would, each word's `$NAME`/`${NAME}` read from the
    instance's environment `env` (`$$` a literal dollar). LaunchError names the instance
    and the unknown variable."""
    if service.shell:
        return ["/bin/sh", "-c", service.run]
    try:
        return [expand(word, env) for word in shlex.split(service.run)]
    except UnknownName as exc:
        raise LaunchError(f"{who}: run = {service.run!r}: {exc}") from None
    except ValueError as exc:
        raise LaunchError(f"{who}: cannot split run = {service.run!r}: {exc}") from None


@dataclass(frozen=True, slots=True)
class RunResult:
    argv: tuple[str, ...]
    exit_code: int | None  # None when it could not start or was killed on timeout
    output: str  # stdout and stderr interleaved; the last OUTPUT_LIMIT bytes
    timed_out: bool
    error: str | None  # "command not found: foo", "permission denied: ./x", ...
    seconds: float


async def run_command(
    command: str,
    env: Mapping[str, str],
    cwd: Path,
    timeout: float = 60.0,
    *,
    kill_after: float = 2.0,
) -> RunResult:
    """Run `command` (split into words, no shell) in `cwd` with os.environ plus `env`.

    After `timeout` seconds its process group gets SIGTERM, and SIGKILL `kill_after`
    seconds later. The output kept is the last OUTPUT_LIMIT bytes, preceded by
    "[... N bytes cut]" when more was written.
    """
    started = time.monotonic()
    try:
        argv = tuple(shlex.split(command))
    except ValueError as exc:
        return RunResult((), None, "", False, f"cannot split the command: {exc}", 0.0)
    if not argv:
        return RunResult((), None, "", False, "empty command", 0.0)
    read_fd, write_fd = os.pipe()
    tail = _Tail()
    transport, _ = await asyncio.get_running_loop().connect_read_pipe(
        lambda: tail, os.fdopen(read_fd, "rb", buffering=0)
    )
    try:
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=cwd,
                env={**os.environ, **env},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                start_new_session=True,
            )
        except OSError as exc:
            error = _start_error(exc, argv[0], cwd)
            return RunResult(argv, None, "", False, error, time.monotonic() - started)
        finally:
            os.close(write_fd)  # the child has its copy; ours would keep the pipe open
        exit_code, timed_out = await _supervise(process, tail, timeout, kill_after)
    finally:
        transport.close()
    return RunResult(argv, exit_code, tail.text(), timed_out, None, time.monotonic() - started)


async def _supervise(
    process: asyncio.subprocess.Process, tail: _Tail, timeout: float, kill_after: float
) -> tuple[int | None, bool]:
    """(exit code, timed out), once the command has ended and its output is read."""
    try:
        result = await _wait(process, timeout, kill_after)
        # Only a process that left the group (setsid) can still hold the pipe open now.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_DRAIN_GRACE):
                await tail.ended.wait()
        return result
    finally:
        if process.returncode is None:  # cancelled: the command goes too
            _signal_group(process.pid, signal.SIGKILL)
            await process.wait()


async def _wait(
    process: asyncio.subprocess.Process, timeout: float, kill_after: float
) -> tuple[int | None, bool]:
    """(exit code, timed out): the command's end, by itself or stopped after `timeout`."""
    try:
        async with asyncio.timeout(timeout):
            code = await process.wait()
    except TimeoutError:
        _signal_group(process.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(kill_after):
                await process.wait()
        _signal_group(process.pid, signal.SIGKILL)
        await process.wait()
        return None, True
    # Whatever the command started, nothing outlives it.
    _signal_group(process.pid, signal.SIGKILL)
    return code, False


def _start_error(exc: OSError, program: str, cwd: Path) -> str:
    if isinstance(exc, FileNotFoundError):
        if exc.filename == str(cwd) or not cwd.is_dir():
            return f"directory not found: {cwd}"
        return f"command not found: {program}"
    if isinstance(exc, PermissionError):
        return f"permission denied: {program}"
    return f"cannot run {program}: {exc.strerror or exc}"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class _Tail(asyncio.Protocol):
    """The last OUTPUT_LIMIT bytes read from a pipe, and how many came before them."""

    def __init__(self) -> None:
        self.kept = bytearray()
        self.cut = 0
        self.ended = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.kept += data
        excess = len(self.kept) - OUTPUT_LIMIT
        if excess > 0:
            del self.kept[:excess]
            self.cut += excess

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended.set()

    def text(self) -> str:
        return tail_text(bytes(self.kept), self.cut)


def tail_text(kept: bytes, cut: int) -> str:
    """The last bytes of an output as text, preceded by "[... N bytes cut]" when `cut`
    bytes before them were dropped (a character cut in two at the front is dropped whole)."""
    if not cut:
        return kept.decode("utf-8", "replace")
    start = 0
    while start < min(len(kept), 3) and kept[start] & 0xC0 == 0x80:
        start += 1  # the rest of a character cut in two
    return f"[... {cut + start} bytes cut]\n" + kept[start:].decode("utf-8", "replace")
