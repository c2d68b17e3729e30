"""The agent's files beside its state, read by the CLI without importing the agent.

    .sqlifier/<env>/agent.sock        the API (0600), every request with the token
    .sqlifier/<env>/token             the token (0600)
    .sqlifier/<env>/agent.json        pid and start time of the agent; its phase; its error
    .sqlifier/<env>/audit.db          who did what (SQLite)
    .sqlifier/<env>/deploys/<id>.json a deploy's or rollback's record, rewritten on change

Only the standard library is imported here, so `ps`, `check` and `logs` start quickly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["agent_files", "read_info", "read_json", "read_run"]


def agent_files(state_dir: Path) -> dict[str, Path]:
    return {
        "socket": state_dir / "agent.sock",
        "token": state_dir / "token",
        "info": state_dir / "agent.json",
        "audit": state_dir / "audit.db",
    }


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object written by the agent, or None when missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_info(state_dir: Path) -> dict[str, Any] | None:
    """The agent's last written state (`agent.json`), or None."""
    return read_json(agent_files(state_dir)["info"])


def read_run(state_dir: Path, deploy_id: str) -> dict[str, Any] | None:
    """A deploy's last written record, or None."""
    if not deploy_id.replace("-", "").isalnum():
        return None
    return read_json(state_dir / "deploys" / f"{deploy_id}.json")
