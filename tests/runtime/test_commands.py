"""RUN with real processes and process groups."""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil
import pytest

from sqlifier.errors import DiagnosticsError
from sqlifier.runtime.commands import (
    OUTPUT_LIMIT,
    RunResult,
    _Tail,
    run_command,
    service_argv,
)
from sqlifier.runtime.process import LaunchError
from sqlifier.runtime.supervisor import StartFailed, Supervisor
from sqlifier.stack import load_stack
from sqlifier.stack.expand import UnknownName, expand, names_in
from sqlifier.stack.model import Service

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


# --- `$NAME` in a service's run ------------------------------------------------------------

ARGV_APP = """\
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

with open("argv.json", "w") as f:
    json.dump(sys.argv[1:], f)

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

port = int(sys.argv[sys.argv.index("--port") + 1])
ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def test_names_in_a_word_are_replaced_and_a_double_dollar_is_a_dollar() -> None:
    env = {"PORT": "8001", "NAME": "a b", "X_1": "x"}
    assert expand("--port=$PORT", env) == "--port=8001"
    assert expand("${NAME}s", env) == "a bs"
    assert expand("$X_1$PORT", env) == "x8001"
    assert expand("$$PORT costs $5 and 5$", env) == "$PORT costs $5 and 5$"
    assert names_in("$PORT ${NAME} $$HOME $5") == ["PORT", "NAME"]


def test_an_unknown_or_malformed_name_is_an_error_that_names_it() -> None:
    with pytest.raises(UnknownName, match=r"^\$NOPE is not set in the instance's environment"):
        expand("--port $NOPE", {"PORT": "1"})
    with pytest.raises(UnknownName, match=r"'\$\{1x\}' is not a variable reference"):
        expand("${1x}", {})
    with pytest.raises(UnknownName, match=r"'\$\{PORT' is not a variable reference"):
        expand("${PORT", {"PORT": "1"})


def test_service_argv_expands_each_word_without_a_shell() -> None:
    web = Service(name="web", run="app --port $PORT --title '${TITLE}' $$HOME", source=Path())
    env = {"PORT": "9000", "TITLE": "my shop; rm -rf /"}
    assert service_argv(web, env, "web-0") == [
        "app",
        "--port",
        "9000",
        "--title",
        "my shop; rm -rf /",
        "$HOME",
    ]
    shell = Service(name="web", run="app --port $PORT", source=Path(), shell=True)
    assert service_argv(shell, env, "web-0") == ["/bin/sh", "-c", "app --port $PORT"]
    with pytest.raises(LaunchError, match=r"^web-0: run = 'app \$NOPE': \$NOPE is not set"):
        service_argv(Service(name="web", run="app $NOPE", source=Path()), env, "web-0")


def test_the_documented_run_gets_its_port_as_an_argument(tmp_path: Path) -> None:
    """The stack-file reference's example, `--port $PORT` without a shell, started for real."""
    (tmp_path / "app.py").write_text(ARGV_APP)
    (tmp_path / "sqlifier.toml").write_text(
        f'[stack]\nname = "t"\n[services.web]\nrun = "{sys.executable} app.py --port $PORT '
        '--who ${INSTANCE}/${GREETING} $$HOME"\nenv = { GREETING = "hello there" }\n'
        'probes.readiness = { http = "/", period = "100ms" }\n'
    )
    stack, _ = load_stack(tmp_path / "sqlifier.toml")

    async def main() -> int:
        supervisor = Supervisor(stack, "dev", tmp_path / ".sqlifier" / "dev")
        try:
            await supervisor.start(ready_timeout=20)
            (instance,) = supervisor.snapshot()
            return int(str(instance["port"]))
        finally:
            await supervisor.stop()

    port = asyncio.run(main())
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv == ["--port", str(port), "--who", "web-0/hello there", "$HOME"]


def check_errors(tmp_path: Path, text: str) -> list[tuple[int, int, str]]:
    path = tmp_path / "sqlifier.toml"
    path.write_text(text)
    with pytest.raises(DiagnosticsError) as caught:
        load_stack(path, "sqlifier.toml")
    return [(d.line, d.col, d.message) for d in caught.value.diagnostics]


def test_check_names_an_unknown_variable_of_run_at_its_position(tmp_path: Path) -> None:
    text = (
        '[stack]\nname = "t"\n[services.web]\nrun = "app --port $PROT"\n'
        '[services.api]\nrun = "api --port $PORT --db $DB --key $KEY --home $HOME"\n'
        'env = { DB = "x" }\nsecrets = { KEY = "secret://local/key" }\n'
        '[environments.prod.services.api]\nrun = "api ${MISSING}"\n'
    )
    assert check_errors(tmp_path, text) == [
        (4, 7, "services.web.run uses $PROT, which its instances do not have"),
        (10, 7, "services.api.run uses $MISSING, which its instances do not have"),
    ]
    assert check_errors(tmp_path, '[stack]\nname = "t"\n[services.web]\nrun = "a ${"\n') == [
        (
            4,
            7,
            "services.web.run: '${' is not a variable reference: write ${NAME} with a name "
            "of letters, digits and '_', or $$ for a literal dollar",
        ),
    ]


def test_a_name_only_an_env_file_or_the_agent_can_give_is_checked_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With an env file the check cannot know: the stack loads.
    path = tmp_path / "sqlifier.toml"
    path.write_text(
        '[stack]\nname = "t"\n[services.web]\nrun = "app $FROM_FILE"\n'
        '[environments.prod]\nenv_file = "prod.env"\n'
    )
    load_stack(path)
    # The check's environment has the name; the agent that starts the instance does not.
    monkeypatch.setenv("ONLY_AT_CHECK", "1")
    (tmp_path / "app.py").write_text(ARGV_APP)
    path.write_text(
        f'[stack]\nname = "t"\n[services.web]\nrun = "{sys.executable} app.py $ONLY_AT_CHECK"\n'
    )
    stack, _ = load_stack(path)

    async def main() -> None:
        supervisor = Supervisor(stack, "dev", tmp_path / ".sqlifier" / "dev", base_env={})
        try:
            await supervisor.start(ready_timeout=5)
        finally:
            await supervisor.stop()

    with pytest.raises(StartFailed, match=r"web-0: run = .*: \$ONLY_AT_CHECK is not set"):
        asyncio.run(main())
