"""Locks per service and environment, between real processes: who holds one and why,
waiting for it, stale locks of killed holders and breaking them, and races."""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path
from typing import Any

import psutil
import pytest

from sqlifier.delivery.locks import (
    Locked,
    LockInfo,
    ServiceLock,
    force_release,
    held_locks,
    read_lock,
)
from sqlifier.errors import UserError
from sqlifier.store.audit import AuditLog

DEADLINE = 60.0  # only stops a test that would hang
HOST = os.uname().nodename

# A process that takes a lock, says "held", and releases it when it reads a line.
HOLDER = """
import sys
from pathlib import Path
from sqlifier.delivery.locks import ServiceLock
state, env, service = sys.argv[1:4]
lock = ServiceLock(Path(state), env, service, "deploy", "alice", "v2", "fix checkout")
lock.acquire()
print("held", flush=True)
sys.stdin.readline()
lock.release()
print("released", flush=True)
"""

# A process that waits for a lock, says when it has it, and releases it.
WAITER = """
import sys
from pathlib import Path
from sqlifier.delivery.locks import ServiceLock
lock = ServiceLock(Path(sys.argv[1]), "production", "web", "rollback", "bob")
print("waiting", flush=True)
lock.acquire(wait=60)
print("acquired", flush=True)
lock.release()
"""


