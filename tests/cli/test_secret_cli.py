"""`sqlifier secret set, list, rm, rotate` as a user runs them: the real executable, real files."""

from __future__ import annotations

import datetime as dt
import json
import os
import pty
import select
import subprocess
import time
from pathlib import Path

import pytest

from sqlifier.secrets.local import KEY_VARIABLE, LocalStore
from sqlifier.store.audit import AuditLog
from tests.conftest import BIN, run_sqlifier
from tests.secrets.test_local import files_holding

VALUE = "s3cr3t-Value-9d41e7"
STORED = "stored db_password version {} in {}; sqlifier secret rotate db_password delivers it to running instances\n"


@pytest.fixture(autouse=True)
def _user_and_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """run_sqlifier passes this process's environment on."""
    monkeypatch.setenv("SQLIFIER_USER", "ana")
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    monkeypatch.delenv("SQLIFIER_ENV", raising=False)


def store(root: Path, env: str = "dev") -> LocalStore:
    return LocalStore(root / ".sqlifier" / env, env)


def set_secret(root: Path, name: str, value: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_sqlifier("secret", "set", name, *args, cwd=root, stdin=value)


def test_set_reads_the_value_from_stdin_and_never_prints_it(stack_dir: Path) -> None:
    result = set_secret(stack_dir, "db_password", VALUE + "\n")
    assert (result.returncode, result.stdout, result.stderr) == (0, STORED.format(1, "dev"), "")
    assert store(stack_dir).get("db_password") == VALUE
    again = set_secret(stack_dir, "db_password", VALUE)
    assert again.stdout == STORED.format(2, "dev")


@pytest.mark.parametrize(
    ("stdin", "stored"),
    [("a\n\n", "a\n"), ("a\r\n", "a"), ("a", "a"), (" a b \n", " a b "), ("\n\n", "\n")],
    ids=["two-newlines", "crlf", "no-newline", "spaces-kept", "a-newline"],
)
def test_set_drops_one_trailing_newline_only(stack_dir: Path, stdin: str, stored: str) -> None:
    assert set_secret(stack_dir, "db_password", stdin).returncode == 0
    assert store(stack_dir).get("db_password") == stored


@pytest.mark.parametrize("stdin", ["", "\n", "\r\n"], ids=["nothing", "newline", "crlf"])
def test_set_with_an_empty_stdin_is_refused(stack_dir: Path, stdin: str) -> None:
    result = set_secret(stack_dir, "db_password", stdin)
    assert result.returncode == 1
    assert result.stderr == (
        "sqlifier: error: no value on stdin for secret db_password in dev; nothing was stored; "
        "pipe one in (printf '%s' \"$VALUE\" | sqlifier secret set db_password --env dev) or "
        "run the command in a terminal to be asked for it\n"
    )
    assert not (stack_dir / ".sqlifier" / "dev" / "secrets.db").exists()


def test_set_refuses_a_value_over_64_kib(stack_dir: Path) -> None:
    result = set_secret(stack_dir, "db_password", "x" * (64 * 1024 + 1))
    assert result.returncode == 1
    assert "is longer than 65536 bytes (64 KiB); nothing was stored" in result.stderr
    assert set_secret(stack_dir, "db_password", "x" * (64 * 1024) + "\n").returncode == 0


def test_set_takes_no_value_as_an_argument(stack_dir: Path) -> None:
    result = set_secret(stack_dir, "db_password", "", VALUE)
    assert result.returncode == 1
    assert "unexpected extra argument" in result.stderr
    assert store(stack_dir).list() == []


def test_set_refuses_a_bad_name_before_reading_the_value(stack_dir: Path) -> None:
    result = set_secret(stack_dir, "db/password", VALUE)
    assert result.returncode == 1
    assert result.stderr.startswith("sqlifier: error: invalid secret name 'db/password' in dev;")


def test_set_is_audited_without_the_value(stack_dir: Path) -> None:
    set_secret(stack_dir, "db_password", VALUE)
    (entry,) = AuditLog(stack_dir / ".sqlifier" / "dev" / "audit.db").entries()
    assert (entry.who, entry.what, entry.target, entry.result) == (
        "ana",
        "secret set",
        "test/dev/db_password",
        "version 1",
    )


def test_no_file_under_the_state_folder_holds_a_value(stack_dir: Path) -> None:
    values = [f"{VALUE}-{n}" for n in range(7)]
    for value in values:
        assert set_secret(stack_dir, "db_password", value).returncode == 0
    run_sqlifier("secret", "list", cwd=stack_dir)
    assert files_holding(stack_dir / ".sqlifier", *values) == []


def test_list_shows_versions_and_authors_but_no_value(stack_dir: Path) -> None:
    set_secret(stack_dir, "db_password", VALUE)
    set_secret(stack_dir, "db_password", VALUE + "2")
    set_secret(stack_dir, "api_token", VALUE + "3")
    store(stack_dir).mark_delivered("db_password", 1)
    before = int(time.time())
    result = run_sqlifier("secret", "list", cwd=stack_dir)
    assert result.returncode == 0 and VALUE not in result.stdout
    header, *rows = [line.split() for line in result.stdout.splitlines()]
    assert header == ["NAME", "VERSION", "VERSIONS", "UPDATED", "BY", "DELIVERED"]
    assert [r[:3] + r[-2:] for r in rows] == [
        ["api_token", "1", "1", "ana", "-"],
        ["db_password", "2", "2", "ana", "1"],
    ]
    updated = dt.datetime.strptime(" ".join(rows[0][3:5]), "%Y-%m-%d %H:%M:%SZ")
    assert before - 60 <= updated.replace(tzinfo=dt.UTC).timestamp() <= time.time()


def test_list_json_has_every_field_but_no_value(stack_dir: Path) -> None:
    set_secret(stack_dir, "db_password", VALUE)
    result = run_sqlifier("secret", "list", "--json", cwd=stack_dir)
    assert VALUE not in result.stdout
    (listed,) = json.loads(result.stdout)
    assert set(listed) == {
        "name",
        "version",
        "versions",
        "created",
        "updated",
        "updated_by",
        "delivered",
    }
    assert (listed["name"], listed["version"], listed["delivered"]) == ("db_password", 1, None)


def test_list_of_an_environment_without_secrets_says_how_to_set_one(stack_dir: Path) -> None:
    result = run_sqlifier("secret", "list", "-e", "staging", cwd=stack_dir)
    assert result.stdout == (
        "no secrets in staging; set one with sqlifier secret set NAME --env staging\n"
    )
    assert json.loads(run_sqlifier("secret", "list", "--json", cwd=stack_dir).stdout) == []


def test_environments_have_separate_stores(stack_dir: Path) -> None:
    result = set_secret(stack_dir, "db_password", VALUE, "--env", "staging")
    assert result.stdout == STORED.format(1, "staging")
    assert store(stack_dir, "staging").get("db_password") == VALUE
    assert store(stack_dir).list() == []


def test_rm_removes_and_is_audited(stack_dir: Path) -> None:
    set_secret(stack_dir, "db_password", VALUE)
    result = run_sqlifier("secret", "rm", "db_password", cwd=stack_dir)
    assert (result.returncode, result.stdout) == (
        0,
        "removed db_password from dev, with all its versions\n",
    )
    assert store(stack_dir).list() == []
    entries = AuditLog(stack_dir / ".sqlifier" / "dev" / "audit.db").entries()
    assert [(e.what, e.target, e.result) for e in entries] == [
        ("secret set", "test/dev/db_password", "version 1"),
        ("secret rm", "test/dev/db_password", "removed"),
    ]


@pytest.mark.parametrize("command", ["rm", "rotate"])
def test_an_unknown_name_is_refused_naming_the_known_ones(stack_dir: Path, command: str) -> None:
    set_secret(stack_dir, "db_password", VALUE)
    set_secret(stack_dir, "api_token", VALUE)
    result = run_sqlifier("secret", command, "db_pasword", cwd=stack_dir)
    assert (result.returncode, result.stderr) == (
        1,
        "sqlifier: error: no secret db_pasword in dev; dev holds: api_token, db_password\n",
    )
    assert len(store(stack_dir).list()) == 2


def test_a_bad_key_variable_is_a_clear_error(
    stack_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_VARIABLE, "hunter2")
    result = set_secret(stack_dir, "db_password", VALUE)
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"sqlifier: error: {KEY_VARIABLE} is not a key (for dev): it must be 32 bytes"
    )
    assert "hunter2" not in result.stderr


def _read_until(fd: int, wanted: bytes, seen: bytearray, timeout: float = 30) -> None:
    """Read the terminal's output into `seen` until it holds `wanted` (or the end)."""
    deadline = time.monotonic() + timeout
    while wanted not in seen and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the other side closed
                return
            if not chunk:
                return
            seen += chunk


def test_a_terminal_is_asked_twice_and_sees_no_echo(stack_dir: Path) -> None:
    """A real pseudo-terminal; in its own session the prompt reads it, not /dev/tty."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [str(BIN / "sqlifier"), "secret", "set", "db_password"],
        cwd=stack_dir,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    seen = bytearray()
    try:
        _read_until(master, b"value of db_password in dev: ", seen)
        os.write(master, VALUE.encode() + b"\n")
        _read_until(master, b"Repeat for confirmation: ", seen)
        os.write(master, VALUE.encode() + b"\n")
        _read_until(master, b"delivers it to running instances", seen)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    output = seen.decode()
    assert VALUE not in output
    assert "stored db_password version 1 in dev" in output
    assert store(stack_dir).get("db_password") == VALUE
