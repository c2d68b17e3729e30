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
