"""Talking to a running agent over its unix socket (what the CLI uses).

One request per connection (`Connection: close`), on a plain socket. The agent's side
speaks HTTP/1.1 through h11 (`runtime/http.py`); this side reads the one answer with the
standard library only (h11 is a tenth of the start-up of `sqlifier ps`): a status line,
headers, and a body framed by `Content-Length`, by chunks, or by the end of the connection.
A malformed answer is refused, never guessed at.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from pathlib import Path
from typing import Any

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
        except (ConnectionError, ValueError) as exc:
            raise UserError(f"the agent broke off {method} {path}: {exc}") from None
        if status != 200:
            raise UserError(str(data.get("error", f"agent answered {status}")))
        return data

    def _exchange(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, bytes]:
        """One request on a fresh connection: the status and body of the answer."""
        headers = [*headers, ("Content-Length", str(len(body))), ("Connection", "close")]
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            sock.connect(str(self.files["socket"]))
            sock.sendall(head.encode("latin-1") + b"\r\n" + body)
            return _Answer(sock).read()

    def _not_running(self) -> AgentNotRunning:
        return AgentNotRunning(
            f"nothing is running for environment {self.env!r} (start it with sqlifier up)"
        )


def _current_user() -> str:
    # store.audit.current_user, without loading the audit log's module (sqlite3, hashlib)
    # to start `sqlifier ps`.
    return os.environ.get("SQLIFIER_USER") or getpass.getuser()


class _Answer:
    """One HTTP/1.1 response read from a socket (RFC 9112): what the agent sends."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.closed = False

    def read(self) -> tuple[int, bytes]:
        status, headers = self._head()
        while 100 <= status < 200:  # interim answers carry no body
            status, headers = self._head()
        codings = [v.strip().lower() for k, v in headers if k == "transfer-encoding"]
        lengths = {v.strip() for k, v in headers if k == "content-length"}
        if codings:
            if codings[-1].split(",")[-1].strip() != "chunked":
                raise ValueError(f"unknown transfer coding {codings[-1]!r}")
            return status, self._chunked()
        if len(lengths) > 1:
            raise ValueError("conflicting Content-Length headers")
        if lengths:
            length = lengths.pop()
            if not length.isdigit() or int(length) > MAX_ANSWER:
                raise ValueError(f"bad Content-Length {length!r}")
            return status, self._exactly(int(length))
        while not self.closed:  # framed by the end of the connection
            self._more()
        return status, bytes(self.buffer)

    def _head(self) -> tuple[int, list[tuple[str, str]]]:
        end = self.buffer.find(b"\r\n\r\n")
        while end < 0:
            if self.closed:
                raise ConnectionError("the connection closed before a complete answer")
            self._more()
            end = self.buffer.find(b"\r\n\r\n")
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        del self.buffer[: end + 4]
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise ValueError(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
        headers = []
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip() or "\n" in line or "\0" in line:
                raise ValueError(f"malformed header line {line[:80]!r}")
            headers.append((name.lower(), value.strip(" \t")))
        return int(code), headers

    def _chunked(self) -> bytes:
        body = bytearray()
        while True:
            size_line = self._line()
            size_text = size_line.split(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ValueError(f"bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                while self._line():  # the trailer, up to its empty line
                    pass
                return bytes(body)
            body += self._exactly(size)
            if len(body) > MAX_ANSWER:
                raise ValueError("the answer is too large")
            if self._line():
                raise ValueError("a chunk longer than its size")

    def _line(self) -> bytes:
        end = self.buffer.find(b"\r\n")
        while end < 0:
            if self.closed or len(self.buffer) > 65536:
                raise ValueError("an unfinished line in a chunked body")
            self._more()
            end = self.buffer.find(b"\r\n")
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

    def _exactly(self, count: int) -> bytes:
        while len(self.buffer) < count:
            if self.closed:
                raise ConnectionError("the connection closed before the whole answer")
            self._more()
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    def _more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            self.closed = True
        self.buffer += data
        if len(self.buffer) > MAX_ANSWER + 65536:
            raise ValueError("the answer is too large")
