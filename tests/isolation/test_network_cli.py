"""An isolated stack through the commands a user types: `up` runs its instances in
namespaces (`ps` shows their addresses; the front door answers), an agent killed and
followed adopts them at the same addresses, and `down` after an agent that died removes
every namespace, link and table."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

import pytest

from sqlifier.runtime.netns import StackNetwork
from tests.apps import APP
from tests.cli.test_up import kill_agent, ps
from tests.conftest import run_sqlifier
from tests.isolation.nets import REASON, leftovers
from tests.servers import free_port

pytestmark = pytest.mark.skipif(REASON is not None, reason=f"cannot isolate here: {REASON}")


def test_up_adopt_and_down_after_a_dead_agent_leave_nothing(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "sqlifier.toml").write_text(
        f'[stack]\nname = "iso"\n[router]\nlisten = "127.0.0.1:{port}"\n'
        '[metrics]\nlisten = "off"\n'
        f'[services.web]\nrun = "{sys.executable} app.py"\nroutes = ["/"]\ninstances = 2\n'
        'isolation = "network"\nprobes.readiness = { http = "/", period = "200ms" }\n'
    )
    digest = StackNetwork(tmp_path / ".sqlifier" / "dev").digest
    try:
        up = run_sqlifier("up", "--detach", cwd=tmp_path)
        assert up.returncode == 0, up.stderr
        before = {row["instance"]: (row["pid"], row["address"]) for row in ps(tmp_path)}
        assert all(str(address).startswith("10.") for _, address in before.values())
        answers = set()
        for _ in range(4):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
                answers.add(response.read().decode())
        assert answers == {"web-0", "web-1"}
        kill_agent(tmp_path)
        again = run_sqlifier("up", "--detach", cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert {row["instance"]: (row["pid"], row["address"]) for row in ps(tmp_path)} == before
        kill_agent(tmp_path)
        down = run_sqlifier("down", cwd=tmp_path)
        assert down.returncode == 0, down.stderr
        assert "stopped 2 instances left running by an agent that had died" in down.stdout
        assert leftovers(digest) == []
    finally:
        run_sqlifier("down", cwd=tmp_path)
        StackNetwork(tmp_path / ".sqlifier" / "dev").teardown()
