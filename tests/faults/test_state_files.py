"""Damaged or missing state files, as a user meets them: a real agent started with
`up --detach` on an audit log emptied behind its back, on garbage in audit.db or
decisions.db, on a corrupt engine.json. Nothing is silently replaced: the agent refuses
(naming the file and what to do) or starts afresh saying so, with the old file kept."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlifier.agent.client import agent_alive
from sqlifier.store.audit import AuditLog
from tests.apps import APP
from tests.conftest import run_sqlifier

GARBAGE = b"this is not a database\n" * 300


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "sqlifier.toml").write_text(
        f'[stack]\nname = "t"\n\n[services.web]\nrun = "{sys.executable} app.py"\n'
        'probes.readiness = { http = "/", period = "200ms" }\n'
    )
    yield tmp_path
    run_sqlifier("down", cwd=tmp_path)


def state(root: Path) -> Path:
    return root / ".sqlifier" / "dev"


def up_and_down(root: Path) -> None:
    up = run_sqlifier("up", "--detach", cwd=root)
    assert up.returncode == 0, up.stderr
    assert run_sqlifier("scale", "web", "2", cwd=root).returncode == 0
    assert run_sqlifier("down", cwd=root).returncode == 0


def audit_whats(root: Path) -> list[str]:
    result = run_sqlifier("audit", "--json", cwd=root)
    assert result.returncode == 0, result.stderr
    return [entry["what"] for entry in json.loads(result.stdout)]


def refused(root: Path, *args: str) -> str:
    """The message of a command that must fail as a user error, never as a traceback."""
    result = run_sqlifier(*args, cwd=root)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    return result.stderr


def test_an_emptied_audit_log_stops_up_until_a_reset_that_is_recorded(stack: Path) -> None:
    up_and_down(stack)
    audit = state(stack) / "audit.db"
    assert audit_whats(stack) == ["up", "scale", "down"]
    audit.write_bytes(b"")  # truncated behind sqlifier's back
    audit.with_name("audit.db-wal").unlink(missing_ok=True)

    message = refused(stack, "up", "--detach")
    assert "audit.db: the audit log is empty, but audit.head names entry 3" in message
    assert "sqlifier audit reset" in message
    assert not agent_alive(state(stack))
    assert audit.stat().st_size == 0  # nothing was written in its place
    assert "every entry was removed" in refused(stack, "audit", "verify")

    reset = run_sqlifier("audit", "reset", cwd=stack)
    assert reset.returncode == 0, reset.stderr
    assert "the old one lost its entries" in reset.stdout
    kept = sorted(p.name for p in state(stack).glob("audit.broken-*"))
    assert [name.rsplit(".", 1)[-1] for name in kept] == ["db", "head"]
    assert json.loads((state(stack) / kept[1]).read_text())["id"] == 3  # the old head, kept
    assert audit_whats(stack) == ["audit reset"]
    entry = AuditLog(audit).entries()[0]
    assert kept[0] in entry.why and entry.details == {
        "kept": str(state(stack) / kept[0]),
        "head": str(state(stack) / kept[1]),
    }

    up = run_sqlifier("up", "--detach", cwd=stack)
    assert up.returncode == 0, up.stderr
    assert audit_whats(stack) == ["audit reset", "up"]
    assert run_sqlifier("audit", "verify", cwd=stack).returncode == 0
    assert "is running; run sqlifier down" in refused(stack, "audit", "reset")


def test_a_removed_audit_log_stops_up_too(stack: Path) -> None:
    up_and_down(stack)
    (state(stack) / "audit.db").unlink()
    message = refused(stack, "up", "--detach")
    assert "the audit log is missing, but audit.head names entry 3" in message


def test_an_intact_audit_log_is_not_reset(stack: Path) -> None:
    up_and_down(stack)
    assert "audit.db is intact (3 entries, chain intact)" in refused(stack, "audit", "reset")


def test_garbage_in_the_audit_log_is_a_clear_message_and_can_be_reset(stack: Path) -> None:
    audit = state(stack) / "audit.db"
    audit.parent.mkdir(parents=True)
    audit.write_bytes(GARBAGE)

    message = refused(stack, "up", "--detach")
    assert "audit.db: the audit log is damaged and cannot be read (file is not a database)" in (
        message
    )
    assert "sqlifier audit reset" in message
    assert "file is not a database" in refused(stack, "audit")
    assert audit.read_bytes() == GARBAGE

    reset = run_sqlifier("audit", "reset", cwd=stack)
    assert reset.returncode == 0, reset.stderr
    assert "the old one is damaged (file is not a database)" in reset.stdout
    (kept,) = state(stack).glob("audit.broken-*.db")
    assert kept.read_bytes() == GARBAGE
    assert audit_whats(stack) == ["audit reset"]


def test_garbage_in_the_decision_record_is_a_clear_message(stack: Path) -> None:
    decisions = state(stack) / "decisions.db"
    decisions.parent.mkdir(parents=True)
    decisions.write_bytes(GARBAGE)
    message = refused(stack, "up", "--detach")
    assert "decisions.db: the decision record is damaged and cannot be read" in message
    assert f"mv {decisions} {decisions}.old" in message
    assert decisions.read_bytes() == GARBAGE


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"saved_at": 1, "engine": {"paused": [', "is not JSON"),
        ('{"saved_at": 1}', "is not valid ('engine' is missing)"),
        ('{"saved_at": 1, "engine": {"budget": {"web": ["soon"]}}}', "is not valid"),
    ],
)
def test_a_corrupt_engine_state_is_said_kept_aside_and_audited(
    stack: Path, text: str, problem: str
) -> None:
    engine = state(stack) / "engine.json"
    engine.parent.mkdir(parents=True)
    engine.write_text(text)

    up = run_sqlifier("up", "--detach", cwd=stack)
    assert up.returncode == 0, up.stderr
    assert f"warning: engine.json {problem}" in up.stderr
    assert "the rules start without their saved state" in up.stderr
    (kept,) = state(stack).glob("engine.broken-*.json")
    assert kept.read_text() == text
    assert audit_whats(stack) == ["rules state reset", "up"]
    assert f"engine.json {problem}" in AuditLog(state(stack) / "audit.db").entries()[-2].why


def test_a_reset_without_a_log_is_refused_and_creates_none(stack: Path) -> None:
    assert "there is no audit log at .sqlifier/dev/audit.db yet" in refused(stack, "audit", "reset")
    assert not (state(stack) / "audit.db").exists()
