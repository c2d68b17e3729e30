"""Shell completion as the shells ask for it: the installed `sqlifier` run with
`_SQLIFIER_COMPLETE` and the words typed so far (COMP_WORDS, COMP_CWORD), in its own
process, as the scripts of docs/cli.md do. Service names come from the stack file found
as usual; stack files, rule files and samples complete as file names."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN

STACK = """\
[stack]
name = "c"

[services.web]
run = "x"

[services.worker]
run = "y"

[environments.staging.services.web]
instances = 2
"""


def complete(
    words: str, cwd: Path, shell: str = "bash", command: str = "sqlifier"
) -> subprocess.CompletedProcess[str]:
    """What `command` answers when the shell completes the last word of `words`."""
    typed = words.split()
    cword = len(typed) if words.endswith(" ") else len(typed) - 1
    var = f"_{command.upper().replace('-', '_')}_COMPLETE"
    env = {k: v for k, v in os.environ.items() if k != "SQLIFIER_ENV"}
    env.update({"COMP_WORDS": words, "COMP_CWORD": str(cword), var: f"{shell}_complete"})
    return subprocess.run(
        [str(BIN / command)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def bash(words: str, cwd: Path, command: str = "sqlifier") -> list[str]:
    done = complete(words, cwd, command=command)
    assert (done.returncode, done.stderr) == (0, "")
    return [line for line in done.stdout.splitlines() if line]  # none: one empty line


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    (tmp_path / "sqlifier.toml").write_text(STACK)
    (tmp_path / "rules").mkdir()
    return tmp_path


@pytest.mark.parametrize(
    "words",
    [
        "sqlifier logs ",
        "sqlifier scale ",
        "sqlifier config ",
        "sqlifier releases ",
        "sqlifier rollout abort ",
        "sqlifier lock release ",
        "sqlifier deploy --service ",
        "sqlifier deploy -s ",
        "sqlifier rollback -s ",
        "sqlifier audit --service ",
        "sqlifier rules explain r --service ",
        "sqlifier --env staging restart ",
    ],
)
def test_service_names_complete_from_the_stack_found_here(stack: Path, words: str) -> None:
    assert bash(words, stack) == ["plain,web", "plain,worker"]


def test_a_service_completes_from_what_is_typed_and_from_a_subfolder(stack: Path) -> None:
    assert bash("sqlifier logs wo", stack / "rules") == ["plain,worker"]


def test_service_names_come_from_the_stack_file_given_with_f(
    stack: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    assert bash(f"sqlifier logs -f {stack / 'sqlifier.toml'} ", elsewhere) == [
        "plain,web",
        "plain,worker",
    ]
    assert bash("sqlifier logs ", elsewhere) == []  # no stack here: nothing, and no error


def test_an_invalid_stack_completes_nothing_and_prints_no_error(stack: Path) -> None:
    (stack / "sqlifier.toml").write_text("[stack\n")
    assert bash("sqlifier logs ", stack) == []


@pytest.mark.parametrize(
    "words",
    [
        "sqlifier check ",
        "sqlifier fmt ",
        "sqlifier ps -f ",
        "sqlifier up --file ",
        "sqlifier rules test r.sql --samples ",
        "sqlifier rules test ",
    ],
)
def test_files_complete_as_file_names(stack: Path, words: str) -> None:
    assert bash(words, stack) == ["file,"]


def test_commands_and_options_complete(stack: Path) -> None:
    assert "plain,deploy" in bash("sqlifier de", stack)
    assert "plain,--follow" in bash("sqlifier logs web --f", stack)


def test_deploy_cli_completes_services_under_its_own_variable(stack: Path) -> None:
    assert bash("deploy-cli --service ", stack, command="deploy-cli") == [
        "plain,web",
        "plain,worker",
    ]


def test_zsh_and_fish_answer_in_their_formats(stack: Path) -> None:
    zsh = complete("sqlifier logs ", stack, shell="zsh")
    assert zsh.stdout.splitlines() == ["plain", "web", "_", "plain", "worker", "_"]
    env = {k: v for k, v in os.environ.items() if k != "SQLIFIER_ENV"}
    # fish passes the whole line and the word being completed
    env.update({"COMP_WORDS": "sqlifier logs w", "COMP_CWORD": "w"})
    env["_SQLIFIER_COMPLETE"] = "fish_complete"
    fish = subprocess.run(
        [str(BIN / "sqlifier")],
        cwd=stack,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert fish.stdout.splitlines() == ["plain,web", "plain,worker"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_scripts_to_install_are_printed_for_each_shell(shell: str) -> None:
    env = {**os.environ, "_SQLIFIER_COMPLETE": f"{shell}_source"}
    done = subprocess.run(
        [str(BIN / "sqlifier")], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0
    assert "_SQLIFIER_COMPLETE" in done.stdout
    if shell == "bash" and shutil.which("bash"):
        syntax = subprocess.run(["bash", "-n"], input=done.stdout, text=True, check=False)
        assert syntax.returncode == 0


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_itself_completes_a_service_with_the_installed_script(stack: Path) -> None:
    """The script docs/cli.md installs, loaded in a real bash, called as bash calls it."""
    script = subprocess.run(
        [str(BIN / "sqlifier")],
        env={**os.environ, "_SQLIFIER_COMPLETE": "bash_source"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    program = (
        f"{script}\n"
        f'export PATH="{BIN}:$PATH"\n'
        "COMP_WORDS=(sqlifier logs wo); COMP_CWORD=2\n"
        "_sqlifier_completion sqlifier\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "-c", program], cwd=stack, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.splitlines() == ["worker"], done.stderr
