"""The audit table: who did what, to what, when, and how it ended (SQLite, WAL)."""

from __future__ import annotations

import getpass
import os
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

__all__ = ["AuditEntry", "AuditLog", "current_user"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    who TEXT NOT NULL,
    what TEXT NOT NULL,
    target TEXT NOT NULL,
    result TEXT NOT NULL
)
"""


def current_user() -> str:
    """`SQLIFIER_USER`, else the operating-system user."""
    return os.environ.get("SQLIFIER_USER") or getpass.getuser()


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: float
    who: str
    what: str
    target: str
    result: str


class AuditLog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        with closing(self._connect()) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def record(self, who: str, what: str, target: str, result: str) -> None:
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT INTO audit (at, who, what, target, result) VALUES (?, ?, ?, ?, ?)",
                (time.time(), who, what, target, result),
            )

    def entries(self) -> list[AuditEntry]:
        with closing(self._connect()) as db:
            rows = db.execute("SELECT id, at, who, what, target, result FROM audit ORDER BY id")
            return [AuditEntry(*row) for row in rows]
