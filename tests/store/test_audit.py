"""The audit log: real SQLite files, appended to by several processes, edited and cut
behind its back with sqlite3, and upgraded from the table of before the chain."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from sqlifier.store.audit import GENESIS, AuditLog, VerifyResult

T0 = 1_767_225_600.0

# The table as sqlifier created it before the chain, copied from that version.
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    who TEXT NOT NULL,
    what TEXT NOT NULL,
    target TEXT NOT NULL,
    result TEXT NOT NULL
)
"""


def ticking(start: float = T0, step: float = 1.0) -> Callable[[], float]:
    counter = itertools.count()
    return lambda: start + step * next(counter)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "audit.db"


@pytest.fixture
def log(path: Path) -> AuditLog:
    return AuditLog(path, clock=ticking())


def fill(log: AuditLog, count: int) -> None:
    for n in range(1, count + 1):
        log.record("ana", "scale", f"shop/prod/web to {n}", "ok")


def tamper(path: Path, sql: str, *args: object) -> None:
    """What someone with sqlite3 and write access does: drop the guards, then change."""
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("DROP TRIGGER IF EXISTS audit_no_update")
        db.execute("DROP TRIGGER IF EXISTS audit_no_delete")
        db.execute(sql, args)


def old_file(path: Path, rows: list[tuple[float, str, str, str, str]]) -> None:
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(OLD_SCHEMA)
        db.executemany(
            "INSERT INTO audit (at, who, what, target, result) VALUES (?, ?, ?, ?, ?)", rows
        )


def sha256_of(fields: dict[str, object]) -> str:
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def forged(log: AuditLog, entry_id: int, **changes: object) -> str:
    """The hash a forger computes for an entry they changed."""
    (entry,) = [e for e in log.entries() if e.id == entry_id]
    fields = dataclasses.asdict(entry)
    fields.pop("hash")
    fields["details"] = None if entry.details is None else json.dumps(entry.details)
    return sha256_of({**fields, **changes})


# --- the chain ---------------------------------------------------------------------------


def test_each_entry_carries_the_hash_of_the_one_before(log: AuditLog) -> None:
    fill(log, 3)
    first, second, third = log.entries()
    assert first.prev_hash == GENESIS
    assert second.prev_hash == first.hash
    assert third.prev_hash == second.hash
    assert [e.id for e in (first, second, third)] == [1, 2, 3]


def test_the_hash_is_sha256_of_the_fields_as_sorted_compact_json(log: AuditLog) -> None:
    entry = log.record("ana", "up", "shop/prod", "ok", why="release 41", details={"b": 1, "a": 2})
    assert entry.hash == sha256_of(
        {
            "id": 1,
            "at": T0,
            "who": "ana",
            "what": "up",
            "target": "shop/prod",
            "result": "ok",
            "why": "release 41",
            "service": None,
            "details": '{"a":2,"b":1}',
            "prev_hash": GENESIS,
        }
    )


def test_record_returns_the_entry_as_stored(log: AuditLog) -> None:
    entry = log.record("ana", "up", "shop/prod", "ok")
    assert log.entries() == [entry]


def test_callers_of_before_the_chain_keep_working(log: AuditLog) -> None:
    log.record("agent", "secret read", "shop/prod/api/api.1 DB <- local://db", "ok")
    (entry,) = log.entries()
    assert (entry.who, entry.what, entry.target, entry.result, entry.why, entry.details) == (
        "agent",
        "secret read",
        "shop/prod/api/api.1 DB <- local://db",
        "ok",
        "",
        None,
    )


@pytest.mark.parametrize(
    ("target", "service"),
    [
        ("shop/prod", None),  # up, down
        ("shop", None),  # rules reload
        ("shop/prod all rules", None),  # rules pause
        ("shop/prod/web", "web"),  # restart
        ("shop/prod/web to 3", "web"),  # scale
        ("shop/prod/web canary 10%", "web"),  # traffic
        ("shop/prod/web (refresh: local://db changed)", "web"),  # secret rotate
        ("shop/prod/api/api.1 DB <- local://db", "api"),  # secret read
        ("shop/prod/payment-gateway <- vault://kv/pay", "payment-gateway"),  # secret refresh
    ],
)
def test_the_service_comes_from_a_stack_env_service_target(
    log: AuditLog, target: str, service: str | None
) -> None:
    assert log.record("ana", "x", target, "ok").service == service


def test_a_given_service_wins_and_an_empty_one_means_none(log: AuditLog) -> None:
    assert log.record("ana", "deploy", "shop/prod", "ok", service="web").service == "web"
    assert (
        log.record("ana", "secret set", "shop/prod/db_password", "v1", service="").service is None
    )


