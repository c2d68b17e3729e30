"""What the dashboard reads and asks of the agent: one Protocol, so it sees no platform.

The agent hands the dashboard a `Source` (`agent/dashboard_source.py`): the status the API
gives `sqlifier ps`, the rule engine, the signal store and history, the decision record,
the audit log, the deploy records, the secret redactor, and `call` — the agent's own API,
in-process, for every action, so that an action from the dashboard is checked, done and
audited exactly as the same command from the CLI (as the logged-in user). Nothing here
knows whether the instances are local processes or pods.
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlifier.engine.machine import Engine
from sqlifier.engine.series import SeriesStore
from sqlifier.stack.model import Stack
from sqlifier.store.audit import AuditLog
from sqlifier.store.decisions import DecisionLog
from sqlifier.store.history import History

__all__ = ["Source"]


class Source(Protocol):
    @property
    def stack(self) -> Stack: ...

    @property
    def env(self) -> str: ...

    @property
    def audit(self) -> AuditLog: ...

    def status(self) -> dict[str, Any]:
        """The agent's phase, instances, counts, router and traffic (`GET /v1/status`)."""
        ...

    def engine(self) -> Engine | None:
        """The rules' engine, once the stack is up."""
        ...

    def store(self) -> SeriesStore | None:
        """The live signal store (latest levels), once the stack is up."""
        ...

    def history(self) -> History | None:
        """The signal history at 10 s (what was flushed and what is buffered)."""
        ...

    def decisions(self) -> DecisionLog | None: ...

    def deploys(self) -> list[dict[str, Any]]:
        """Every deploy's and rollback's record, oldest first."""
        ...

    def redact(self, text: str) -> str:
        """`text` with every secret value the agent knows masked."""
        ...

    async def call(self, method: str, path: str, body: dict[str, Any], who: str) -> tuple[int, Any]:
        """One request to the agent's API, as `who`: its status and JSON answer."""
        ...
