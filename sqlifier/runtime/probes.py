"""Probes: when each is due, what its thresholds make of the results, and running one.

`ProbeTracker` is pure (a clock goes in, a verdict comes out), with Kubernetes' meaning:
a verdict changes after `success_threshold` consecutive successes or `failure_threshold`
consecutive failures, and there is no verdict before that. `run_probe` does the I/O:
an HTTP GET (`runtime/http.py`) or a TCP connection to the instance's own port, or a command.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
from dataclasses import dataclass

from sqlifier.runtime import http
from sqlifier.stack.model import Probe, ProbeKind

__all__ = ["ProbeResult", "ProbeTracker", "run_probe"]


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    detail: str  # "HTTP 200", "connection refused", "exit code 1", "timed out after 1s"


@dataclass
class ProbeTracker:
    probe: Probe
    next_at: float = 0.0
    successes: int = 0
    failures: int = 0
    verdict: bool | None = None
    last: ProbeResult | None = None

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def record(self, now: float, result: ProbeResult) -> bool | None:
        """Count one result; return the new verdict when it changes, else None."""
        self.next_at = now + self.probe.period
        self.last = result
        if result.ok:
            self.successes += 1
            self.failures = 0
            if self.verdict is not True and self.successes >= self.probe.success_threshold:
                self.verdict = True
                return True
        else:
            self.failures += 1
            self.successes = 0
            if self.verdict is not False and self.failures >= self.probe.failure_threshold:
                self.verdict = False
                return False
        return None


async def run_probe(
    probe: Probe, port: int, cwd: str | None = None, host: str = "127.0.0.1"
) -> ProbeResult:
    """Run one probe against an instance listening on `host`:`port` (an isolated
    instance's namespace address; exec probes run on the host)."""
    try:
        return await asyncio.wait_for(_run(probe, port, cwd, host), timeout=probe.timeout)
    except TimeoutError:
        return ProbeResult(False, f"timed out after {probe.timeout:g}s")


async def _run(probe: Probe, port: int, cwd: str | None, host: str) -> ProbeResult:
    if probe.kind is ProbeKind.EXEC:
        return await _exec(probe.target, port, cwd)
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        return ProbeResult(False, _reason(exc))
    try:
        if probe.kind is ProbeKind.TCP:
            return ProbeResult(True, "connected")
        headers = [("Host", f"{host}:{port}"), ("User-Agent", "sqlifier-probe")]
        answer = await http.exchange(reader, writer, "GET", probe.target, headers, read_body=False)
    except OSError as exc:
        return ProbeResult(False, _reason(exc))
    except (http.NotHttp, ValueError):
        return ProbeResult(False, "not an HTTP response")
    finally:
        await http.close(writer)
    status = answer.status
    ok = status == probe.status if probe.status is not None else 200 <= status < 400
    return ProbeResult(ok, f"HTTP {status}")


async def _exec(command: str, port: int, cwd: str | None) -> ProbeResult:
    env = {**os.environ, "PORT": str(port)}
    try:
        process = await asyncio.create_subprocess_exec(
            *shlex.split(command),
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        return ProbeResult(False, f"cannot run {command!r}: {exc.strerror}")
    try:
        code = await process.wait()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)
        await process.wait()
        raise
    return ProbeResult(code == 0, f"exit code {code}")


def _reason(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return exc.strerror or type(exc).__name__
