"""The side effects of rule actions: NOTIFY posts to a webhook, RUN runs a command.

Both report what happened as a value and never raise for the outside world's failures
(a refused connection, a missing program): the engine records the value and carries on.

NOTIFY: one JSON POST per message, retried on connection errors, timeouts and 5xx, with a
doubling backoff; every attempt is bounded, so a whole call takes at most
`(retries + 1) * timeout + backoff * (2**retries - 1)` seconds. `Notifier` runs deliveries
in the background so a rule never waits for a webhook.

RUN: the command is split into words (`shlex`), never given to a shell, and runs in a
session of its own with stdin from /dev/null. Its stdout and stderr share one pipe that we
create ourselves, so waiting for the command means waiting for its process, not for every
process that inherited the pipe. Whatever the command leaves behind in its process group
is killed when it exits; on timeout the whole group gets SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shlex
import signal
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

__all__ = [
    "CLOSED",
    "DROPPED",
    "MAX_PENDING",
    "NO_WEBHOOK",
    "OUTPUT_LIMIT",
    "Delivery",
    "Notifier",
    "RunResult",
    "post_webhook",
    "run_command",
]

MAX_PENDING = 100  # background deliveries a Notifier holds before it drops the oldest
OUTPUT_LIMIT = 64 * 1024  # bytes of a command's output kept: the tail
_DRAIN_GRACE = 1.0  # seconds to read what is left in the pipe once the command is gone
_URL_SAFE = "/:@!$&'()*+,;=%-._~?"  # kept as written in a request target; the rest is quoted

DROPPED = "dropped: too many pending notifications"
NO_WEBHOOK = "no [notify] webhook configured"
CLOSED = "cancelled: the notifier closed"


@dataclass(frozen=True, slots=True)
class Delivery:
    ok: bool
    attempts: int
    detail: str  # "HTTP 200", "timed out after 5s", "connection refused", "HTTP 500"


@dataclass(frozen=True, slots=True)
class _Target:
    https: bool
    host: str
    port: int
    head: bytes  # request line and headers, up to the blank line


@dataclass(frozen=True, slots=True)
class _Outcome:
    ok: bool
    detail: str
    retry: bool


async def post_webhook(
    url: str,
    payload: Mapping[str, Any],
    timeout: float = 5.0,
    retries: int = 2,
    backoff: float = 1.0,
) -> Delivery:
    """POST `payload` as JSON to `url`; how it went, after at most `retries` retries.

    Each attempt (connect, TLS, send, status line) gets `timeout` seconds; the waits between
    attempts are `backoff`, `2 * backoff`, `4 * backoff`... Values JSON cannot encode are
    sent as their `str()`.
    """
    try:
        body = json.dumps(payload, default=str).encode()
    except ValueError as exc:  # a circular reference
        return Delivery(False, 0, f"payload is not JSON: {exc}")
    target = _target(url, len(body))
    if isinstance(target, str):
        return Delivery(False, 0, target)
    # Loading the trust store takes tens of milliseconds: not on the event loop.
    context = await asyncio.to_thread(ssl.create_default_context) if target.https else None
    attempt = 0
    while True:
        attempt += 1
        outcome = await _attempt(target, context, body, timeout)
        if outcome.ok or not outcome.retry or attempt > retries:
            return Delivery(outcome.ok, attempt, outcome.detail)
        await asyncio.sleep(backoff * 2 ** (attempt - 1))


def _target(url: str, length: int) -> _Target | str:
    """The parsed URL and request head, or why the URL cannot be used."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"invalid webhook URL: {exc}"
    if parts.scheme not in ("http", "https"):
        # Only the scheme: the URL may hold a token.
        return f"not an http(s) URL (scheme {parts.scheme!r})"
    if not parts.hostname:
        return "invalid webhook URL: no host"
    https = parts.scheme == "https"
    path = quote(parts.path or "/", safe=_URL_SAFE)
    if parts.query:
        path += "?" + quote(parts.query, safe=_URL_SAFE)
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {parts.netloc.rpartition('@')[2]}",
        "User-Agent: sqlifier",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        "Connection: close",
    ]
    if parts.username is not None:
        secret = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        lines.append("Authorization: Basic " + base64.b64encode(secret.encode()).decode())
    try:
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    except UnicodeEncodeError:
        return "invalid webhook URL: the host must be ASCII (use its xn-- form)"
    return _Target(https, parts.hostname, port or (443 if https else 80), head)


