"""The decision record: every decision of the rule engine with its reason and values
(SQLite, WAL, beside the audit log). Kept for `retention` seconds (30 days by default)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path
from typing import Any

from sqlifier.engine.state import Decision
from sqlifier.store.files import unreadable

__all__ = ["DecisionLog"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    t REAL NOT NULL,
    rule TEXT NOT NULL,
    service TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL,
    action TEXT,
    detail TEXT,
    vals TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_rule ON decisions (rule, service, t);
CREATE INDEX IF NOT EXISTS decisions_t ON decisions (t);
"""

RETENTION = 30 * 86400.0


class DecisionLog:
    def __init__(self, path: Path, retention: float = RETENTION) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.retention = retention
        try:
            with closing(self._connect()) as db, db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise unreadable(
                path,
                "decision record",
                exc,
                f"`mv {path} {path}.old` (the rules' decisions "
                "are then recorded from scratch; the audit log is not affected)",
            ) from None

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def record(self, decisions: Iterable[Decision]) -> None:
        rows = [
            (
                d.t,
                d.rule,
                d.service,
                d.outcome,
                d.reason,
                d.action,
                d.detail,
                json.dumps(dict(d.values)),
            )
            for d in decisions
        ]
        if not rows:
            return
        with closing(self._connect()) as db, db:
            db.executemany(
                "INSERT INTO decisions (t, rule, service, outcome, reason, action, detail, vals)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def prune(self, now: float) -> None:
        with closing(self._connect()) as db, db:
            db.execute("DELETE FROM decisions WHERE t < ?", (now - self.retention,))

    def read(
        self,
        rule: str | None = None,
        service: str | None = None,
        since: float | None = None,
        limit: int = 1000,
        outcomes: Iterable[str] | None = None,
    ) -> list[dict[str, Any]]:
        """The newest `limit` decisions matching, oldest first."""
        where: list[str] = []
        args: list[object] = []
        if rule is not None:
            where.append("rule = ?")
            args.append(rule)
        if service is not None:
            where.append("service = ?")
            args.append(service)
        if since is not None:
            where.append("t >= ?")
            args.append(since)
        wanted = list(outcomes or [])
        if wanted:
            where.append(f"outcome IN ({', '.join('?' * len(wanted))})")
            args.extend(wanted)
        sql = "SELECT t, rule, service, outcome, reason, action, detail, vals FROM decisions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        with closing(self._connect()) as db:
            rows = db.execute(sql, (*args, limit)).fetchall()
        return [
            {
                "t": t,
                "rule": r,
                "service": s,
                "outcome": o,
                "reason": reason,
                "action": a,
                "detail": d,
                "values": json.loads(v),
            }
            for t, r, s, o, reason, a, d, v in reversed(rows)
        ]

    def counts(self) -> list[dict[str, Any]]:
        """Decisions by rule, service and outcome, and actions by result (for /metrics)."""
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT rule, service, outcome, action, COUNT(*) FROM decisions"
                " GROUP BY rule, service, outcome, action"
            ).fetchall()
        return [
            {"rule": r, "service": s, "outcome": o, "action": a, "count": n}
            for r, s, o, a, n in rows
        ]
