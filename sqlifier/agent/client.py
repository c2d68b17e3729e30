"""Talking to a running agent over its unix socket (what the CLI uses)."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any

from sqlifier.agent.files import agent_files, read_info
from sqlifier.errors import UserError
from sqlifier.runtime.process import is_same_process
from sqlifier.store.audit import current_user

__all__ = ["AgentClient", "AgentNotRunning", "agent_alive", "read_info"]


class AgentNotRunning(UserError):
    """No agent answers for this stack and environment."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self.socket_path))
        self.sock = sock


def agent_alive(state_dir: Path) -> bool:
    """Is the agent that wrote `agent.json` still that same running process?"""
    info = read_info(state_dir)
    if not info or info.get("phase") in ("stopped", "failed"):
        return False
    try:
        return is_same_process(int(info["pid"]), float(info["started"]))
    except (KeyError, TypeError, ValueError):
        return False


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
        connection = _UnixConnection(self.files["socket"], self.timeout)
        payload = json.dumps(body or {})
        try:
            connection.request(
                method,
                path,
                body=payload,
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/json",
                    "X-Sqlifier-User": current_user(),
                },
            )
            response = connection.getresponse()
            data = json.loads(response.read() or b"{}")
        except (FileNotFoundError, ConnectionRefusedError):
            raise self._not_running() from None
        except TimeoutError:
            raise UserError(
                f"the agent did not answer {method} {path} within {self.timeout:g}s; "
                "it may still be working (see sqlifier ps)"
            ) from None
        except (ConnectionError, http.client.HTTPException) as exc:
            raise UserError(f"the agent broke off {method} {path}: {exc}") from None
        finally:
            connection.close()
        if response.status != 200:
            raise UserError(str(data.get("error", f"agent answered {response.status}")))
        return data

    def _not_running(self) -> AgentNotRunning:
        return AgentNotRunning(
            f"nothing is running for environment {self.env!r} (start it with sqlifier up)"
        )