class Holder:
    """Another process holding a service's lock until told to let go, or killed."""

    def __init__(self, state: Path, service: str = "web", env: str = "production") -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(state), env, service],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.line() == "held"

    @property
    def pid(self) -> int:
        return self.process.pid

    def line(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def release(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        assert self.line() == "released"
        assert self.process.wait(DEADLINE) == 0

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(DEADLINE)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[Callable[..., Holder]]:
    """Start holders in other processes; none outlives the test."""
    started: list[Holder] = []

    def start(service: str = "web", env: str = "production") -> Holder:
        started.append(Holder(tmp_path, service, env))
        return started[-1]

    yield start
    for one in started:
        one.close()


def lock(
    state: Path, service: str = "web", user: str = "bob", env: str = "production"
) -> ServiceLock:
    return ServiceLock(state, env, service, "deploy", user, "v3", "new search")


def stamp(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def eventually(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def info(**changes: Any) -> LockInfo:
    fields: dict[str, Any] = {
        "service": "web",
        "env": "production",
        "user": "alice",
        "pid": 1234,
        "started": 0.0,
        "since": dt.datetime(2026, 11, 26, 10, 0, 3, tzinfo=dt.UTC).timestamp(),
        "what": "deploy",
        "version": "v2",
        "reason": "fix checkout",
        "host": HOST,
    }
    return LockInfo(**(fields | changes))


@pytest.mark.parametrize(
    ("changes", "described"),
    [
        ({}, "locked by alice since 2026-11-26 10:00:03Z (deploy v2: fix checkout)"),
        ({"version": None}, "locked by alice since 2026-11-26 10:00:03Z (deploy: fix checkout)"),
        ({"reason": ""}, "locked by alice since 2026-11-26 10:00:03Z (deploy v2)"),
        (
            {"what": "rollback", "version": None, "reason": ""},
            "locked by alice since 2026-11-26 10:00:03Z (rollback)",
        ),
        (
            {"host": "build-2"},
            "locked by alice on build-2 since 2026-11-26 10:00:03Z (deploy v2: fix checkout)",
        ),
        (
            {"stale": True},
            "locked by alice since 2026-11-26 10:00:03Z (deploy v2: fix checkout) — stale: its "
            "process 1234 has ended; sqlifier lock release web --env production --force breaks it",
        ),
    ],
)
def test_a_lock_describes_who_holds_it_since_when_and_why(
    changes: dict[str, Any], described: str
) -> None:
    assert info(**changes).describe() == described


def test_a_lock_is_recorded_while_held_and_gone_once_released(tmp_path: Path) -> None:
    service_lock = lock(tmp_path)
    with service_lock:
        held = read_lock(tmp_path, "production", "web")
        assert held == service_lock.info
        assert held is not None
        assert (held.user, held.what, held.version, held.reason) == (
            "bob",
            "deploy",
            "v3",
            "new search",
        )
        assert (held.pid, held.stale) == (os.getpid(), False)
        assert (tmp_path / "locks" / "web.lock").is_file()
    assert read_lock(tmp_path, "production", "web") is None
    assert os.listdir(tmp_path / "locks") == []


def test_a_second_deploy_is_refused_with_who_since_when_and_why(
    tmp_path: Path, holder: Callable[..., Holder]
) -> None:
    first = holder()
    with pytest.raises(Locked) as refused:
        lock(tmp_path).acquire()
    since = refused.value.info.since
    assert str(refused.value) == f"locked by alice since {stamp(since)} (deploy v2: fix checkout)"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", stamp(since))
    assert (refused.value.info.pid, refused.value.info.stale) == (first.pid, False)
    assert isinstance(refused.value, UserError)  # exit code 1


def test_a_waiting_deploy_gets_the_lock_once_its_holder_releases(tmp_path: Path) -> None:
    mine = lock(tmp_path)
    mine.acquire()
    with subprocess.Popen(
        [sys.executable, "-c", WAITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    ) as waiter:
        assert waiter.stdout is not None
        assert waiter.stdout.readline() == "waiting\n"
        # Asleep between two looks at the lock: it found it held, and waits.
        eventually(lambda: psutil.Process(waiter.pid).status() == psutil.STATUS_SLEEPING)
        assert waiter.poll() is None
        mine.release()
        assert waiter.stdout.readline() == "acquired\n"
        assert waiter.wait(DEADLINE) == 0


def test_a_wait_gives_up_after_its_time(tmp_path: Path, holder: Callable[..., Holder]) -> None:
    holder()
    began = time.monotonic()
    with pytest.raises(Locked, match=r"^locked by alice since "):
        lock(tmp_path).acquire(wait=0.3)
    assert 0.3 <= time.monotonic() - began < DEADLINE


def test_two_services_lock_in_parallel_and_each_environment_apart(
    tmp_path: Path, holder: Callable[..., Holder]
) -> None:
    holder("web")
    with lock(tmp_path, "api"), lock(tmp_path / "staging", "web", env="staging"):
        held = held_locks(tmp_path, "production")
        assert [(i.service, i.user) for i in held] == [("api", "bob"), ("web", "alice")]
        assert [i.service for i in held_locks(tmp_path / "staging", "staging")] == ["web"]


def test_a_killed_holder_leaves_a_stale_lock_refused_until_forced(
    tmp_path: Path, holder: Callable[..., Holder]
) -> None:
    dead = holder()
    dead.kill()
    stale = read_lock(tmp_path, "production", "web")
    assert stale is not None
    assert (stale.pid, stale.stale) == (dead.pid, True)
    began = time.monotonic()
    with pytest.raises(Locked) as refused:
        lock(tmp_path).acquire(wait=DEADLINE)  # nothing would release it: no wait
    assert time.monotonic() - began < DEADLINE / 2
    assert str(refused.value) == (
        f"locked by alice since {stamp(stale.since)} (deploy v2: fix checkout) — stale: its "
        f"process {dead.pid} has ended; sqlifier lock release web --env production --force "
        "breaks it"
    )
    audit = AuditLog(tmp_path / "audit.db")
    assert force_release(tmp_path, "production", "web", "carol", audit) == stale
    [entry] = audit.entries()
    assert (entry.who, entry.what, entry.target) == (
        "carol",
        "lock release --force",
        "production/web",
    )
    assert entry.result == (
        f"ok: broke the stale lock of alice (deploy v2: fix checkout), process {dead.pid}"
    )
    assert entry.service == "web"
    assert entry.details is not None
    assert (entry.details["pid"], entry.details["what"]) == (dead.pid, "deploy")
    with lock(tmp_path):
        assert read_lock(tmp_path, "production", "web") is not None


def test_forcing_a_live_holders_lock_needs_alive_ok(
    tmp_path: Path, holder: Callable[..., Holder]
) -> None:
    live = holder()
    audit = AuditLog(tmp_path / "audit.db")
    with pytest.raises(UserError) as refused:
        force_release(tmp_path, "production", "web", "carol", audit)
    assert str(refused.value).startswith("web in production is locked by alice since ")
    assert str(refused.value).endswith(
        f"its process {live.pid} is still running: let it finish or stop it; breaking the "
        "lock of a live process needs a second confirmation"
    )
    with pytest.raises(Locked):
        lock(tmp_path).acquire()
    broken = force_release(tmp_path, "production", "web", "carol", audit, alive_ok=True)
    assert (broken.pid, broken.stale) == (live.pid, False)
    assert [e.result for e in audit.entries()] == [
        f"refused: deploy by alice, process {live.pid} is still running",
        f"ok: broke the live lock of alice (deploy v2: fix checkout), process {live.pid}",
    ]
    with lock(tmp_path) as mine:
        live.release()  # the old holder lets go of what it had: not of ours
        assert read_lock(tmp_path, "production", "web") == mine.info


def test_forcing_a_free_lock_is_refused(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.db")
    with pytest.raises(UserError, match=r"^web in production is not locked$"):
        force_release(tmp_path, "production", "web", "carol", audit)
    assert [e.result for e in audit.entries()] == ["refused: not locked"]


def test_a_lock_is_not_reentrant(tmp_path: Path) -> None:
    mine = lock(tmp_path)
    with mine:
        with pytest.raises(RuntimeError, match="locks are not re-entrant"):
            mine.acquire()
        began = time.monotonic()
        with pytest.raises(Locked) as refused:
            lock(tmp_path, user="bob").acquire(wait=DEADLINE)  # a wait could only time out
        assert time.monotonic() - began < DEADLINE / 2
        assert str(refused.value).endswith(
            "(deploy v3: new search) — by this same process: locks are not re-entrant"
        )
    with mine:  # taken again once released
        pass


def test_an_agent_task_waits_for_another_tasks_lock(tmp_path: Path) -> None:
    async def scenario() -> list[str]:
        done: list[str] = []
        rollout = lock(tmp_path, user="rollout")
        await rollout.acquire_async()

        async def rule_action() -> None:
            async with ServiceLock(tmp_path, "production", "web", "rule cpu", "agent", wait=60):
                done.append("rule acted")

        action = asyncio.create_task(rule_action())
        await asyncio.sleep(0)  # the action has looked once, found the lock held, waits
        assert not action.done()
        done.append("rollout done")
        rollout.release()
        await asyncio.wait_for(action, DEADLINE)
        return done

    assert asyncio.run(scenario()) == ["rollout done", "rule acted"]
    assert read_lock(tmp_path, "production", "web") is None


def test_an_agent_gives_up_on_a_held_lock_without_waiting(
    tmp_path: Path, holder: Callable[..., Holder]
) -> None:
    holder()
    with pytest.raises(Locked, match=r"\(deploy v2: fix checkout\)$"):
        asyncio.run(lock(tmp_path).acquire_async())


def test_a_lock_file_that_is_not_a_record_is_reported(tmp_path: Path) -> None:
    (tmp_path / "locks").mkdir()
    (tmp_path / "locks" / "web.lock").write_text("{")
    with pytest.raises(UserError, match=r"web\.lock is not a lock record .* delete the file$"):
        lock(tmp_path).acquire()


@pytest.mark.parametrize("name", ["../web", ".web", "", "a/b"])
def test_a_service_name_cannot_escape_the_locks_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(UserError, match="not a service name"):
        read_lock(tmp_path, "production", name)


# The races, between processes started together (spawn: nothing inherited by accident).
SPAWN = multiprocessing.get_context("spawn")
RACERS = 6


def _try_once(state: str, start: Barrier, done: Event, results: Any) -> None:
    mine = lock(Path(state))
    start.wait(DEADLINE)
    try:
        mine.acquire()
    except Locked as refused:
        results.put(("lost", refused.info.pid))
        return
    results.put(("won", os.getpid()))
    done.wait(DEADLINE)
    mine.release()


def _take_turns(state: str, journal: str, rounds: int, start: Barrier) -> None:
    me = os.getpid()
    mine = ServiceLock(Path(state), "production", "web", "deploy", f"worker {me}", wait=DEADLINE)
    start.wait(DEADLINE)
    for _ in range(rounds):
        with mine:
            fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:  # one line at a time, so another process inside would interleave
                os.write(fd, f"in {me}\n".encode())
                for _ in range(20):
                    os.write(fd, f"work {me}\n".encode())
                os.write(fd, f"out {me}\n".encode())
            finally:
                os.close(fd)


def test_of_processes_racing_for_a_free_lock_exactly_one_wins(tmp_path: Path) -> None:
    start, done, results = SPAWN.Barrier(RACERS), SPAWN.Event(), SPAWN.Queue()
    racers = [
        SPAWN.Process(target=_try_once, args=(str(tmp_path), start, done, results))
        for _ in range(RACERS)
    ]
    for racer in racers:
        racer.start()
    outcomes = [results.get(timeout=DEADLINE) for _ in racers]
    done.set()
    for racer in racers:
        racer.join(DEADLINE)
        assert racer.exitcode == 0
        racer.close()
    results.close()
    results.join_thread()
    [winner] = [pid for outcome, pid in outcomes if outcome == "won"]
    assert sorted(outcomes) == [("lost", winner)] * (RACERS - 1) + [("won", winner)]
    assert read_lock(tmp_path, "production", "web") is None


def test_processes_taking_turns_never_overlap(tmp_path: Path) -> None:
    rounds = 8
    journal = tmp_path / "journal"
    start = SPAWN.Barrier(RACERS)
    workers = [
        SPAWN.Process(target=_take_turns, args=(str(tmp_path), str(journal), rounds, start))
        for _ in range(RACERS)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(DEADLINE)
        assert worker.exitcode == 0
        worker.close()
    lines = journal.read_text().splitlines()
    turns = 0
    while lines:
        who = lines[0].removeprefix("in ")
        turn, lines = lines[:22], lines[22:]
        assert turn == [f"in {who}", *[f"work {who}"] * 20, f"out {who}"]
        turns += 1
    assert turns == RACERS * rounds
    assert read_lock(tmp_path, "production", "web") is None
