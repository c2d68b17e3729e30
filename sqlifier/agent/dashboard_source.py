"""The agent as the web dashboard reads it (`sqlifier.dashboard.Source`).

Everything the dashboard shows comes through here: the same status the API gives, the
automation's engine, signals and records, the deploy records, the redactor — and `call`,
which puts an action through the agent's own API in-process, so it is validated, done and
audited exactly like the same command from the CLI, in the name of the logged-in user.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

from sqlifier.agent.api import Api
from sqlifier.agent.automation import Automation
from sqlifier.engine.machine import Engine
from sqlifier.engine.series import SeriesStore
from sqlifier.runtime.http import Incoming
from sqlifier.stack.model import Stack
from sqlifier.store.audit import AuditLog
from sqlifier.store.decisions import DecisionLog
from sqlifier.store.history import History

__all__ = ["AgentSource"]


class _Agent(Protocol):
    @property
    def automation(self) -> Automation | None: ...

    def status(self) -> dict[str, Any]: ...


class AgentSource:
    def __init__(
        self,
        agent: _Agent,
        stack: Stack,
        env: str,
        state_dir: Path,
        audit: AuditLog,
        api: Api,
        redact: Any,
        disk: Any,
    ) -> None:
        self._agent = agent
        self._stack = stack
        self._env = env
        self._deploys_dir = state_dir / "deploys"
        self._audit = audit
        self._api = api
        self._redact = redact
        self._disk = disk
        self._runs: dict[str, tuple[int, dict[str, Any]]] = {}  # file -> (mtime, record)

    @property
    def stack(self) -> Stack:
        return self._stack

    @property
    def env(self) -> str:
        return self._env

    @property
    def audit(self) -> AuditLog:
        return self._audit

    def status(self) -> dict[str, Any]:
        return {**self._agent.status(), "disk": self._disk()}

    def engine(self) -> Engine | None:
        automation = self._agent.automation
        return None if automation is None else automation.engine

    def store(self) -> SeriesStore | None:
        automation = self._agent.automation
        return None if automation is None else automation.store

    def history(self) -> History | None:
        automation = self._agent.automation
        return None if automation is None else automation.history

    def decisions(self) -> DecisionLog | None:
        automation = self._agent.automation
        return None if automation is None else automation.decisions

    def deploys(self) -> list[dict[str, Any]]:
        """Every record in deploys/, read again only when its file changed."""
        try:
            entries = list(os.scandir(self._deploys_dir))
        except OSError:
            return []
        runs: dict[str, tuple[int, dict[str, Any]]] = {}
        for entry in entries:
            if not entry.name.endswith(".json"):
                continue
            try:
                mtime = entry.stat().st_mtime_ns
            except OSError:
                continue
            known = self._runs.get(entry.name)
            if known is not None and known[0] == mtime:
                runs[entry.name] = known
                continue
            try:
                record = json.loads(Path(entry.path).read_text())
            except (OSError, ValueError):
                continue
            if isinstance(record, dict):
                runs[entry.name] = (mtime, record)
        self._runs = runs
        return sorted((r for _, r in runs.values()), key=lambda r: float(r.get("created") or 0))

    def redact(self, text: str) -> str:
        result: str = self._redact(text)
        return result

    async def call(self, method: str, path: str, body: dict[str, Any], who: str) -> tuple[int, Any]:
        headers = {
            "authorization": f"Bearer {self._api.token}",
            "x-sqlifier-user": who,
            "content-type": "application/json",
        }
        answer = await self._api.handle(Incoming(method, path, headers, json.dumps(body).encode()))
        return answer.status, json.loads(answer.body or b"{}")
