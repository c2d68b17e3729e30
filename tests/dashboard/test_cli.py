"""`sqlifier dashboard` when there is no dashboard to log in to: exit 1, saying why."""

from __future__ import annotations

from pathlib import Path

from tests.apps import APP
from tests.conftest import run_sqlifier

STACK = """\
[stack]
name = "quiet"

[dashboard]
listen = "off"

[metrics]
listen = "off"

[services.web]
run = "python3 app.py"
"""


def test_without_an_agent_it_says_to_start_one(tmp_path: Path) -> None:
    (tmp_path / "sqlifier.toml").write_text(STACK)
    done = run_sqlifier("dashboard", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        "sqlifier: error: the agent of quiet (dev) is not running; start it with sqlifier up\n"
    )


def test_a_dashboard_turned_off_is_said_to_be_off(tmp_path: Path) -> None:
    (tmp_path / "sqlifier.toml").write_text(STACK)
    (tmp_path / "app.py").write_text(APP)
    assert run_sqlifier("up", "--detach", cwd=tmp_path).returncode == 0
    try:
        done = run_sqlifier("dashboard", cwd=tmp_path)
    finally:
        run_sqlifier("down", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == 'sqlifier: error: the dashboard is off ([dashboard] listen = "off")\n'
