"""The HAProxy master process a data plane drives: one it started (its child), or one a
previous data plane of the same stack started and left running when it was killed.

HAProxy runs in master-worker mode and writes its master's pid to a file beside its
configuration. A data plane that starts finds the HAProxy there by that file, and takes
it as its own only if it is still HAProxy, still this user's and still run with this
stack's configuration file (a recycled pid is none of these). Adopting it rather than
replacing it keeps the port open and the requests flowing while the data plane restarts
(the data plane learns its servers over the admin socket, without a reload, which would
close idle kept-alive client connections); stopping HAProxy whenever its parent dies
(PR_SET_PDEATHSIG) would drop both.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = ["Master", "find_master", "stop_left_behind"]


@dataclass
class Master:
    """HAProxy's master process: started here (`process` set) or adopted (`process` None)."""

    pid: int
    process: asyncio.subprocess.Process | None = None
    started: float | None = None  # the adopted process's start time, from the kernel

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.returncode is None
        try:
            found = psutil.Process(self.pid)
            return found.create_time() == self.started and found.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def code(self) -> int | None:
        """The exit code, when this process started it and it has ended."""
        return self.process.returncode if self.process is not None else None

    def signal(self, sig: signal.Signals) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    async def wait(self) -> None:
        if self.process is not None:
            await self.process.wait()
            return
        while self.alive():
            await asyncio.sleep(0.2)


def find_master(pid_file: Path, config: Path) -> Master | None:
    """The HAProxy master that `pid_file` names, if it still runs `config` as this user."""
    try:
        pid = int(pid_file.read_text().split()[0])
        found = psutil.Process(pid)
        if found.uids().real != os.getuid() or found.status() == psutil.STATUS_ZOMBIE:
            return None
        argv = found.cmdline()
        if not argv or Path(argv[0]).name != "haproxy" or str(config) not in argv:
            return None
        return Master(pid, None, found.create_time())
    except (OSError, ValueError, IndexError, psutil.Error):
        return None


async def stop_left_behind(pid_file: Path, config: Path, grace: float = 30.0) -> bool:
    """Stop the HAProxy a killed data plane left running (`down` while no data plane
    runs to stop it): soft stop, SIGKILL after `grace` seconds. Whether there was one."""
    master = find_master(pid_file, config)
    if master is None:
        return False
    master.signal(signal.SIGUSR1)
    try:
        await asyncio.wait_for(master.wait(), grace)
    except TimeoutError:
        master.signal(signal.SIGKILL)
        await master.wait()
    with contextlib.suppress(OSError):
        pid_file.unlink()
    return True
