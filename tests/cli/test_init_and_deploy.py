"""`sqlifier init` scaffolds a stack that checks clean; `deploy-cli` is `sqlifier deploy`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from sqlifier.cli.main import cli, run
from tests.conftest import run_sqlifier
from tests.servers import free_port


def test_init_writes_a_stack_that_checks_clean(tmp_path: Path) -> None:
    result = run_sqlifier("init", "shop", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    stack = tmp_path / "shop"
    assert sorted(str(p.relative_to(stack)) for p in stack.rglob("*") if p.is_file()) == [
        ".gitignore",
        "rules/rollback.sql",
        "rules/scale.sql",
        "rules/slo.sql",
        "services/web/app.py",
        "sqlifier.toml",
    ]
    checked = run_sqlifier("check", cwd=stack)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(
        "no problems in 3 rule files, 5 rules, stack 'shop' (1 service)"
    )
    assert run_sqlifier("fmt", "--check", cwd=stack).returncode == 0


def test_init_adapts_the_seed_rules_to_the_starter_service(tmp_path: Path) -> None:
    run_sqlifier("init", cwd=tmp_path)
    scale = (tmp_path / "rules" / "scale.sql").read_text()
    assert (
        "ON high_cpu(>80%) FOR 3m\nIF service.name = 'web'\nDO SCALE service.name TO instances + 2\nLIMIT 20;"
        in scale
    )
    rollback = (tmp_path / "rules" / "rollback.sql").read_text()
    assert (
        "ON log_error(level='critical', service='web') > 10 FOR 1m\nDO ROLLBACK service 'web' TO previous_stable;"
        in rollback
    )


def test_init_keeps_the_agent_state_out_of_git(tmp_path: Path) -> None:
    result = run_sqlifier("init", cwd=tmp_path)
    assert f"created {Path('.gitignore')}\n" in result.stdout
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    state = tmp_path / ".sqlifier" / "dev"
    state.mkdir(parents=True)
    for name in ("api.token", "secret.key", "audit.db"):
        (state / name).write_text("x")
    listed = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert ".sqlifier" not in listed
    assert "?? sqlifier.toml" in listed and "?? .gitignore" in listed


def test_init_adds_the_state_to_an_existing_gitignore_and_keeps_its_lines(
    tmp_path: Path,
) -> None:
    (tmp_path / ".gitignore").write_text("node_modules/")
    result = run_sqlifier("init", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "added .sqlifier/ to .gitignore\n" in result.stdout
    assert (tmp_path / ".gitignore").read_text() == "node_modules/\n.sqlifier/\n"


def test_init_leaves_a_gitignore_that_already_ignores_the_state(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("/.sqlifier\n*.pyc\n")
    result = run_sqlifier("init", cwd=tmp_path)
    assert "kept .gitignore (it already ignores .sqlifier/)\n" in result.stdout
    assert (tmp_path / ".gitignore").read_text() == "/.sqlifier\n*.pyc\n"


def test_the_starter_service_logs_requests_but_not_health_checks(tmp_path: Path) -> None:
    run_sqlifier("init", cwd=tmp_path)
    port = free_port()
    app = subprocess.Popen(
        [sys.executable, "app.py"], cwd=tmp_path / "services" / "web",
        env={**os.environ, "PORT": str(port)}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        get_when_up(url + "/health/ready")
        for path in ("/health/ready", "/health/live", "/", "/health/live"):
            with urllib.request.urlopen(url + path, timeout=5) as answer:
                assert answer.status == 200
    finally:
        app.terminate()
        output, _ = app.communicate(timeout=10)
    assert [line.split('"')[1] for line in output.splitlines()] == ["GET / HTTP/1.1"]


def get_when_up(url: str) -> None:
    """GET `url` once the freshly started service listens (a real process: it takes a moment)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_init_never_overwrites(tmp_path: Path) -> None:
    (tmp_path / "sqlifier.toml").write_text("# mine\n")
    result = run_sqlifier("init", cwd=tmp_path)
    assert result.returncode == 1
    assert "already has sqlifier.toml" in result.stderr
    assert (tmp_path / "sqlifier.toml").read_text() == "# mine\n"
    assert not (tmp_path / "rules").exists()


def test_deploy_cli_takes_the_seed_command_verbatim_and_says_what_is_missing(
    tmp_path: Path,
) -> None:
    # The whole deploy runs in tests/cli/test_deploy.py; here, outside any stack, the seed's
    # command is parsed as given and refused with what would be needed.
    result = run_sqlifier(
        "--service", "auth-service", "--env", "production", "--approve", command="deploy-cli",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == (
        f"deploy-cli: error: no sqlifier.toml in {tmp_path} or its parents; create a stack "
        "with sqlifier init, or name one with -f FILE\n"
    )


def test_deploy_cli_help_is_the_deploy_help() -> None:
    result = run_sqlifier("--help", command="deploy-cli")
    assert result.returncode == 0
    assert "Usage: deploy-cli [OPTIONS] [status DEPLOY_ID]" in result.stdout
    assert "--approve" in result.stdout


def test_a_bug_exits_2_with_a_short_message_and_no_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import click

    @cli.command("explode")
    def explode() -> None:
        raise RuntimeError("boom")

    try:
        monkeypatch.delenv("SQLIFIER_DEBUG", raising=False)
        assert run(["explode"]) == 2
    finally:
        cli.commands.pop("explode")
    err = capsys.readouterr().err
    assert err.startswith("sqlifier: internal error: RuntimeError: boom\n")
    assert "Traceback" not in err
    assert isinstance(explode, click.Command)


def test_version() -> None:
    result = run_sqlifier("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("sqlifier, version ")
