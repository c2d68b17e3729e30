"""The same option means the same thing on every command: `-f` is `--file`, `-s` is
`--service`, `-e` is `--env`; `--env` works before or after the subcommand and always
honours SQLIFIER_ENV; every command that prints data has `--json`; `deploy-cli` is a
program of its own whose usage line works.

The first tests walk every command (the COMMANDS map, into each group), so a command
added later is held to the same rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from sqlifier.cli.main import COMMANDS, SUMMARIES, cli
from tests.conftest import BIN, run_sqlifier

# Commands that print a message (or nothing) and no data: no --json. Every other command
# must take --json; a new command has to be put on one side or the other.
MESSAGES_ONLY = {
    "agent",  # runs the agent of a Kubernetes environment: it serves, it prints no data
    "approve",
    "audit reset",
    "down",
    "fmt",
    "init",
    "lock release",
    "rollout",
    "rules pause",
    "rules resume",
    "secret rm",
    "secret rotate",
    "secret set",
    "up",
}


def _walk(command: click.Command, path: str) -> list[tuple[str, click.Command]]:
    found = [(path, command)]
    if isinstance(command, click.Group):
        context = click.Context(command, info_name=path)
        for name in command.list_commands(context):
            sub = command.get_command(context, name)
            assert sub is not None, f"{path} {name}"
            found += _walk(sub, f"{path} {name}")
    return found


def _commands() -> list[tuple[str, click.Command]]:
    context = click.Context(cli, info_name="sqlifier")
    found = []
    for name in COMMANDS:
        command = cli.get_command(context, name)
        assert command is not None, name
        found += _walk(command, name)
    return found


ALL = _commands()


def _options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option)]


def test_the_walk_reaches_every_command_and_subcommand() -> None:
    names = {name for name, _ in ALL}
    assert {"ps", "logs", "rules test", "secret set", "lock release", "audit verify"} <= names
    assert "deploy status" in names
    assert set(SUMMARIES) == set(COMMANDS)


@pytest.mark.parametrize(
    ("short", "long"), [("-f", "--file"), ("-s", "--service"), ("-e", "--env")]
)
def test_a_short_option_means_one_long_option_on_every_command(short: str, long: str) -> None:
    wrong = []
    for name, command in ALL:
        for option in _options(command):
            if (short in option.opts) != (long in option.opts):
                wrong.append(f"{name}: {'/'.join(option.opts)}")
    assert wrong == []


def test_every_command_that_takes_an_environment_takes_the_stack_file() -> None:
    missing = [
        name
        for name, command in ALL
        if any("--env" in o.opts for o in _options(command))
        and not any("--file" in o.opts for o in _options(command))
    ]
    assert missing == []


def test_every_command_that_prints_data_takes_json() -> None:
    runs = [
        (name, command)
        for name, command in ALL
        if not isinstance(command, click.Group) or command.invoke_without_command
    ]
    without = [
        name
        for name, command in runs
        if name not in MESSAGES_ONLY and not any("--json" in o.opts for o in _options(command))
    ]
    assert without == []
    assert {name for name, _ in runs} >= MESSAGES_ONLY  # no stale name in the list


def test_logs_follows_with_capital_f_and_reads_the_stack_file_with_f() -> None:
    logs = dict(ALL)["logs"]
    follow = next(o for o in _options(logs) if o.name == "follow")
    assert follow.opts == ["--follow", "-F"]


STACK = """\
[stack]
name = "opts"
rules = []

[services.web]
run = "python3 app.py"

