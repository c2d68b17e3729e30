"""State files that are damaged: said, kept aside, never silently replaced.

StateFileError   a state file sqlifier cannot use; the message names it and what to do
unreadable()     that error for a SQLite file that is not a database (or is malformed)
set_aside()      a damaged file (and its SQLite companions) renamed beside itself,
                 `audit.db` -> `audit.broken-20261207T093512Z.db`, so that nothing is lost
restore_engine() the rules' state from `engine.json`; a corrupt one is set aside, said
                 and audited, and the rules start without it
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from sqlifier.errors import UserError

__all__ = ["StateFileError", "set_aside", "unreadable"]

_COMPANIONS = ("-wal", "-shm", "-journal")


class StateFileError(UserError):
    """A state file sqlifier cannot use: the message names the file and what to do;
    `reason` says what is wrong with it, in a few words."""

    def __init__(self, message: str, reason: str, sqlite: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.sqlite = sqlite  # SQLite's own words, for a database


def unreadable(path: Path, what: str, exc: sqlite3.Error, remedy: str) -> StateFileError:
    """The error for a SQLite file that cannot be used: damaged (not a database, malformed)
    or out of reach (locked, no permission, a full disk)."""
    if isinstance(exc, sqlite3.OperationalError):
        return StateFileError(f"{path}: cannot open the {what}: {exc}", str(exc), str(exc))
    return StateFileError(
        f"{path}: the {what} is damaged and cannot be read ({exc}). Restore it from a "
        f"backup, or start a new one with {remedy}",
        f"is damaged ({exc})",
        str(exc),
    )


def set_aside(path: Path, clock: Callable[[], float] = time.time) -> Path:
    """Rename `path` (and its SQLite companions `-wal`, `-shm`) to a name marked broken
    with the time, beside it; the new name of `path`."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(clock()))
    target = path.with_name(f"{path.stem}.broken-{stamp}{path.suffix}")
    counter = 1
    while target.exists():
        counter += 1
        target = path.with_name(f"{path.stem}.broken-{stamp}-{counter}{path.suffix}")
    for suffix in _COMPANIONS:
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            companion.rename(target.with_name(target.name + suffix))
    if path.exists():
        path.rename(target)
    return target
