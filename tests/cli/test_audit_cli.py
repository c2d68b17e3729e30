"""`sqlifier audit` and `sqlifier audit verify` as a user runs them: the real executable
reading real audit files, without an agent."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from sqlifier.secrets.local import KEY_VARIABLE
from sqlifier.store.audit import AuditLog
from tests.conftest import run_sqlifier

HOUR = 3600.0


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """run_sqlifier passes this process's environment on."""
    monkeypatch.setenv("SQLIFIER_USER", "ana")
    monkeypatch.delenv("SQLIFIER_ENV", raising=False)
    monkeypatch.delenv(KEY_VARIABLE, raising=False)


def audit_log(root: Path, times: Iterator[float], env: str = "dev") -> AuditLog:
    return AuditLog(root / ".sqlifier" / env / "audit.db", clock=lambda: next(times))


@pytest.fixture
def now() -> float:
    return float(int(time.time()))


@pytest.fixture
def written(stack_dir: Path, now: float) -> AuditLog:
    """Three entries: two hours ago, 20 minutes ago, a minute ago."""
    log = audit_log(stack_dir, iter([now - 2 * HOUR, now - 1200, now - 60]))
    log.record("ana", "up", "test/dev", "ok")
    log.record("ana", "scale", "test/dev/web to 3", "ok", why="the sale starts at noon")
    log.record("rule slow", "restart", "test/dev/api", "failed: no free port")
    return log


def utc(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def tamper(root: Path, sql: str) -> None:
    with closing(sqlite3.connect(root / ".sqlifier" / "dev" / "audit.db")) as db, db:
        db.execute("DROP TRIGGER audit_no_update")
        db.execute("DROP TRIGGER audit_no_delete")
        db.execute(sql)


# --- listing -----------------------------------------------------------------------------


def test_no_audit_log_yet(stack_dir: Path) -> None:
    result = run_sqlifier("audit", cwd=stack_dir)
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "no audit log yet for test (dev)\n",
        "",
    )
    assert not (stack_dir / ".sqlifier").exists()


def test_no_audit_log_yet_is_an_empty_json_list(stack_dir: Path) -> None:
    result = run_sqlifier("audit", "--json", cwd=stack_dir)
    assert (result.returncode, json.loads(result.stdout)) == (0, [])


@pytest.mark.usefixtures("written")
def test_lists_every_entry_oldest_first(stack_dir: Path, now: float) -> None:
    result = run_sqlifier("audit", cwd=stack_dir)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        "TIME (UTC)           WHO        WHAT     TARGET             RESULT                WHY",
        f"{utc(now - 2 * HOUR)}  ana        up       test/dev           ok                    -",
        f"{utc(now - 1200)}  ana        scale    test/dev/web to 3  ok                    the sale starts at noon",
        f"{utc(now - 60)}  rule slow  restart  test/dev/api       failed: no free port  -",
    ]


@pytest.mark.usefixtures("written")
def test_since_keeps_the_recent_entries(stack_dir: Path) -> None:
    result = run_sqlifier("audit", "--since", "30m", cwd=stack_dir)
    _header, scale, restart = result.stdout.splitlines()
    assert ("test/dev/web to 3" in scale, "test/dev/api" in restart) == (True, True)


@pytest.mark.usefixtures("written")
def test_service_keeps_the_entries_about_it(stack_dir: Path) -> None:
    result = run_sqlifier("audit", "--service", "web", cwd=stack_dir)
    _header, line = result.stdout.splitlines()
    assert "test/dev/web to 3" in line


@pytest.mark.usefixtures("written")
def test_nothing_selected_says_what_was_asked(stack_dir: Path) -> None:
    result = run_sqlifier("audit", "--service", "api", "--since", "30s", cwd=stack_dir)
    assert (result.returncode, result.stdout) == (
        0,
        "no audit entries about api in the last 30s\n",
    )


def test_json_holds_every_field(stack_dir: Path, now: float) -> None:
    log = audit_log(stack_dir, iter([now]))
    log.record("ana", "rollback", "test/dev/web", "ok", why="p99 over 300ms", details={"p99": 0.41})
    result = run_sqlifier("audit", "--json", cwd=stack_dir)
    (entry,) = json.loads(result.stdout)
    assert entry == {
        "time": dt.datetime.fromtimestamp(now, dt.UTC).isoformat().replace("+00:00", "Z"),
        "id": 1,
        "at": now,
        "who": "ana",
        "what": "rollback",
        "target": "test/dev/web",
        "result": "ok",
        "why": "p99 over 300ms",
        "service": "web",
        "details": {"p99": 0.41},
        "prev_hash": "0" * 64,
        "hash": log.entries()[0].hash,
    }