def test_details_are_kept_as_json_with_nan_and_odd_values_as_text(log: AuditLog) -> None:
    details = {"p99": 0.25, "error_rate": float("nan"), "samples": (1, 2), 3: Path("/x")}
    log.record("rule slow", "rollback", "shop/prod/web", "ok", details=details)
    (entry,) = log.entries()
    assert entry.details == {"p99": 0.25, "error_rate": "nan", "samples": [1, 2], "3": "/x"}
    assert log.verify().ok


def test_entries_select_by_time_service_and_count(log: AuditLog) -> None:
    for service in ("web", "api", "web", "api", "web"):
        log.record("ana", "restart", f"shop/prod/{service}", "ok")  # at T0, T0 + 1, ...
    assert [e.id for e in log.entries(since=T0 + 2)] == [3, 4, 5]
    assert [e.id for e in log.entries(service="web")] == [1, 3, 5]
    assert [e.id for e in log.entries(limit=2)] == [4, 5]
    assert [e.id for e in log.entries(since=T0 + 1, service="web", limit=1)] == [5]


@pytest.mark.parametrize(
    "sql", ["UPDATE audit SET result = 'failed' WHERE id = 1", "DELETE FROM audit WHERE id = 1"]
)
def test_the_table_refuses_updates_and_deletes(log: AuditLog, path: Path, sql: str) -> None:
    fill(log, 1)
    with closing(sqlite3.connect(path)) as db, pytest.raises(sqlite3.IntegrityError) as caught:
        db.execute(sql)
    assert str(caught.value) == "the audit log is append-only"


def test_the_head_file_names_the_last_entry_and_is_private(log: AuditLog, path: Path) -> None:
    fill(log, 2)
    head = path.with_name("audit.head")
    assert json.loads(head.read_text()) == {"id": 2, "hash": log.entries()[-1].hash}
    assert stat.S_IMODE(head.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir() if "head" in p.name) == ["audit.head"]


APPENDER = """
import sys
from pathlib import Path
from sqlifier.store.audit import AuditLog

log = AuditLog(Path(sys.argv[1]))
sys.stdin.readline()  # start together
for n in range(int(sys.argv[3])):
    log.record(sys.argv[2], "step", f"shop/prod/web {n}", "ok")
"""


def test_appends_from_several_processes_keep_one_chain(path: Path) -> None:
    AuditLog(path)
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, str(path), f"writer{w}", "40"],
            stdin=subprocess.PIPE,
            text=True,
        )
        for w in range(6)
    ]
    for writer in writers:
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.close()
    assert [writer.wait(timeout=60) for writer in writers] == [0] * 6

    log = AuditLog(path)
    entries = log.entries()
    assert log.verify() == VerifyResult(True, 240)
    assert [e.id for e in entries] == list(range(1, 241))
    for w in range(6):
        mine = [e.target for e in entries if e.who == f"writer{w}"]
        assert mine == [f"shop/prod/web {n}" for n in range(40)]


# --- verify ------------------------------------------------------------------------------


def test_an_empty_log_is_intact(log: AuditLog) -> None:
    assert log.verify() == VerifyResult(True, 0, None, None)


def test_an_untouched_log_is_intact(log: AuditLog) -> None:
    fill(log, 40)
    assert log.verify() == VerifyResult(True, 40, None, None)


def test_verify_finds_an_edited_entry(log: AuditLog, path: Path) -> None:
    fill(log, 40)
    tamper(path, "UPDATE audit SET who = 'bob' WHERE id = 12")
    assert log.verify() == VerifyResult(
        False, 40, "entry 12 was changed: its hash does not match", 12
    )


def test_verify_finds_an_edited_entry_whose_hash_was_recomputed(log: AuditLog, path: Path) -> None:
    fill(log, 40)
    tamper(path, "UPDATE audit SET who = 'bob', hash = ? WHERE id = 12", forged(log, 12, who="bob"))
    assert log.verify() == VerifyResult(
        False,
        40,
        "entry 13 does not follow entry 12: one of them was changed and its hash recomputed",
        13,
    )


def test_verify_finds_an_entry_removed_in_the_middle(log: AuditLog, path: Path) -> None:
    fill(log, 40)
    tamper(path, "DELETE FROM audit WHERE id = 12")
    assert log.verify() == VerifyResult(
        False, 39, "entry 13 does not follow entry 11: entry 12 was removed", 12
    )


def test_verify_finds_entries_removed_at_the_start(log: AuditLog, path: Path) -> None:
    fill(log, 5)
    tamper(path, "DELETE FROM audit WHERE id <= 2")
    assert log.verify() == VerifyResult(
        False, 3, "entry 3 does not follow the start of the log: entries 1-2 were removed", 1
    )


def test_verify_finds_the_last_entries_removed_by_the_head(log: AuditLog, path: Path) -> None:
    fill(log, 40)
    tamper(path, "DELETE FROM audit WHERE id >= 39")
    assert log.verify() == VerifyResult(
        False, 38, "the last 2 entries were removed (the head names entry 40)", 39
    )


