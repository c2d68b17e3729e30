"""`up`, `ps`, `scale`, `restart`, `logs`, `down` as a user runs them: real agent, real
processes, real sockets — and nothing left behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.apps import APP
from tests.conftest import BIN, run_sqlifier


def make_stack(root: Path, extra: str = "", instances: int = 2) -> Path:
    (root / "app.py").write_text(APP)
    (root / "sqlifier.toml").write_text(
        f'[stack]\nname = "t"\n\n[services.web]\nrun = "{sys.executable} app.py"\n'
        f'instances = {instances}\nprobes.readiness = {{ http = "/", period = "200ms" }}\n{extra}'
    )
    return root


def leftovers(root: Path) -> list[int]:
    found = []
    for process in psutil.process_iter(["cmdline", "cwd"]):
        try:
            cmdline = " ".join(process.info["cmdline"] or [])
            if process.info["cwd"] == str(root) and ("app.py" in cmdline or "sqlifier" in cmdline):
                found.append(process.pid)
        except psutil.Error:
            continue
    return found


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Path]:
    root = make_stack(tmp_path)
    yield root
    run_sqlifier("down", cwd=root)


def get(port: object, path: str = "/") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return str(response.read().decode())


def ps(root: Path) -> list[dict[str, object]]:
    result = run_sqlifier("ps", "--json", cwd=root)
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def test_up_detach_ps_scale_restart_logs_down(stack: Path) -> None:
    up = run_sqlifier("up", "--detach", cwd=stack)
    assert up.returncode == 0, up.stderr
    assert up.stdout.startswith("t (dev) is up: 2 instances ready")

    instances = ps(stack)
    assert [(i["instance"], i["state"]) for i in instances] == [
        ("web-0", "ready"),
        ("web-1", "ready"),
    ]
    assert set(instances[0]) >= {
        "service",
        "instance",
        "pid",
        "port",
        "state",
        "release",
        "restarts",
    }
    assert get(instances[1]["port"]) == "web-1"

    scaled = run_sqlifier("scale", "web", "3", cwd=stack)
    assert scaled.returncode == 0, scaled.stderr
    after = ps(stack)
    assert [i["pid"] for i in after[:2]] == [i["pid"] for i in instances]  # untouched
    assert after[2]["state"] == "ready"

    get(after[0]["port"], "/boom")
    for _ in range(50):  # the agent writes the line asynchronously: poll until it lands
        logs = run_sqlifier("logs", "web", "--level", "error", cwd=stack)
        if logs.stdout:
            break
    assert logs.returncode == 0
    assert logs.stdout.strip().endswith("web-0 ERROR    ERROR boom requested")

    restarted = run_sqlifier("restart", "web", cwd=stack)
    assert restarted.returncode == 0, restarted.stderr
    assert not {i["pid"] for i in ps(stack)} & {i["pid"] for i in after}

    down = run_sqlifier("down", cwd=stack)
    assert (down.returncode, down.stdout) == (0, "t (dev) is down\n")
    assert ps(stack) == []
    assert leftovers(stack) == []

    audit = run_audit(stack)
    assert [what for what, _ in audit] == ["up", "scale", "restart", "down"]


def run_audit(root: Path) -> list[tuple[str, str]]:
    import sqlite3

    with sqlite3.connect(root / ".sqlifier" / "dev" / "audit.db") as db:
        return list(db.execute("SELECT what, result FROM audit ORDER BY id"))


def test_up_detach_names_the_service_that_fails_and_shows_its_last_lines(tmp_path: Path) -> None:
    root = make_stack(
        tmp_path, 'env = { FAIL_AT_START = "cannot reach the database" }\n', instances=1
    )
    up = run_sqlifier("up", "--detach", cwd=root)
    assert up.returncode == 1
    assert up.stderr.splitlines()[:3] == [
        "sqlifier: error: web-0 did not start: exited with code 3; restarting in 2s",
        "last lines of web-0:",
        "  CRITICAL cannot reach the database",
    ]
    assert leftovers(root) == []


def test_an_invalid_stack_file_starts_nothing(tmp_path: Path) -> None:
    root = make_stack(tmp_path, "instnaces = 3\n")
    up = run_sqlifier("up", "--detach", cwd=root)
    assert up.returncode == 1
    assert "unknown key 'instnaces'" in up.stderr
    assert not (root / ".sqlifier").exists()


def test_a_port_in_use_is_named(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        root = make_stack(tmp_path, f"port = {port}\n", instances=1)
        up = run_sqlifier("up", "--detach", cwd=root)
    assert up.returncode == 1
    assert f"web-0: port {port} is already in use" in up.stderr


def test_up_twice_is_refused(stack: Path) -> None:
    assert run_sqlifier("up", "--detach", cwd=stack).returncode == 0
    again = run_sqlifier("up", "--detach", cwd=stack)
    assert again.returncode == 1
    assert "is already running in dev" in again.stderr


def test_up_in_the_foreground_stops_everything_on_ctrl_c(stack: Path) -> None:
    with subprocess.Popen(
        [str(BIN / "sqlifier"), "up"],
        cwd=stack,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "SQLIFIER_DEBUG"},
    ) as process:
        assert process.stdout is not None
        ready = 0
        for line in process.stdout:
            ready += line.split()[2:3] == ["ready"]
            if ready == 2:
                break
        assert len(ps(stack)) == 2
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    assert leftovers(stack) == []
    assert ps(stack) == []


def test_commands_without_a_running_stack_say_so(stack: Path) -> None:
    assert run_sqlifier("ps", cwd=stack).stdout == "nothing is running for t (dev)\n"
    scale = run_sqlifier("scale", "web", "2", cwd=stack)
    assert scale.returncode == 1
    assert "nothing is running for environment 'dev' (start it with sqlifier up)" in scale.stderr


def agent_pid(root: Path) -> int:
    return int(json.loads((root / ".sqlifier" / "dev" / "agent.json").read_text())["pid"])


def kill_agent(root: Path) -> None:
    pid = agent_pid(root)
    os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(pid).wait(10)


def test_instances_outlive_a_killed_agent_and_the_next_one_adopts_them(stack: Path) -> None:
    assert run_sqlifier("up", "--detach", cwd=stack).returncode == 0
    before = {i["instance"]: i["pid"] for i in ps(stack)}
    kill_agent(stack)

    # The instances kept running, and kept answering, without their agent.
    for instance in json.loads((stack / ".sqlifier" / "dev" / "agent.json").read_text())[
        "instances"
    ]:
        assert get(instance["port"], "/boom") == instance["instance"]

    again = run_sqlifier("up", "--detach", cwd=stack)
    assert again.returncode == 0, again.stderr
    after = ps(stack)
    assert {i["instance"]: i["pid"] for i in after} == before  # adopted, not restarted
    assert all(i["state"] == "ready" and i["restarts"] == 0 for i in after)

    for _ in range(50):  # what they wrote while no agent ran reaches the log
        logs = run_sqlifier("logs", "web", "--level", "error", cwd=stack)
        if logs.stdout.count("boom requested") == 2:
            break
    assert logs.stdout.count("boom requested") == 2

    assert run_sqlifier("down", cwd=stack).returncode == 0
    assert leftovers(stack) == []


def test_down_after_the_agent_died_stops_what_it_left(stack: Path) -> None:
    assert run_sqlifier("up", "--detach", cwd=stack).returncode == 0
    os.kill(agent_pid(stack), signal.SIGKILL)  # not waited for: down copes either way
    down = run_sqlifier("down", cwd=stack)
    assert down.returncode == 0
    assert (
        down.stdout
        == "stopped 2 instances left running by an agent that had died; t (dev) is down\n"
    )
    assert leftovers(stack) == []


def test_two_ups_at_once_start_one_agent(stack: Path) -> None:
    command = [str(BIN / "sqlifier"), "up", "--detach"]
    with (
        subprocess.Popen(
            command, cwd=stack, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as first,
        subprocess.Popen(
            command, cwd=stack, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as second,
    ):
        codes = sorted([first.wait(timeout=60), second.wait(timeout=60)])
        outputs = first.communicate()[1] + second.communicate()[1]
    assert codes == [0, 1]
    assert "already" in outputs
    assert len(ps(stack)) == 2


def test_logs_of_a_service_do_not_include_a_service_with_a_longer_name(tmp_path: Path) -> None:
    logs = tmp_path / ".sqlifier" / "dev" / "logs"
    logs.mkdir(parents=True)
    make_stack(tmp_path, '\n[services.web-api]\nrun = "x"\n')
    line = '{"t": 1.0, "stream": "out", "level": "info", "line": "%s"}\n'
    (logs / "web-0.log").write_text(line % "web line")
    (logs / "web-api-0.log").write_text(line % "api line")
    shown = run_sqlifier("logs", "web", cwd=tmp_path).stdout
    assert "web line" in shown and "api line" not in shown
    assert "web line" in run_sqlifier("logs", "web", "-i", "web-0", cwd=tmp_path).stdout
    missing = run_sqlifier("logs", "web", "-i", "web-9", cwd=tmp_path)
    assert missing.returncode == 1
    assert "no log of instance 'web-9' in dev; web's instances with logs: web-0" in (missing.stderr)


def test_ps_shows_what_a_dead_agent_left(stack: Path) -> None:
    assert run_sqlifier("up", "--detach", cwd=stack).returncode == 0
    kill_agent(stack)
    shown = run_sqlifier("ps", cwd=stack)
    assert shown.returncode == 0
    assert shown.stdout.count("orphaned") == 2
    assert "sqlifier up adopts them, sqlifier down stops them" in shown.stdout


def test_ctrl_c_while_starting_stops_at_once(tmp_path: Path) -> None:
    root = make_stack(tmp_path, 'env = { START_DELAY = "300" }\n', instances=1)
    with subprocess.Popen(
        [str(BIN / "sqlifier"), "up", "--timeout", "300"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if "started" in line:
                break
        process.send_signal(signal.SIGINT)
        # Without the fix this waited for the 300 s readiness timeout.
        assert process.wait(timeout=30) == 0
    assert leftovers(root) == []


def test_up_on_a_terminal_keeps_a_live_table_below_the_events(stack: Path) -> None:
    leader, follower = os.openpty()
    with subprocess.Popen(
        [str(BIN / "sqlifier"), "up"], cwd=stack, stdout=follower, stderr=follower
    ) as process:
        os.close(follower)
        screen = b""
        while screen.count(b" ready ") < 2 and b"ready  " not in screen.split(b"\x1b[")[-1]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
        last_frame = screen.split(b"\x1b[")[-1].decode()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    os.close(leader)
    assert b"\x1b[" in screen  # the table was redrawn in place
    assert "SERVICE  INSTANCE" in last_frame
    assert last_frame.count("ready") >= 2
    assert leftovers(stack) == []
