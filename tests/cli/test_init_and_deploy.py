"""`sqlifier init` scaffolds a stack that checks clean; `deploy-cli` is `sqlifier deploy`."""

from __future__ import annotations

from pathlib import Path

import pytest

from sqlifier.cli.main import cli, run
from tests.conftest import run_sqlifier


def test_init_writes_a_stack_that_checks_clean(tmp_path: Path) -> None:
    result = run_sqlifier("init", "shop", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    stack = tmp_path / "shop"
    assert sorted(str(p.relative_to(stack)) for p in stack.rglob("*") if p.is_file()) == [
        "rules/rollback.sql",
        "rules/scale.sql",
        "services/web/app.py",
        "sqlifier.toml",
    ]
    checked = run_sqlifier("check", cwd=stack)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(
        "no problems in 2 rule files, 2 rules, stack 'shop' (1 service)"
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
    assert "Usage: deploy-cli deploy [OPTIONS]" in result.stdout
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