[environments.staging.services.web]
instances = 5
"""


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    (tmp_path / "sqlifier.toml").write_text(STACK)
    return tmp_path


def _sqlifier(*args: str, cwd: Path, env: str | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("SQLIFIER_ENV", "SQLIFIER_DEBUG")}
    if env is not None:
        environ["SQLIFIER_ENV"] = env
    return subprocess.run(
        [str(BIN / "sqlifier"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
        check=False,
    )


def _config_env(result: subprocess.CompletedProcess[str]) -> tuple[str, int]:
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    return data["env"], data["instances"]


def test_env_works_before_and_after_the_subcommand(stack: Path) -> None:
    assert _config_env(_sqlifier("--env", "staging", "config", "web", "--json", cwd=stack)) == (
        "staging",
        5,
    )
    assert _config_env(_sqlifier("-e", "staging", "config", "web", "--json", cwd=stack)) == (
        "staging",
        5,
    )
    assert _config_env(_sqlifier("config", "web", "--env", "staging", "--json", cwd=stack)) == (
        "staging",
        5,
    )
    assert _config_env(_sqlifier("config", "web", "--json", cwd=stack)) == ("dev", 1)


def test_env_after_the_subcommand_wins_over_before_and_both_over_sqlifier_env(
    stack: Path,
) -> None:
    both = _sqlifier("--env", "staging", "config", "web", "--env", "dev", "--json", cwd=stack)
    assert _config_env(both) == ("dev", 1)
    assert _config_env(_sqlifier("config", "web", "--json", cwd=stack, env="staging")) == (
        "staging",
        5,
    )
    given = _sqlifier("--env", "dev", "config", "web", "--json", cwd=stack, env="staging")
    assert _config_env(given) == ("dev", 1)


def test_a_bad_env_before_the_subcommand_is_named_like_one_after(stack: Path) -> None:
    result = _sqlifier("--env", "Prod!", "ps", cwd=stack)
    assert result.returncode == 1
    assert "invalid environment 'Prod!' (from --env or SQLIFIER_ENV)" in result.stderr


def _rules_test(
    stack: Path, *args: str, env: str | None = None, before: tuple[str, ...] = ()
) -> list[str]:
    (stack / "r.sql").write_text(
        "RULE hot ON cpu(service='web') > 90% DO SCALE 'web' TO instances + 1;\n"
    )
    (stack / "s.csv").write_text("t,service,signal,value,message\n0,web,cpu,95,\n")
    result = _sqlifier(
        *before, "rules", "test", "r.sql", "--samples", "s.csv", "--json", *args, cwd=stack, env=env
    )
    assert result.returncode == 0, result.stderr
    return [a["detail"] for a in json.loads(result.stdout)]


def test_rules_test_honours_sqlifier_env_and_env_before_the_subcommand(stack: Path) -> None:
    assert _rules_test(stack, "-f", "sqlifier.toml") == ["1 -> 2"]
    assert _rules_test(stack, "-f", "sqlifier.toml", env="staging") == ["5 -> 6"]
    assert _rules_test(stack, "--file", "sqlifier.toml", "--env", "staging") == ["5 -> 6"]
    assert _rules_test(stack, "--stack", "sqlifier.toml", env="staging") == ["5 -> 6"]
    assert _rules_test(stack, "-f", "sqlifier.toml", before=("-e", "staging")) == ["5 -> 6"]


def test_logs_reads_the_stack_file_with_f_and_prints_json_lines(
    stack: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    logs = stack / ".sqlifier" / "dev" / "logs"
    logs.mkdir(parents=True)
    (logs / "web-0.log").write_text(
        '{"t": 100.5, "stream": "stdout", "level": "info", "line": "hello"}\n'
        '{"t": 101.0, "stream": "stderr", "level": "error", "line": "oh \\u00e9"}\n'
    )
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    result = _sqlifier("logs", "web", "-f", str(stack / "sqlifier.toml"), "--json", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"t": 100.5, "instance": "web-0", "stream": "stdout", "level": "info", "line": "hello"},
        {"t": 101.0, "instance": "web-0", "stream": "stderr", "level": "error", "line": "oh é"},
    ]
    text = _sqlifier("logs", "web", "--file", str(stack / "sqlifier.toml"), cwd=elsewhere)
    assert text.stdout.splitlines()[1].endswith("web-0 ERROR    oh é")


def _deploy_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_sqlifier(*args, cwd=cwd, command="deploy-cli")


def test_deploy_cli_usage_line_is_a_command_that_works(stack: Path) -> None:
    usage = _deploy_cli("--help", cwd=stack).stdout.splitlines()[0]
    assert usage == "Usage: deploy-cli [OPTIONS] [status DEPLOY_ID]"
    status = _deploy_cli("status", "d-nope", cwd=stack)
    assert (status.returncode, status.stderr) == (
        1,
        "deploy-cli: error: no deploy 'd-nope' in dev\n",
    )
    bare = _deploy_cli(cwd=stack)
    assert bare.stderr == (
        "deploy-cli: error: deploy needs --service SERVICE (or: deploy-cli status ID)\n"
    )


def test_deploy_cli_version_alone_is_the_program_version_and_with_a_value_the_release(
    stack: Path,
) -> None:
    alone = _deploy_cli("--version", cwd=stack)
    assert (alone.returncode, alone.stdout) == (0, "deploy-cli (sqlifier), version 0.1.0\n")
    last = _deploy_cli("--service", "web", "--version", cwd=stack)
    assert last.stdout == "deploy-cli (sqlifier), version 0.1.0\n"
    release = _deploy_cli("--version", "v2", "--service", "web", "--yes", cwd=stack)
    assert release.returncode == 1
    assert "nothing is running for opts in dev: deploys go to a running stack" in release.stderr
    assert run_sqlifier("--version").stdout == "sqlifier, version 0.1.0\n"


# --- install: vault:// and the AWS references need an optional extra ---------------------


@pytest.mark.parametrize(
    ("reference", "blocked", "extra"),
    [
        ("vault://secret/shop/db#password", "hvac", "vault"),
        ("aws-sm://shop/db#password", "botocore", "aws"),
        ("ssm:///shop/db/password", "botocore", "aws"),
    ],
)
def test_a_reference_whose_extra_is_not_installed_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, reference: str, blocked: str, extra: str
) -> None:
    """The test setup installs both extras; a module set to None in sys.modules is what
    Python sees when it is not installed (`import` raises ImportError)."""
    from sqlifier.secrets.errors import SecretError
    from sqlifier.secrets.providers import Context, resolve

    monkeypatch.setitem(sys.modules, blocked, None)
    environ = {"VAULT_ADDR": "http://127.0.0.1:1", "VAULT_TOKEN": "t", "AWS_REGION": "eu-west-1"}
    with pytest.raises(SecretError) as caught:
        resolve(reference, Context("dev", tmp_path, tmp_path, environ))
    package = "hvac" if extra == "vault" else "boto3"
    assert str(caught.value) == (
        f"{reference}: this reference needs {package}, which is not installed: install "
        f"sqlifier with it, pipx install 'sqlifier[{extra}]' (or pipx inject sqlifier {package})"
    )


# --- start-up: `ps` checks the agent without psutil on Linux, as psutil would --------------


def test_the_clients_liveness_check_agrees_with_psutil(tmp_path: Path) -> None:
    """agent_alive reads /proc itself (psutil takes a fifth of `ps`'s start-up); on a live
    process, a recycled pid (another start time), a zombie and a pid that is gone it must
    say what runtime.process.is_same_process (psutil) says."""
    import psutil

    from sqlifier.agent.client import agent_alive
    from sqlifier.runtime.process import is_same_process

    def alive(pid: int, started: float) -> bool:
        (tmp_path / "agent.json").write_text(
            json.dumps({"pid": pid, "started": started, "phase": "running"})
        )
        return agent_alive(tmp_path)

    sleeper = subprocess.Popen(["sleep", "30"])
    exited = subprocess.Popen(["true"])
    try:
        started = psutil.Process(sleeper.pid).create_time()
        exited_started = psutil.Process(exited.pid).create_time()
        os.waitid(os.P_PID, exited.pid, os.WEXITED | os.WNOWAIT)  # exited, left a zombie
        assert psutil.Process(exited.pid).status() == psutil.STATUS_ZOMBIE
        cases = [
            (sleeper.pid, started),
            (sleeper.pid, started - 5),
            (exited.pid, exited_started),
            (2**22 + 7, started),
        ]
        assert [alive(pid, at) for pid, at in cases] == [True, False, False, False]
        assert [is_same_process(pid, at) for pid, at in cases] == [True, False, False, False]
    finally:
        sleeper.kill()
        sleeper.wait()
        exited.wait()


# --- start-up: what a command loads ------------------------------------------------------


def _loaded(code: str, cwd: Path | None = None) -> set[str]:
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_help_lists_every_command_without_importing_one() -> None:
    loaded = _loaded("from sqlifier.cli.main import run\nrun(['--help'])")
    commands = {target.split(":")[0] for target in COMMANDS.values()}
    assert sorted(commands & loaded) == []
    assert "sqlifier.lang.parser" not in loaded


def test_the_help_summaries_are_the_commands_own_short_help() -> None:
    context = click.Context(cli, info_name="sqlifier")
    for name in COMMANDS:
        command = cli.get_command(context, name)
        assert command is not None
        assert command.get_short_help_str(100) == SUMMARIES[name]


def test_reading_a_stack_file_loads_no_parser_unless_it_has_analysis_expressions(
    stack: Path,
) -> None:
    read = "from pathlib import Path\nfrom sqlifier.stack import load_stack\nload_stack(Path('sqlifier.toml'))"
    assert "sqlifier.lang.parser" not in _loaded(read, cwd=stack)
    with (stack / "sqlifier.toml").open("a") as handle:
        handle.write('\n[services.web.rollout]\nanalysis = ["error_rate() < 1%"]\n')
    assert "sqlifier.lang.parser" in _loaded(read, cwd=stack)
