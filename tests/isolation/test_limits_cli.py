"""Limits as a user meets them: an OOM kill explained in `ps`, `logs` and the decision
record, the instance restarted; an agent killed and started again keeps the instance in
its cgroup; `down` leaves no cgroup behind. Real agent, real kernel.
"""

from __future__ import annotations

import http.client
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from sqlifier.runtime.cgroups import Cgroups
from sqlifier.store.decisions import DecisionLog
from tests.cli.test_up import kill_agent, ps
from tests.conftest import run_sqlifier
from tests.isolation.test_limits import HOG, needs_cgroups


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "hog.py").write_text(HOG)
    (tmp_path / "sqlifier.toml").write_text(
        '[stack]\nname = "t"\n\n'
        f'[services.hog]\nrun = "{sys.executable} hog.py"\n'
        'resources = { cpu = 0.5, memory = "64Mi" }\n'
        'probes.readiness = { http = "/", period = "100ms" }\n'
    )
    yield tmp_path
    run_sqlifier("down", cwd=tmp_path)


def wait_for(what: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not what():
        assert time.monotonic() < deadline, "it did not happen in time"
        time.sleep(0.1)


def hog(port: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/hog")
        connection.getresponse().read()
    except (OSError, http.client.HTTPException):
        pass  # killed while answering: its connection is cut
    finally:
        connection.close()


def group_folder(root: Path, instance: dict[str, object]) -> Path:
    cgroups = Cgroups.detect(root / ".sqlifier" / "dev")
    key = f"{instance['instance']}_{instance['port']}"
    parent = cgroups.parents.get("memory") or cgroups.parents["unified"]
    return parent / key


@needs_cgroups
def test_an_oom_kill_is_explained_everywhere_and_the_instance_restarts(stack: Path) -> None:
    up = run_sqlifier("up", "--detach", cwd=stack)
    assert up.returncode == 0, up.stderr
    (instance,) = ps(stack)
    hog(int(str(instance["port"])))

    wait_for(lambda: int(str(ps(stack)[0]["restarts"])) >= 1 and ps(stack)[0]["state"] == "ready")
    shown = run_sqlifier("ps", cwd=stack).stdout
    logs = run_sqlifier("logs", "hog", cwd=stack).stdout
    assert "hog-0 was OOM-killed: its memory reached its limit of 64Mi" in logs, logs
    (decision,) = DecisionLog(stack / ".sqlifier" / "dev" / "decisions.db").read(rule="runtime")
    assert (decision["service"], decision["outcome"]) == ("hog", "oom killed")
    assert decision["reason"].startswith("hog-0 was OOM-killed: its memory reached its limit")
    assert "restarting in" in decision["reason"]
    row = next(line for line in shown.splitlines() if "hog-0" in line)
    assert "ready" in row and "(OOM-killed once)" in row, shown
    assert ps(stack)[0]["oom_kills"] == 1


@needs_cgroups
def test_an_adopted_instance_stays_in_its_cgroup_and_down_removes_it(stack: Path) -> None:
    assert run_sqlifier("up", "--detach", cwd=stack).returncode == 0
    (instance,) = ps(stack)
    folder = group_folder(stack, instance)
    assert (folder / "cgroup.procs").read_text().split()[0] == str(instance["pid"])

    kill_agent(stack)
    again = run_sqlifier("up", "--detach", cwd=stack)
    assert again.returncode == 0, again.stderr
    (adopted,) = ps(stack)
    assert adopted["pid"] == instance["pid"]
    assert str(instance["pid"]) in (folder / "cgroup.procs").read_text().split()

    assert run_sqlifier("down", cwd=stack).returncode == 0
    assert not psutil.pid_exists(int(str(instance["pid"])))
    assert not folder.exists() and not folder.parent.exists()
