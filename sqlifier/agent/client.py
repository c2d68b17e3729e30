"""Talking to a running agent over its unix socket (what the CLI uses).

One request per connection, its message syntax by h11 like every other HTTP exchange of
sqlifier (`runtime/http.py` holds the asynchronous side; the CLI waits on a plain
socket). Only h11 and the standard library are imported here: `ps` starts quickly.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from pathlib import Path
from typing import Any

import h11

from sqlifier.agent.files import agent_files, read_info
from sqlifier.errors import UserError

__all__ = ["AgentClient", "AgentNotRunning", "agent_alive", "read_info"]

MAX_ANSWER = 64 * 1024 * 1024  # the largest answer read (a long rule listing)


class AgentNotRunning(UserError):
    """No agent answers for this stack and environment."""


def agent_alive(state_dir: Path) -> bool:
    """Is the agent that wrote `agent.json` still that same running process?"""
    info = read_info(state_dir)
    if not info or info.get("phase") in ("stopped", "failed"):
        return False
    try:
        pid, started = int(info["pid"]), float(info["started"])
    except (KeyError, TypeError, ValueError):
        return False
    if os.path.exists("/proc/self/stat"):
        found = _linux_start(pid)
        return found is not None and abs(found - started) < 0.05
    # Elsewhere psutil, alone: runtime.process (the same test) also loads asyncio.
    import psutil  # noqa: PLC0415

    try:
        process = psutil.Process(pid)
        same = abs(process.create_time() - started) < 0.05
        return same and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _linux_start(pid: int) -> float | None:
    """When a live (not zombie) process started, as psutil's create_time() reckons it on
    Linux (boot time + start ticks), read from /proc without importing psutil: a fifth of
    the start-up of `sqlifier ps`."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rpartition(b")")[2].split()
        with open("/proc/stat", "rb") as handle:
            boot = next(float(line.split()[1]) for line in handle if line.startswith(b"btime"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    if len(fields) < 20 or fields[0] == b"Z":
        return None
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


class AgentClient:
    def __init__(self, state_dir: Path, env: str, timeout: float = 120.0) -> None:
        self.files = agent_files(state_dir)
        self.env = env
        self.timeout = timeout

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Send one request; AgentNotRunning when nothing answers."""
        try:
            token = self.files["token"].read_text().strip()
        except OSError:
            raise self._not_running() from None
        headers = [
            ("Host", "localhost"),
            ("Authorization", f"Bearer {token}"),
            ("Content-Type", "application/json"),
            ("X-Sqlifier-User", _current_user()),
        ]
        try:
            status, raw = self._exchange(method, path, headers, json.dumps(body or {}).encode())
            data = json.loads(raw or b"{}")
        except (FileNotFoundError, ConnectionRefusedError):
            raise self._not_running() from None
        except TimeoutError:
            raise UserError(
                f"the agent did not answer {method} {path} within {self.timeout:g}s; "
                "it may still be working (see sqlifier ps)"
            ) from None
        except (ConnectionError, h11.ProtocolError, ValueError) as exc:
            raise UserError(f"the agent broke off {method} {path}: {exc}") from None
        if status != 200:
            raise UserError(str(data.get("error", f"agent answered {status}")))
        return data

    def _exchange(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, bytes]:
        """One request on a fresh connection: the status and body of the answer."""
        connection = h11.Connection(h11.CLIENT)
        headers = [*headers, ("Content-Length", str(len(body))), ("Connection", "close")]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            sock.connect(str(self.files["socket"]))
            request = h11.Request(method=method, target=path, headers=headers)
            parts = (request, h11.Data(data=body), h11.EndOfMessage())
            sock.sendall(b"".join(connection.send(part) or b"" for part in parts))
            status, answer = 0, bytearray()
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    connection.receive_data(sock.recv(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    answer += event.data
                    if len(answer) > MAX_ANSWER:
                        raise ValueError("the answer is too large")
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    return status, bytes(answer)

    def _not_running(self) -> AgentNotRunning:
        return AgentNotRunning(
            f"nothing is running for environment {self.env!r} (start it with sqlifier up)"
        )


def _current_user() -> str:
    # store.audit.current_user, without loading the audit log's module (sqlite3, hashlib)
    # to start `sqlifier ps`.
    return os.environ.get("SQLIFIER_USER") or getpass.getuser()
