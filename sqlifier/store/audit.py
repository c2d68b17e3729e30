"""The audit log: who did what, to what, when, why and how it ended — append-only and
hash-chained (SQLite, WAL).

Each entry carries the hash of the entry before it (`prev_hash`; the first entry's is 64
zeros) and its own `hash`: SHA-256 of the entry's fields as compact JSON with sorted keys
(`_digest`). Changing an entry breaks its hash; removing one leaves a gap in the ids and a
link that no longer matches. Removing the *last* entries breaks nothing in the chain, so
after each append the newest entry's id and hash are also written to `audit.head` beside
the database (0600, replaced atomically), and `verify()` compares. Triggers refuse UPDATE
and DELETE, so no code path changes the log by accident.

The limits, honestly: the hash holds no secret. Whoever can write both files can rebuild
the whole chain and the head; this detects edits and removals, not a determined forger.
For a stronger guarantee, copy the head somewhere the host cannot rewrite (a webhook, a
log service) and compare it with `audit.head` later.

Several processes append (the agent, CLI commands): reading the last entry and inserting
the next happen in one `BEGIN IMMEDIATE` transaction. The head is written after the commit,
so it never names an entry that is not in the database yet; appenders racing may write it
out of order, which leaves it behind the last entry — harmless, the next append moves it on.
Each append costs a commit and an fsync of the head (a few milliseconds).

A database from before the chain gets the new columns when opened, and its entries are
chained in id order, in the same transaction. Entries an older sqlifier appends later
(without a hash) are chained the same way by the next append or open — only those after
the head, so blanking a chained entry's hash cannot get it re-chained.
"""

from __future__ import annotations

import errno
import getpass
import hashlib
import json
import math
import os
import re
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlifier.errors import UserError
from sqlifier.store.files import unreadable

__all__ = [
    "GENESIS",
    "HEAD_FILE",
    "RESERVE_FILE",
    "AuditEntry",
    "AuditLog",
    "AuditLogLost",
    "VerifyResult",
    "current_user",
    "lost_entries",
]

GENESIS = "0" * 64  # the prev_hash of the first entry
HEAD_FILE = "audit.head"
# Space kept beside the log for when the disk fills up: released at the first "disk full",
# it lets actions (failed ones included) still be recorded. Made again at the next start.
RESERVE_FILE = "audit.reserve"
RESERVE_SIZE = 1024 * 1024

