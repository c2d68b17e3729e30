"""Damaged state files in the store: an audit log that lost its entries, garbage where a
database should be, a corrupt engine.json — each said, none silently replaced."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from sqlifier.engine.machine import Engine, Settings
from sqlifier.store.audit import AuditLog, AuditLogLost, lost_entries
from sqlifier.store.decisions import DecisionLog
from sqlifier.store.enginefile import restore_engine
from sqlifier.store.files import StateFileError, set_aside

T0 = 1_767_225_600.0


def filled(path: Path, count: int = 3) -> AuditLog:
    log = AuditLog(path)
    for n in range(count):
        log.record("ana", "scale", f"shop/prod/web to {n}", "ok")
    return log


def test_an_emptied_or_removed_log_whose_head_names_entries_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    filled(path)
    for name in ("audit.db-wal", "audit.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    path.write_bytes(b"")
    with pytest.raises(
        AuditLogLost, match=r"audit.db: the audit log is empty, but audit.head names entry 3"
    ):
        AuditLog(path)
    assert path.read_bytes() == b""  # refused before anything was written
    path.unlink()
    assert lost_entries(path) == "the audit log is missing, but audit.head names entry 3"
    with pytest.raises(AuditLogLost, match="sqlifier audit reset"):
        AuditLog(path)
    assert not path.exists()


def test_a_log_whose_table_is_empty_is_lost_too_and_a_new_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    assert lost_entries(path) is None  # a first start
    filled(path)
    (tmp_path / "audit.db").unlink()
    for name in ("audit.db-wal", "audit.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE audit (id INTEGER PRIMARY KEY)")
    assert lost_entries(path) == "the audit log is without entries, but audit.head names entry 3"


def test_garbage_is_named_not_a_traceback(tmp_path: Path) -> None:
    for path, opener in (
        (tmp_path / "audit.db", AuditLog),
        (tmp_path / "decisions.db", DecisionLog),
    ):
        path.write_bytes(b"garbage" * 1000)
        with pytest.raises(
            StateFileError, match=r"is damaged and cannot be read \(file is not a database\)"
        ) as caught:
            opener(path)
        assert str(path) in str(caught.value)
        assert caught.value.reason == "is damaged (file is not a database)"


def test_set_aside_keeps_the_file_and_its_companions(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    path.write_text("a")
    (tmp_path / "audit.db-wal").write_text("w")
    first = set_aside(path, clock=lambda: T0)
    assert first.name == "audit.broken-20260101T000000Z.db"
    assert (first.read_text(), first.with_name(first.name + "-wal").read_text()) == ("a", "w")
    path.write_text("b")
    assert set_aside(path, clock=lambda: T0).name == "audit.broken-20260101T000000Z-2.db"
    assert not path.exists()


def engine() -> Engine:
    return Engine([], Settings(300.0, 10, 600.0))


def test_a_valid_engine_state_is_loaded_and_nothing_is_said(tmp_path: Path) -> None:
    path = tmp_path / "engine.json"
    path.write_text(json.dumps({"saved_at": T0, "engine": {"paused": ["web"]}}))
    said: list[str] = []
    e = engine()
    assert (
        restore_engine(e, path, T0, AuditLog(tmp_path / "audit.db"), "t/dev", said.append) is None
    )
    assert (e.paused, said) == ({"web"}, [])
    assert (
        restore_engine(
            e, tmp_path / "none.json", T0, AuditLog(tmp_path / "audit.db"), "t/dev", said.append
        )
        is None
    )


def test_a_corrupt_engine_state_starts_afresh_said_kept_and_audited(tmp_path: Path) -> None:
    path = tmp_path / "engine.json"
    # Half of it reads; the rest does not: nothing of it is kept.
    text = json.dumps({"saved_at": T0, "engine": {"paused_all": True, "budget": {"web": ["x"]}}})
    path.write_text(text)
    said: list[str] = []
    audit = AuditLog(tmp_path / "audit.db")
    e = engine()
    message = restore_engine(e, path, T0, audit, "t/dev", said.append)
    assert message is not None and message.startswith("engine.json is not valid (")
    assert said == [f"rules {message}"]
    assert e.paused_all is False and e.budget == {}
    (kept,) = tmp_path.glob("engine.broken-*.json")
    assert kept.read_text() == text and not path.exists()
    (entry,) = audit.entries()
    assert (entry.who, entry.what, entry.target, entry.why) == (
        "agent",
        "rules state reset",
        "t/dev",
        message,
    )
    assert entry.details == {"kept": str(kept)}


def test_the_audit_log_keeps_a_reserve_beside_it(tmp_path: Path) -> None:
    from sqlifier.store.audit import RESERVE_FILE, RESERVE_SIZE

    log = AuditLog(tmp_path / "audit.db")
    reserve = tmp_path / RESERVE_FILE
    assert reserve.stat().st_size == RESERVE_SIZE
    assert reserve.stat().st_blocks * 512 >= RESERVE_SIZE  # allocated, not a sparse promise
    assert log.reserve_released is False
    reserve.unlink()
    AuditLog(tmp_path / "audit.db", lost_ok=True)  # reading and verifying make none
    assert not reserve.exists()
