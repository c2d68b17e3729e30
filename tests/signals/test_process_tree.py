"""An instance's process tree on Linux, read from its own processes: each thread's
`/proc/<pid>/task/<tid>/children`, never a scan of every process on the machine (a third
of the agent's CPU with 50 instances on a machine running some 200 processes)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
import pytest

from sqlifier.signals import samplers
from sqlifier.signals.samplers import PROC_CHILDREN, ProcessSampler, _child_pids

pytestmark = pytest.mark.skipif(not PROC_CHILDREN, reason="Linux's /proc children files")

# A parent that starts one child from its main thread and one from a second thread, then
# (with `end`) lets that thread end while its child lives on.
PARENT = """
import subprocess, sys, threading, time
sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
kids = [subprocess.Popen(sleeper)]
def start():
    kids.append(subprocess.Popen(sleeper))
    if "end" not in sys.argv:
        time.sleep(120)
threading.Thread(target=start, daemon=True).start()
while len(kids) < 2:
    time.sleep(0.01)
print("ready", flush=True)
time.sleep(120)
"""


@contextmanager
def parent(*args: str) -> Iterator[psutil.Process]:
    with subprocess.Popen(
        [sys.executable, "-c", PARENT, *args], stdout=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            assert process.stdout.readline() == "ready\n"
            yield psutil.Process(process.pid)
        finally:
            for child in psutil.Process(process.pid).children(recursive=True):
                child.kill()
            process.kill()


@pytest.mark.parametrize("args", [(), ("end",)], ids=["thread-alive", "thread-ended"])
def test_children_started_by_any_thread_are_found(args: tuple[str, ...]) -> None:
    with parent(*args) as process:
        if args:  # the thread that started the second child has ended
            deadline = time.monotonic() + 30
            while process.num_threads() > 1 and time.monotonic() < deadline:
                time.sleep(0.05)
        expected = sorted(child.pid for child in process.children())
        assert len(expected) == 2
        assert sorted(_child_pids(process.pid)) == expected


def test_a_process_that_is_gone_has_no_children() -> None:
    assert _child_pids(2**22 + 1) == []


def test_sampling_trees_reads_no_other_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """psutil.process_iter (every process on the machine) is replaced by a function that
    fails: the sampler must not need it."""

    def every_process(*args: object, **kwargs: object) -> None:
        raise AssertionError("the sampler scanned every process")

    monkeypatch.setattr(samplers.psutil, "process_iter", every_process)
    with parent() as process:
        sampler = ProcessSampler()
        sampler.sample({"web-0": process.pid}, time.monotonic())
        tree = sampler._trees["web-0"]
        assert sorted(pid for pid, _ in tree.processes) == sorted(
            [process.pid, *(child.pid for child in process.children())]
        )
