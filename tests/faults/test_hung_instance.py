"""A hung instance (SIGSTOP) does not hang requests: with both data planes, requests sent
to it are tried again on the other instance once its first-byte timeout passes, and it
is taken out of the rotation.

Real processes: the data plane as the agent starts it (and HAProxy), two instances of a
small HTTP service, closed-loop clients on loopback. The stack file's `timeouts` keys
are read by the real reader.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlifier.stack.stackfile import load_stack
from tests.apps import APP
from tests.load import Load
from tests.router.test_dataplanes import ROUTES, Plane, backend
from tests.servers import KINDS, free_port


@pytest.fixture
def instances() -> Iterator[list[tuple[subprocess.Popen[bytes], int]]]:
    started = []
    for index in range(2):
        port = free_port()
        env = {**os.environ, "PORT": str(port), "INSTANCE": f"web-{index}"}
        process = subprocess.Popen([sys.executable, "-c", APP], env=env, stdout=subprocess.PIPE)
        assert process.stdout is not None
        assert process.stdout.readline().startswith(b"INFO listening")
        started.append((process, port))
    try:
        yield started
    finally:
        for process, _ in started:
            process.kill()
            process.wait()
            assert process.stdout is not None
            process.stdout.close()


def _answers_after(load: Load, count: int, bound: float = 15) -> bool:
    """Whether `count` more answers came (within `bound` seconds: a hang is a failure)."""
    goal = len(load.answers) + count
    deadline = time.monotonic() + bound
    while len(load.answers) < goal:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.parametrize("kind", KINDS)
def test_requests_sent_to_a_stopped_instance_are_answered_by_the_other(
    kind: str, tmp_path: Path, instances: list[tuple[subprocess.Popen[bytes], int]]
) -> None:
    plane = Plane(kind, tmp_path / "state")
    plane.start()
    try:
        timeouts = {"connect": 1.0, "first_byte": 0.5, "idle": 5.0}
        plane.sync(
            {"web": ROUTES["web"]},
            {
                "web": {
                    "backends": [
                        backend(f"web-{i}", port) for i, (_, port) in enumerate(instances)
                    ],
                    "timeouts": timeouts,
                }
            },
        )
        with Load(plane.port, clients=4) as load:
            assert _answers_after(load, 100)
            os.kill(instances[1][0].pid, signal.SIGSTOP)
            assert _answers_after(load, 200), f"requests hang: {load.outcomes}"
        assert set(load.outcomes) == {"200"}, load.outcomes
        stats = plane.call({"op": "stats"})["backends"]
        assert stats[f"web-1_{instances[1][1]}"]["ejected"] is True
    finally:
        os.kill(instances[1][0].pid, signal.SIGCONT)
        plane.stop()


def test_timeouts_are_read_from_the_stack_file(tmp_path: Path) -> None:
    (tmp_path / "sqlifier.toml").write_text(
        '[stack]\nname = "shop"\n[services.web]\nrun = "python -m web"\nroutes = ["/"]\n'
        '[services.web.timeouts]\nfirst_byte = "500ms"\nidle = "2m"\n'
    )
    stack, diagnostics = load_stack(tmp_path / "sqlifier.toml")
    assert diagnostics == []
    web = stack.services["web"]
    assert (web.timeouts.connect, web.timeouts.first_byte, web.timeouts.idle) == (5.0, 0.5, 120.0)
