"""RUN with real processes and process groups."""

from __future__ import annotations

import asyncio
import shlex
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil
import pytest

from sqlifier.runtime.commands import (
    OUTPUT_LIMIT,
    RunResult,
    _Tail,
    run_command,
)

PY = shlex.quote(sys.executable)
WAIT = 10.0  # generous bound on waiting for something that happens at once


def run(command: str, cwd: Path, env: Mapping[str, str] | None = None, **options: Any) -> RunResult:
    return asyncio.run(run_command(command, env or {}, cwd, **options))


def is_gone(pid: int) -> bool:
    """Wait (up to WAIT) for `pid` to end; a zombie has ended. A process whose output has
    ended can still be exiting for a moment after: its files close before it is a zombie."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def test_a_command_gives_its_exit_code_and_output(tmp_path: Path) -> None:
    result = run("sh -c 'echo out; echo err >&2; exit 3'", tmp_path)
    assert result.argv == ("sh", "-c", "echo out; echo err >&2; exit 3")
    assert (result.exit_code, result.output, result.timed_out, result.error) == (
        3,
        "out\nerr\n",
        False,
        None,
    )


def test_the_command_sees_the_agent_environment_and_the_rule_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FROM_AGENT", "inherited")
    script = "import os; print(os.environ['FROM_AGENT'], os.environ['SQLIFIER_RULE'], os.getcwd())"
    result = run(f"{PY} -c {shlex.quote(script)}", tmp_path, {"SQLIFIER_RULE": "cpu-high"})
    assert result.output == f"inherited cpu-high {tmp_path}\n"


def test_a_command_is_not_run_through_a_shell(tmp_path: Path) -> None:
    assert run("echo $HOME | cat", tmp_path).output == "$HOME | cat\n"


def test_a_missing_program_is_reported(tmp_path: Path) -> None:
    result = run("no-such-program-sqlifier --flag", tmp_path)
    assert result.argv == ("no-such-program-sqlifier", "--flag")
    assert (result.exit_code, result.error) == (None, "command not found: no-such-program-sqlifier")


def test_a_program_that_is_not_executable_is_reported(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("#!/bin/sh\necho hi\n")
    result = run("./x", tmp_path)
    assert (result.exit_code, result.error) == (None, "permission denied: ./x")


def test_a_missing_directory_is_reported(tmp_path: Path) -> None:
    result = run("true", tmp_path / "gone")
    assert result.error == f"directory not found: {tmp_path / 'gone'}"


@pytest.mark.parametrize(
    ("command", "error"),
    [
        ('echo "hello', "cannot split the command: No closing quotation"),
        ("echo \\", "cannot split the command: No escaped character"),
        ("   ", "empty command"),
    ],
)
def test_a_command_that_cannot_be_split_is_reported(
    tmp_path: Path, command: str, error: str
) -> None:
    assert run(command, tmp_path) == RunResult((), None, "", False, error, 0.0)


def test_a_timeout_stops_the_whole_process_group(tmp_path: Path) -> None:
    result = run("sh -c 'sleep 100 & echo $!; wait'", tmp_path, timeout=1.0)
    assert (result.exit_code, result.timed_out, result.error) == (None, True, None)
    grandchild = int(result.output)
    assert is_gone(grandchild)


def test_a_group_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    command = "sh -c \"trap '' TERM; sleep 100 & echo $!; wait\""  # sleep inherits the trap
    result = run(command, tmp_path, timeout=1.0, kill_after=0.2)
    assert (result.exit_code, result.timed_out) == (None, True)
    assert is_gone(int(result.output))


def test_what_a_command_leaves_running_is_stopped_when_it_exits(tmp_path: Path) -> None:
    result = run("sh -c 'sleep 100 & echo $!'", tmp_path)
    assert (result.exit_code, result.timed_out) == (0, False)
    assert is_gone(int(result.output))


def test_a_cancelled_command_is_killed(tmp_path: Path) -> None:
    async def main() -> int:
        before = {p.pid for p in psutil.Process().children()}  # other tests' helpers
        task = asyncio.create_task(run_command("sleep 100", {}, tmp_path))
        async with asyncio.timeout(WAIT):
            while not (children := [p for p in psutil.Process().children() if p.pid not in before]):
                await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return children[0].pid

    assert is_gone(asyncio.run(main()))


def test_only_the_tail_of_a_long_output_is_kept(tmp_path: Path) -> None:
    size = 3_000_000
    script = f"import sys; sys.stdout.write('x' * {size} + 'END')"
    result = run(f"{PY} -c {shlex.quote(script)}", tmp_path)
    cut = size + 3 - OUTPUT_LIMIT
    assert result.output == f"[... {cut} bytes cut]\n" + "x" * (OUTPUT_LIMIT - 3) + "END"
    assert OUTPUT_LIMIT == 64 * 1024


def test_the_output_kept_never_grows_past_the_limit() -> None:
    tail = _Tail()
    for _ in range(50):
        tail.data_received(b"y" * 1_000_000)
        assert len(tail.kept) <= OUTPUT_LIMIT
    assert tail.cut == 50_000_000 - OUTPUT_LIMIT


def test_a_character_cut_in_two_at_the_front_is_dropped_whole() -> None:
    tail = _Tail()
    tail.data_received(("é" * 40_000 + "x").encode())  # 80_001 bytes: the cut splits an é
    assert tail.text() == "[... 14466 bytes cut]\n" + "é" * 32_767 + "x"