async def _attempt(
    target: _Target, context: ssl.SSLContext | None, body: bytes, timeout: float
) -> _Outcome:
    """One request, bounded by `timeout`."""
    outcome: _Outcome | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                target.host,
                target.port,
                ssl=context,
                server_hostname=target.host if context else None,
            )
            try:
                writer.write(target.head + body)
                await writer.drain()
                outcome = await _response(reader)
            finally:
                await _close(writer)
    except TimeoutError:
        if outcome is None:  # the answer came; only closing took too long
            return _Outcome(False, f"timed out after {timeout:g}s", True)
    except ssl.SSLCertVerificationError as exc:
        return _Outcome(False, f"TLS: {exc.verify_message}", False)
    except ssl.SSLError as exc:
        return _Outcome(False, f"TLS: {exc.reason or exc}", True)
    except OSError as exc:
        return _Outcome(False, _reason(exc), True)
    assert outcome is not None
    return outcome


async def _response(reader: asyncio.StreamReader) -> _Outcome:
    """The outcome the response's status line gives (informational responses skipped)."""
    while True:
        try:
            line = await reader.readline()
        except ValueError:  # a line longer than the stream's limit
            return _Outcome(False, "not an HTTP response", False)
        if not line:
            return _Outcome(False, "connection closed without a response", True)
        parts = line.split()
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            return _Outcome(False, "not an HTTP response", False)
        status = int(parts[1])
        if status >= 200:
            return _Outcome(200 <= status < 300, f"HTTP {status}", status >= 500)
        while (await reader.readline()).strip():  # the 1xx response's headers
            pass


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    except BaseException:
        writer.transport.abort()  # interrupted (timeout, cancel): do not leave it half-closed
        raise


def _reason(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return exc.strerror or str(exc) or type(exc).__name__


class Notifier:
    """Delivers NOTIFY payloads in the background; results go to `on_result`.

    `notify` never waits. At most MAX_PENDING deliveries are pending; beyond that the
    oldest is cancelled and reported as dropped. `on_result` is called exactly once per
    payload: with the delivery, or with ok=False when it was dropped or `close` cancelled it.
    """

    def __init__(
        self,
        url: str | None,
        timeout: float,
        on_result: Callable[[Mapping[str, Any], Delivery], None],
        *,
        retries: int = 2,
        backoff: float = 1.0,
    ) -> None:
        self._url = url
        self._timeout = timeout
        self._on_result = on_result
        self._retries = retries
        self._backoff = backoff
        self._pending: dict[asyncio.Task[None], Mapping[str, Any]] = {}
        self._closed = False

    @property
    def pending(self) -> int:
        """Deliveries started and not yet reported."""
        return len(self._pending)

    def notify(self, payload: Mapping[str, Any]) -> None:
        """Start delivering `payload`; returns at once. Call it from the event loop."""
        if self._url is None:
            self._on_result(payload, Delivery(False, 0, NO_WEBHOOK))
            return
        if self._closed:
            self._on_result(payload, Delivery(False, 0, CLOSED))
            return
        if len(self._pending) >= MAX_PENDING:
            oldest = next(iter(self._pending))
            dropped = self._pending.pop(oldest)
            oldest.cancel()
            self._on_result(dropped, Delivery(False, 0, DROPPED))
        task = asyncio.get_running_loop().create_task(self._deliver(self._url, payload))
        self._pending[task] = payload

    async def close(self) -> None:
        """Cancel every pending delivery, report each as not delivered, and wait for them."""
        self._closed = True
        pending, self._pending = self._pending, {}
        for task in pending:
            task.cancel()
        for payload in pending.values():
            self._on_result(payload, Delivery(False, 0, CLOSED))
        if pending:
            await asyncio.wait(pending)

    async def _deliver(self, url: str, payload: Mapping[str, Any]) -> None:
        delivery = await post_webhook(url, payload, self._timeout, self._retries, self._backoff)
        # No await between here and the report: a task that got this far is never
        # also reported as dropped or cancelled.
        task = asyncio.current_task()
        if task is not None and self._pending.pop(task, None) is not None:
            self._on_result(payload, delivery)


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
        kept, cut = bytes(self.kept), self.cut
        if not cut:
            return kept.decode("utf-8", "replace")
        start = 0
        while start < min(len(kept), 3) and kept[start] & 0xC0 == 0x80:
            start += 1  # the rest of a character cut in two
        return f"[... {cut + start} bytes cut]\n" + kept[start:].decode("utf-8", "replace")