def test_env_reads_that_environments_log(stack_dir: Path, now: float) -> None:
    audit_log(stack_dir, iter([now]), env="prod").record("ana", "up", "test/prod", "ok")
    result = run_sqlifier("audit", "--env", "prod", "--json", cwd=stack_dir)
    assert [e["target"] for e in json.loads(result.stdout)] == ["test/prod"]
    assert run_sqlifier("audit", cwd=stack_dir).stdout == "no audit log yet for test (dev)\n"


@pytest.mark.parametrize("since", ["yesterday", "0h", "10"])
def test_a_bad_since_is_refused(stack_dir: Path, since: str) -> None:
    result = run_sqlifier("audit", "--since", since, cwd=stack_dir)
    assert (result.returncode, result.stderr) == (
        1,
        f"sqlifier: error: --since {since}: expected a duration like 30m, 24h or 7d\n",
    )


def test_what_a_command_does_is_listed(stack_dir: Path) -> None:
    assert (
        run_sqlifier("secret", "set", "db_password", cwd=stack_dir, stdin="x" * 20).returncode == 0
    )
    result = run_sqlifier("audit", "--json", cwd=stack_dir)
    (entry,) = json.loads(result.stdout)
    assert (entry["who"], entry["what"], entry["target"]) == (
        "ana",
        "secret set",
        "test/dev/db_password",
    )
    assert run_sqlifier("audit", "verify", cwd=stack_dir).stdout == "1 entry, chain intact\n"


# --- verify ------------------------------------------------------------------------------


def test_verify_without_a_log_finds_nothing_to_check(stack_dir: Path) -> None:
    result = run_sqlifier("audit", "verify", cwd=stack_dir)
    assert (result.returncode, result.stdout) == (0, "0 entries, chain intact (no audit log yet)\n")


@pytest.mark.usefixtures("written")
def test_verify_an_intact_log(stack_dir: Path) -> None:
    result = run_sqlifier("audit", "verify", cwd=stack_dir)
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "3 entries, chain intact\n",
        "",
    )


@pytest.mark.usefixtures("written")
def test_verify_names_an_edited_entry(stack_dir: Path) -> None:
    tamper(stack_dir, "UPDATE audit SET result = 'ok' WHERE id = 3")
    result = run_sqlifier("audit", "verify", cwd=stack_dir)
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        ".sqlifier/dev/audit.db: 3 entries, chain broken: "
        "entry 3 was changed: its hash does not match\n",
    )


@pytest.mark.usefixtures("written")
def test_verify_names_a_removed_entry(stack_dir: Path) -> None:
    tamper(stack_dir, "DELETE FROM audit WHERE id = 2")
    result = run_sqlifier("audit", "verify", "--json", cwd=stack_dir)
    assert (result.returncode, json.loads(result.stdout)) == (
        1,
        {
            "ok": False,
            "entries": 2,
            "problem": "entry 3 does not follow entry 1: entry 2 was removed",
            "at_id": 2,
        },
    )


@pytest.mark.usefixtures("written")
def test_verify_names_the_removed_last_entry(stack_dir: Path) -> None:
    tamper(stack_dir, "DELETE FROM audit WHERE id = 3")
    result = run_sqlifier("audit", "verify", cwd=stack_dir)
    assert (result.returncode, result.stderr) == (
        1,
        ".sqlifier/dev/audit.db: 2 entries, chain broken: "
        "the last entry was removed (the head names entry 3)\n",
    )


def test_verify_takes_the_options_given_before_it(stack_dir: Path, now: float) -> None:
    audit_log(stack_dir, iter([now]), env="prod").record("ana", "up", "test/prod", "ok")
    result = run_sqlifier("audit", "--env", "prod", "verify", cwd=stack_dir)
    assert (result.returncode, result.stdout) == (0, "1 entry, chain intact\n")


def test_verify_refuses_list_filters(stack_dir: Path) -> None:
    result = run_sqlifier("audit", "--service", "web", "verify", cwd=stack_dir)
    assert (result.returncode, result.stderr) == (
        1,
        "sqlifier: error: --since and --service select entries to list; verify checks all\n",
    )


def test_a_file_that_is_no_database_is_refused(stack_dir: Path) -> None:
    state = stack_dir / ".sqlifier" / "dev"
    state.mkdir(parents=True)
    (state / "audit.db").write_text("not a database, but long enough to be read as one\n" * 20)
    result = run_sqlifier("audit", cwd=stack_dir)
    assert (result.returncode, result.stderr) == (
        1,
        "sqlifier: error: cannot open the audit log .sqlifier/dev/audit.db: "
        "file is not a database; start a new log with `sqlifier audit reset`\n",
    )