# The table as it was before the chain; the columns after it are added on open, with
# defaults that let an older sqlifier still insert.
_TABLE = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    who TEXT NOT NULL,
    what TEXT NOT NULL,
    target TEXT NOT NULL,
    result TEXT NOT NULL
)
"""
_ADDED = {
    "why": "TEXT NOT NULL DEFAULT ''",
    "service": "TEXT",
    "details": "TEXT",
    "prev_hash": "TEXT NOT NULL DEFAULT ''",
    "hash": "TEXT NOT NULL DEFAULT ''",
}
_GUARDS = (
    "CREATE INDEX IF NOT EXISTS audit_at ON audit (at)",
    "CREATE INDEX IF NOT EXISTS audit_service ON audit (service, at)",
    # An entry without a hash yet (written by an older sqlifier) may be chained, once.
    """CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    WHEN OLD.hash != '' BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
)
_HASHED = ("id", "at", "who", "what", "target", "result", "why", "service", "details")
_FIELDS = ", ".join((*_HASHED, "prev_hash", "hash"))
# "stack/env/service ...": how callers name what they acted on.
_SERVICE = re.compile(r"[^/\s]+/[^/\s]+/([^/\s()]+)")


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
    why: str
    service: str | None
    details: Mapping[str, Any] | None
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The chain checked: `problem` names the first break, `at_id` the entry it concerns
    (the first one missing for a removal); None for both when the log is intact."""

    ok: bool
    entries: int
    problem: str | None = None
    at_id: int | None = None


@dataclass(frozen=True, slots=True)
class _Head:
    id: int
    hash: str


class AuditLogLost(UserError):
    """The audit log's entries are gone (the file emptied, replaced or removed) while its
    head names entries: a new log is started only on purpose (`sqlifier audit reset`)."""


def lost_entries(path: Path) -> str | None:
    """Why the log at `path` lost every entry its head names, or None when it did not:
    the database is missing or empty (with no write-ahead log holding its pages) or holds
    no entry, while `audit.head` names one."""
    head = _read_head_or_none(path.with_name(HEAD_FILE))
    if head is None or head.id < 1:
        return None
    wal = path.with_name(path.name + "-wal")
    pages = (path.stat().st_size if path.exists() else 0) + (
        wal.stat().st_size if wal.exists() else 0
    )
    if not path.exists():
        state = "missing"
    elif pages == 0:
        state = "empty"
    else:
        try:
            with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
                tables = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'audit'").fetchall()
                count = db.execute("SELECT COUNT(*) FROM audit").fetchone()[0] if tables else 0
        except sqlite3.Error:
            return None  # unreadable: opening it says so
        if count:
            return None
        state = "without entries"
    return f"the audit log is {state}, but {HEAD_FILE} names entry {head.id}"


class AuditLog:
    def __init__(
        self, path: Path, clock: Callable[[], float] = time.time, *, lost_ok: bool = False
    ) -> None:
        """Open (and create, or upgrade from before the chain) the log at `path`.

        AuditLogLost when the log lost the entries its head names (unless `lost_ok`: to
        read or verify what is left); StateFileError when it is not a readable database.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.clock = clock
        self.head_path = path.with_name(HEAD_FILE)
        if not lost_ok:
            lost = lost_entries(path)
            if lost is not None:
                raise AuditLogLost(
                    f"{path}: {lost}: its entries were lost (the file was emptied, replaced "
                    "or removed). Restore it from a backup, or start a new log on purpose "
                    "with `sqlifier audit reset` (the old files are kept aside and the reset "
                    "is the new log's first entry)"
                )
        try:
            with closing(self._connect()) as db:
                db.execute("PRAGMA journal_mode=WAL")
            with self._writing() as db:
                _upgrade(db)
                adopted = _chain_tail(db, _read_head_or_none(self.head_path))
        except sqlite3.DatabaseError as exc:
            remedy = "`sqlifier audit reset` (the damaged file is kept aside)"
            raise unreadable(path, "audit log", exc, remedy) from None
        if adopted is not None:
            _write_head(self.head_path, adopted)
        self.reserve_path = path.with_name(RESERVE_FILE)
        self.reserve_released = False  # by this process, for a full disk
        if not lost_ok:
            _make_reserve(self.reserve_path)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10, isolation_level=None)

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken before anything is read."""
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                if db.in_transaction:  # SQLite ends some failed transactions itself
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def record(
        self,
        who: str,
        what: str,
        target: str,
        result: str,
        *,
        why: str = "",
        details: Mapping[str, Any] | None = None,
        service: str | None = None,
    ) -> AuditEntry:
        """Append an entry and return it.

        `details` (JSON: an analysis verdict's values, say) is stored as given; a value JSON
        cannot hold is stored as its text. `service` defaults to the third part of a target
        shaped "stack/env/service ..."; pass "" for an entry about no service.
        """
        if service is None:
            service = _service_of(target)
        text = None if details is None else _json(details)
        try:
            entry = self._append(who, what, target, result, why, service, text)
        except (OSError, sqlite3.OperationalError) as exc:
            if not _disk_full(exc, self.path.parent) or not self._release_reserve():
                raise
            entry = self._append(who, what, target, result, why, service, text)
        try:
            _write_head(self.head_path, _Head(entry.id, entry.hash))
        except OSError as exc:
            # A head left behind the last entry is harmless: the next append moves it on.
            if not _disk_full(exc, self.path.parent):
                raise
            if self._release_reserve():
                _write_head(self.head_path, _Head(entry.id, entry.hash))
        return entry

    def _release_reserve(self) -> bool:
        """Give the reserve's space back to the filesystem; False when there was none."""
        try:
            self.reserve_path.unlink()
        except OSError:
            return False
        self.reserve_released = True
        return True

    def _append(
        self, who: str, what: str, target: str, result: str, why: str, service: str | None,
        text: str | None,
    ) -> AuditEntry:  # fmt: skip
        """Insert the next entry (the head is written by the caller)."""
        with self._writing() as db:
            head = _read_head_or_none(self.head_path)
            _chain_tail(db, head)
            last = db.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
            entry_id = _next_id(db, last, head)
            fields = (entry_id, self.clock(), who, what, target, result, why, service or None, text)
            prev = last[1] if last else GENESIS
            digest = _digest(fields, prev)
            db.execute(
                f"INSERT INTO audit ({_FIELDS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*fields, prev, digest),
            )
        return _entry((*fields, prev, digest))

    def entries(
        self, since: float | None = None, service: str | None = None, limit: int | None = None
    ) -> list[AuditEntry]:
        """Entries, oldest first: those at or after `since`, about `service`, the last
        `limit` of them."""
        where: list[str] = ["1"]
        args: list[float | str | int] = []
        if since is not None:
            where.append("at >= ?")
            args.append(since)
        if service is not None:
            where.append("service = ?")
            args.append(service)
        query = f"SELECT {_FIELDS} FROM audit WHERE {' AND '.join(where)} ORDER BY id DESC"
        if limit is not None:
            query += " LIMIT ?"
            args.append(limit)
        with closing(self._connect()) as db:
            rows = db.execute(query, args).fetchall()
        return [_entry(row) for row in reversed(rows)]

    def verify(self) -> VerifyResult:
        """Recompute the chain and compare its end with the head file."""
        # The head first: it is written after each commit, so the entries read next
        # include the one it names (or it names none that is missing).
        try:
            head = _read_head(self.head_path)
        except (OSError, ValueError) as exc:
            return _head_problem(self._count(), f"{HEAD_FILE} is unreadable ({exc})")
        with closing(self._connect()) as db:
            walk = _walk(db.execute(f"SELECT {_FIELDS} FROM audit ORDER BY id"), head)
        if walk.problem is not None:
            return VerifyResult(False, walk.entries, *walk.problem)
        return _check_head(walk, head)

    def _count(self) -> int:
        with closing(self._connect()) as db:
            count: int = db.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
            return count


# --- writing -----------------------------------------------------------------------------


def _make_reserve(path: Path) -> None:
    """The reserve file, unless it is there or the disk has no room for it now."""
    if path.exists():
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        return
    try:
        os.posix_fallocate(fd, 0, RESERVE_SIZE)
    except OSError:
        with suppress(OSError):
            os.unlink(path)  # no room: a reserve only in name would be worse than none
    finally:
        os.close(fd)


def _disk_full(exc: OSError | sqlite3.OperationalError, folder: Path) -> bool:
    """Did `exc` come of a full disk? SQLite says "disk I/O error" when it cannot grow its
    shared-memory file: then the filesystem of `folder` is asked."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary code of an extended one
    if code == sqlite3.SQLITE_FULL:
        return True
    if code != sqlite3.SQLITE_IOERR:
        return False
    try:
        return os.statvfs(folder).f_bavail == 0
    except OSError:
        return False


def _upgrade(db: sqlite3.Connection) -> None:
    db.execute(_TABLE)
    present = {row[1] for row in db.execute("PRAGMA table_info(audit)")}
    for column, declaration in _ADDED.items():
        if column not in present:
            db.execute(f"ALTER TABLE audit ADD COLUMN {column} {declaration}")
    for statement in _GUARDS:
        db.execute(statement)


def _chain_tail(db: sqlite3.Connection, head: _Head | None) -> _Head | None:
    """Chain the entries written without a hash after the last chained one and after the
    head; the last of them, or None when there were none."""
    last = db.execute("SELECT hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    if last is None or last[0]:
        return None
    chained = db.execute(
        "SELECT id, hash FROM audit WHERE hash != '' ORDER BY id DESC LIMIT 1"
    ).fetchone()
    start = max(chained[0] if chained else 0, head.id if head else 0)
    prev = chained[1] if chained else GENESIS
    tip = None
    for row in db.execute(f"SELECT {_FIELDS} FROM audit WHERE id > ?", (start,)).fetchall():
        fields = list(row[: len(_HASHED)])
        if fields[7] is None:  # service
            fields[7] = _service_of(fields[4])
        digest = _digest(fields, prev)
        db.execute(
            "UPDATE audit SET service = ?, prev_hash = ?, hash = ? WHERE id = ?",
            (fields[7], prev, digest, fields[0]),
        )
        prev, tip = digest, _Head(fields[0], digest)
    return tip


def _service_of(target: str) -> str | None:
    match = _SERVICE.match(target)
    return match.group(1) if match else None


def _next_id(db: sqlite3.Connection, last: Sequence[Any] | None, head: _Head | None) -> int:
    """One past any id ever used, so a removed last entry leaves a gap that shows."""
    used = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit'").fetchone()
    return max(used[0] if used else 0, last[0] if last else 0, head.id if head else 0) + 1


def _digest(fields: Sequence[Any], prev_hash: str) -> str:
    canonical = dict(zip(_HASHED, fields, strict=True), prev_hash=prev_hash)
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _json(details: Mapping[str, Any]) -> str:
    return json.dumps(_plain(details), sort_keys=True, separators=(",", ":"), default=str)


def _plain(value: Any) -> Any:
    """JSON that any reader accepts: text keys, no NaN or infinity (kept as text)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _write_head(path: Path, head: _Head) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps({"id": head.id, "hash": head.hash}) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(temporary)
        raise


# --- reading and verifying ---------------------------------------------------------------


def _entry(row: Sequence[Any]) -> AuditEntry:
    details = None if row[8] is None else json.loads(row[8])
    entry_id, at, who, what, target, result, why, service, _, prev_hash, digest = row
    return AuditEntry(
        entry_id, at, who, what, target, result, why, service, details, prev_hash, digest
    )


def _read_head(path: Path) -> _Head | None:
    """The head file's entry; None when there is no file. ValueError when unreadable."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("id"), int):
        raise ValueError("no entry id in it")
    if not isinstance(data.get("hash"), str):
        raise ValueError("no hash in it")
    return _Head(data["id"], data["hash"])


def _read_head_or_none(path: Path) -> _Head | None:
    """For appending, which must not fail on a damaged head (it writes a new one)."""
    try:
        return _read_head(path)
    except (OSError, ValueError):
        return None


@dataclass(slots=True)
class _Walk:
    entries: int = 0
    last_id: int = 0
    head_hash: str | None = None  # the hash of the entry the head names
    problem: tuple[str, int] | None = None


def _walk(rows: Iterator[Sequence[Any]], head: _Head | None) -> _Walk:
    walk = _Walk()
    prev_hash = GENESIS
    for row in rows:
        walk.entries += 1
        if walk.problem is None:
            walk.problem = _link_problem(row, walk.last_id, prev_hash)
        walk.last_id, prev_hash = row[0], row[-1]
        if head is not None and row[0] == head.id:
            walk.head_hash = row[-1]
    return walk


def _link_problem(row: Sequence[Any], prev_id: int, prev_hash: str) -> tuple[str, int] | None:
    entry_id = row[0]
    after = f"entry {prev_id}" if prev_id else "the start of the log"
    if entry_id <= prev_id:
        return f"entry {entry_id} does not follow {after}: it was inserted", entry_id
    if entry_id != prev_id + 1:
        first, last = prev_id + 1, entry_id - 1
        which = f"entry {first} was" if first == last else f"entries {first}-{last} were"
        return f"entry {entry_id} does not follow {after}: {which} removed", first
    if row[-2] != prev_hash:
        return (
            f"entry {entry_id} does not follow {after}: "
            "one of them was changed and its hash recomputed",
            entry_id,
        )
    if _digest(row[: len(_HASHED)], row[-2]) != row[-1]:
        return f"entry {entry_id} was changed: its hash does not match", entry_id
    return None


def _check_head(walk: _Walk, head: _Head | None) -> VerifyResult:
    if head is None:
        if walk.entries == 0:
            return VerifyResult(True, 0)
        return _head_problem(walk.entries, f"{HEAD_FILE} is missing")
    if head.id > walk.last_id:
        removed = head.id - walk.last_id
        which = "the last entry was" if removed == 1 else f"the last {removed} entries were"
        problem = f"{which} removed (the head names entry {head.id})"
        return VerifyResult(False, walk.entries, problem, walk.last_id + 1)
    if walk.head_hash != head.hash:
        problem = f"entry {head.id} was changed: its hash is not the one {HEAD_FILE} names"
        return VerifyResult(False, walk.entries, problem, head.id)
    return VerifyResult(True, walk.entries)


def _head_problem(entries: int, what: str) -> VerifyResult:
    problem = f"{what}: the removal of the last entries cannot be ruled out"
    return VerifyResult(False, entries, problem)