def test_verify_finds_every_entry_removed(log: AuditLog, path: Path) -> None:
    fill(log, 1)
    tamper(path, "DELETE FROM audit")
    assert log.verify() == VerifyResult(
        False, 0, "the last entry was removed (the head names entry 1)", 1
    )


def test_a_removed_last_entry_still_shows_after_the_next_append(log: AuditLog, path: Path) -> None:
    fill(log, 40)
    tamper(path, "DELETE FROM audit WHERE id = 40")
    tamper(path, "DELETE FROM sqlite_sequence")  # even with AUTOINCREMENT's memory gone
    log.record("ana", "up", "shop/prod", "ok")
    assert log.verify() == VerifyResult(
        False, 40, "entry 41 does not follow entry 39: entry 40 was removed", 40
    )


def test_verify_finds_the_last_entry_changed_with_its_hash_recomputed_by_the_head(
    log: AuditLog, path: Path
) -> None:
    fill(log, 3)
    tamper(path, "UPDATE audit SET who = 'bob', hash = ? WHERE id = 3", forged(log, 3, who="bob"))
    assert log.verify() == VerifyResult(
        False, 3, "entry 3 was changed: its hash is not the one audit.head names", 3
    )


def test_a_missing_head_is_a_problem(log: AuditLog, path: Path) -> None:
    fill(log, 3)
    path.with_name("audit.head").unlink()
    assert log.verify() == VerifyResult(
        False,
        3,
        "audit.head is missing: the removal of the last entries cannot be ruled out",
        None,
    )


def test_an_unreadable_head_is_a_problem(log: AuditLog, path: Path) -> None:
    fill(log, 3)
    path.with_name("audit.head").write_text("{}")
    assert log.verify() == VerifyResult(
        False,
        3,
        "audit.head is unreadable (no entry id in it): "
        "the removal of the last entries cannot be ruled out",
        None,
    )


def test_a_head_one_entry_behind_is_no_problem(log: AuditLog, path: Path) -> None:
    """Two appenders may write the head out of order."""
    fill(log, 3)
    second = log.entries()[1]
    path.with_name("audit.head").write_text(json.dumps({"id": 2, "hash": second.hash}))
    assert log.verify() == VerifyResult(True, 3)


# --- the table of before the chain --------------------------------------------------------

OLD_ROWS = [
    (T0, "ana", "up", "shop/dev", "ok"),
    (T0 + 5, "ana", "scale", "shop/dev/web to 2", "ok"),
    (T0 + 9, "rule slow", "restart", "shop/dev/api ", "failed: no port"),
]


def test_an_old_file_is_upgraded_and_chained_in_id_order(path: Path) -> None:
    old_file(path, OLD_ROWS)
    log = AuditLog(path)
    entries = log.entries()
    assert [(e.at, e.who, e.what, e.target, e.result) for e in entries] == OLD_ROWS
    assert [(e.why, e.service, e.details) for e in entries] == [
        ("", None, None),
        ("", "web", None),
        ("", "api", None),
    ]
    assert [e.prev_hash for e in entries] == [GENESIS, entries[0].hash, entries[1].hash]
    assert log.verify() == VerifyResult(True, 3)
    log.record("ana", "down", "shop/dev", "ok")
    assert log.verify() == VerifyResult(True, 4)


def test_upgrading_twice_changes_nothing(path: Path) -> None:
    old_file(path, OLD_ROWS)
    first = AuditLog(path).entries()
    assert AuditLog(path).entries() == first


def test_entries_an_older_sqlifier_appends_are_chained_by_the_next_append(path: Path) -> None:
    log = AuditLog(path, clock=ticking())
    fill(log, 2)
    with closing(sqlite3.connect(path)) as db, db:  # the old code's insert, unchanged
        db.execute(
            "INSERT INTO audit (at, who, what, target, result) VALUES (?, ?, ?, ?, ?)",
            (T0 + 10, "ana", "restart", "shop/prod/web", "ok"),
        )
    log.record("ana", "down", "shop/prod", "ok")
    entries = log.entries()
    assert [(e.id, e.service) for e in entries] == [(1, "web"), (2, "web"), (3, "web"), (4, None)]
    assert log.verify() == VerifyResult(True, 4)


def test_a_chained_entry_with_its_hash_blanked_is_not_chained_again(
    log: AuditLog, path: Path
) -> None:
    fill(log, 3)
    tamper(path, "UPDATE audit SET who = 'bob', hash = '' WHERE id = 3")
    reopened = AuditLog(path)
    assert reopened.verify() == VerifyResult(
        False, 3, "entry 3 was changed: its hash does not match", 3
    )
