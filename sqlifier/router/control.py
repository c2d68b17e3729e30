"""How the agent talks to the data plane: JSON lines over a 0600 unix socket.

    {"op": "sync", "state": {...}}  -> {"ok": true, "generation": N}   (in force on reply)
    {"op": "stats"}                 -> {"ok": true, "kind": ..., "backends": {...}, ...}
    {"op": "ping"}                  -> {"ok": true, "kind": ..., "pid": ...}

Both data planes answer the same requests (`DataPlane`), so the agent does not know or
care which one runs. The last state received is also written to `router-state.json`, so a
data plane that restarts serves the same routes before the agent has spoken to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Protocol

from sqlifier.router.state import DesiredState

__all__ = ["ControlClient", "ControlError", "DataPlane", "serve_control"]

MAX_MESSAGE = 16 * 1024 * 1024


class DataPlane(Protocol):
    kind: str

    async def apply(self, state: DesiredState) -> int:
        """Put `state` in force; return a generation number that grows with each call."""
        ...

    async def stats(self) -> dict[str, Any]: ...


class ControlError(Exception):
    """The data plane could not be reached or refused a request."""


async def serve_control(plane: DataPlane, path: Path, state_file: Path) -> asyncio.Server:
    lock = asyncio.Lock()  # one change at a time, in the order they arrive

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    message = json.loads(line)
                    op = message["op"]
                    if op == "sync":
                        state = DesiredState.from_json(message["state"])
                        async with lock:
                            generation = await plane.apply(state)
                            _save(state_file, message["state"])
                        reply: dict[str, Any] = {"ok": True, "generation": generation}
                    elif op == "stats":
                        reply = {"ok": True, "kind": plane.kind, **await plane.stats()}
                    elif op == "ping":
                        reply = {"ok": True, "kind": plane.kind, "pid": os.getpid()}
                    else:
                        reply = {"ok": False, "error": f"unknown op {op!r}"}
                except (ValueError, KeyError, TypeError) as exc:
                    reply = {"ok": False, "error": f"bad message: {exc}"}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    old = os.umask(0o177)
    try:
        return await asyncio.start_unix_server(handle, path=str(path), limit=MAX_MESSAGE)
    finally:
        os.umask(old)


SAVE_FAILURES = [0]  # state writes that failed (a full disk): routing goes on without them


def _save(path: Path, state: Any) -> None:
    temp = path.with_suffix(".tmp")
    try:
        temp.write_text(json.dumps(state))
        temp.replace(path)
    except OSError as exc:  # the state in memory is what routes; the file only outlives us
        SAVE_FAILURES[0] += 1
        print(f"router: cannot save {path.name} ({SAVE_FAILURES[0]}): {exc}", file=sys.stderr)


def load_saved(path: Path) -> DesiredState | None:
    """The state a data plane had before it restarted, if it was saved and is readable."""
    try:
        return DesiredState.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class ControlClient:
    """The agent's side: one connection, reopened when the data plane restarted."""

    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout
        self._connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()

    async def call(self, message: dict[str, Any]) -> dict[str, Any]:
        async with self._lock:
            for attempt in range(2):
                try:
                    if self._connection is None:
                        self._connection = await asyncio.open_unix_connection(
                            str(self.path), limit=MAX_MESSAGE
                        )
                    reader, writer = self._connection
                    writer.write(json.dumps(message).encode() + b"\n")
                    await writer.drain()
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow
                    # a cancellation, and the agent's stop would wait forever.
                    async with asyncio.timeout(self.timeout):
                        line = await reader.readline()
                    if not line:
                        raise ConnectionResetError("the data plane closed the connection")
                    reply: dict[str, Any] = json.loads(line)
                except (OSError, TimeoutError, ValueError) as exc:
                    self.close()
                    if attempt == 1:
                        raise ControlError(f"the data plane does not answer: {exc}") from None
                    continue
                if not reply.get("ok"):
                    raise ControlError(str(reply.get("error", "refused")))
                return reply
        raise AssertionError("unreachable")  # pragma: no cover

    async def sync(self, state: DesiredState) -> int:
        return int((await self.call({"op": "sync", "state": state.to_json()}))["generation"])

    async def stats(self) -> dict[str, Any]:
        return await self.call({"op": "stats"})

    def close(self) -> None:
        if self._connection is not None:
            self._connection[1].close()
            self._connection = None
