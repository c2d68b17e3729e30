"""The CLI reads the agent's files and talks to it without loading the agent: `ps`,
`check` and `logs` start without the agent's modules, psutil or cryptography."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("sqlifier.agent.server", "sqlifier.agent.automation", "psutil", "cryptography")


@pytest.mark.parametrize("module", ["sqlifier.cli.ps", "sqlifier.cli.logs", "sqlifier.cli.check"])
def test_a_client_side_command_loads_neither_the_agent_nor_psutil_nor_cryptography(
    module: str,
) -> None:
    script = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
        ).stdout
    )
    assert [name for name in HEAVY if name in loaded] == []


@pytest.mark.parametrize(
    "args",
    [["ps", "--help"], ["check", "--help"], ["logs", "--help"], ["ps", "--env", "nowhere"]],
)
def test_the_sqlifier_command_loads_only_the_command_it_runs(args: list[str]) -> None:
    """The whole `sqlifier` process, not only the command's module: the entry point
    imports a command's module when that command runs."""
    script = (
        "import json, sys\n"
        "from sqlifier.cli.main import run\n"
        f"run({args!r})\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert [name for name in (*HEAVY, "sqlifier.engine.machine") if name in loaded] == []


def test_every_command_is_listed_and_loads() -> None:
    from sqlifier.cli.main import COMMANDS, cli

    context = cli.make_context("sqlifier", ["--help"], resilient_parsing=True)
    assert cli.list_commands(context) == sorted(COMMANDS)
    for name in COMMANDS:
        command = cli.get_command(context, name)
        assert command is not None and command.name == name
