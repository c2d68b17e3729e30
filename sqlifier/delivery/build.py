"""A release's build: the service's `build` command run in the new release's folder, with
the service's `env` plus `RELEASE`, `SERVICE` and `ENV` (never its secrets). It is split
into words like `run` and goes through `/bin/sh -c` only for `shell = true` services. It
runs in a process group of its own: on a timeout the group gets SIGTERM, then SIGKILL, and
nothing it started outlives it. Its output's last OUTPUT_LIMIT bytes are kept.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import IO

from sqlifier.delivery.records import ReleaseError
from sqlifier.runtime.commands import OUTPUT_LIMIT, tail_text
from sqlifier.stack.model import Service

__all__ = ["run_build"]

_MESSAGE_LINES = 20  # of a failed build's output, in the error message
_KILL_AFTER = 2.0  # seconds between SIGTERM and SIGKILL for a build that timed out


def run_build(spec: Service, env: str, version: str, cwd: Path, timeout: float) -> str:
    """Run the service's build in `cwd`: its output's tail, or ReleaseError."""
    if spec.build is None:
        return ""
    variables = {**os.environ, **spec.env, "RELEASE": version, "SERVICE": spec.name, "ENV": env}
    argv = ["/bin/sh", "-c", spec.build] if spec.shell else shlex.split(spec.build)
    with tempfile.TemporaryFile() as output:
        try:
            process = subprocess.Popen(
                argv,
                cwd=cwd,
                env=variables,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise ReleaseError(
                f"the build of release {version} of {spec.name} could not start: "
                f"{exc.strerror or exc}: {argv[0]}; nothing was kept",
                service=spec.name,
                version=version,
            ) from None
        code = _wait(process, timeout)
        text = _tail(output)
    if code == 0:
        return text
    failure = f"timed out after {timeout:g}s" if code is None else f"failed with exit code {code}"
    last = "\n".join(text.splitlines()[-_MESSAGE_LINES:])
    raise ReleaseError(
        f"the build of release {version} of {spec.name} ({spec.build}) {failure}; nothing "
        f"was kept. The end of its output:\n{last}",
        service=spec.name,
        version=version,
        output=text,
    )


def _wait(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    """The exit code, or None after a timeout; nothing the build started outlives it."""
    try:
        code: int | None = process.wait(timeout)
    except subprocess.TimeoutExpired:
        _signal_group(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(_KILL_AFTER)
        code = None
    finally:
        _signal_group(process.pid, signal.SIGKILL)
        process.wait()
    return code


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _tail(output: IO[bytes]) -> str:
    size = output.seek(0, os.SEEK_END)
    cut = max(0, size - OUTPUT_LIMIT)
    output.seek(cut)
    return tail_text(output.read(), cut)
