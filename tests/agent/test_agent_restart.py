"""Nothing is lost when the agent dies: real agent, real processes, killed with SIGKILL.

The desired count of each service (and who set it) outlives the agent: the next `up`
adopts the instances and keeps the count, unless the stack file's `instances` changed or
the stack was stopped cleanly (`down`) in between."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_up import kill_agent, leftovers, make_stack, ps
from tests.conftest import run_sqlifier


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Path]:
    root = make_stack(tmp_path)
    yield root
    run_sqlifier("down", cwd=root)


def pids(root: Path) -> dict[str, object]:
    return {str(i["instance"]): i["pid"] for i in ps(root)}


def test_a_count_set_by_hand_survives_an_agent_killed_and_started_again(
    stack: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SQLIFIER_USER", "alice")
    assert run_sqlifier("up", "--detach", cwd=stack).returncode == 0
    scaled = run_sqlifier("scale", "web", "3", cwd=stack)
    assert scaled.returncode == 0, scaled.stderr
    before = pids(stack)
    assert sorted(before) == ["web-0", "web-1", "web-2"]
    kill_agent(stack)

    again = run_sqlifier("up", "--detach", cwd=stack)
    assert again.returncode == 0, again.stderr
    assert pids(stack) == before  # all three adopted: web-2 was not stopped
    rows = ps(stack)
    assert {row["count_set_by"] for row in rows} == {"cli:alice"}
    shown = run_sqlifier("ps", cwd=stack)
    assert "web: 3 instances wanted, set by cli:alice" in shown.stdout

    # Killed once more: still three, still set by alice.
    kill_agent(stack)
    assert run_sqlifier("up", "--detach", cwd=stack).returncode == 0
    assert pids(stack) == before


def test_an_edited_instances_or_a_clean_down_starts_from_the_stack_file(stack: Path) -> None:
    assert run_sqlifier("up", "--detach", cwd=stack).returncode == 0
    assert run_sqlifier("scale", "web", "3", cwd=stack).returncode == 0
    kill_agent(stack)
    # The stack file now says 1: the file decides, whatever was set before.
    make_stack(stack, instances=1)
    assert run_sqlifier("up", "--detach", cwd=stack).returncode == 0
    assert sorted(pids(stack)) == ["web-0"]
    assert {row["count_set_by"] for row in ps(stack)} == {"stack"}
    assert "instances wanted" not in run_sqlifier("ps", cwd=stack).stdout

    # Set by hand, then a clean down: the next up starts from the file.
    assert run_sqlifier("scale", "web", "2", cwd=stack).returncode == 0
    assert run_sqlifier("down", cwd=stack).returncode == 0
    assert leftovers(stack) == []
    assert run_sqlifier("up", "--detach", cwd=stack).returncode == 0
    assert sorted(pids(stack)) == ["web-0"]


def test_the_count_is_recorded_with_the_instances_for_the_next_agent(stack: Path) -> None:
    assert run_sqlifier("up", "--detach", cwd=stack).returncode == 0
    assert run_sqlifier("scale", "web", "3", cwd=stack).returncode == 0
    info = json.loads((stack / ".sqlifier" / "dev" / "agent.json").read_text())
    assert info["counts"]["web"]["count"] == 3
    assert info["counts"]["web"]["file"] == 2
    assert str(info["counts"]["web"]["by"]).startswith("cli:")
