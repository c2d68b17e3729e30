"""Locks per service and environment as Leases, against a real API server."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from sqlifier.delivery.locks import Locked, LockInfo
from sqlifier.errors import UserError
from sqlifier.platform.kubernetes.api import Cluster as Connection
from sqlifier.platform.kubernetes.locks import (
    LOCK_SECONDS,
    LeaseLock,
    LockLost,
    describe,
    force_release,
    held_locks,
    read_lock,
)
from tests.k8s.fixtures import Cluster
from tests.platform.kubernetes.records import ENV, STACK, Clock, connection, lease, put_lease


@pytest.fixture
def conn(cluster: Cluster, namespace: str) -> Iterator[Connection]:
    yield from connection(cluster, namespace)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def lock(
    conn: Connection, clock: Clock, service: str = "checkout", user: str = "alice"
) -> LeaseLock:
    return LeaseLock(conn, STACK, ENV, service, "deploy", user, "v2", "fix checkout", clock=clock)


def test_acquire_writes_holder_reason_and_since_on_the_lease(
    conn: Connection, clock: Clock
) -> None:
    assert lock(conn, clock).acquire() is None
    info = read_lock(conn, ENV, "checkout", clock())
    assert info is not None
    assert (info.service, info.env, info.user, info.what, info.version, info.reason) == (
        "checkout", ENV, "alice", "deploy", "v2", "fix checkout",
    )  # fmt: skip
    assert info.since == pytest.approx(clock())
    assert not info.stale
    spec = lease(conn, "sqlifier-lock-checkout")["spec"]
    assert spec["leaseDurationSeconds"] == LOCK_SECONDS
    assert spec["holderIdentity"].startswith("alice@")


def test_a_held_lock_refuses_another_naming_its_holder(conn: Connection, clock: Clock) -> None:
    lock(conn, clock).acquire()
    with pytest.raises(Locked, match=r"locked by alice .*\(deploy v2: fix checkout\)") as e:
        lock(conn, clock, user="bob").acquire()
    assert e.value.info.user == "alice"


def test_locks_are_per_service_never_global(conn: Connection, clock: Clock) -> None:
    lock(conn, clock, "checkout").acquire()
    lock(conn, clock, "payments", user="bob").acquire()
    assert [(i.service, i.user) for i in held_locks(conn, STACK, ENV, clock())] == [
        ("checkout", "alice"),
        ("payments", "bob"),
    ]
    assert held_locks(conn, STACK, "staging", clock()) == []


def test_of_processes_racing_for_a_free_lock_exactly_one_wins(
    conn: Connection, clock: Clock
) -> None:
    won: list[str] = []
    lost: list[LockInfo] = []
    start = threading.Barrier(6)

    def race(user: str) -> None:
        start.wait()
        try:
            lock(conn, clock, user=user).acquire()
            won.append(user)
        except Locked as e:
            lost.append(e.info)

    threads = [threading.Thread(target=race, args=(f"user{n}",)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    assert len(lost) == 5
    assert {info.user for info in lost} == set(won)


def test_replacing_a_stale_lease_read_before_someone_else_took_it_loses(
    conn: Connection, clock: Clock
) -> None:
    """The resourceVersion makes the replacement conditional: a 409 is told as Locked."""
    lock(conn, clock, user="old").acquire()
    clock.advance(LOCK_SECONDS)
    seen = lease(conn, "sqlifier-lock-checkout")  # what a slow contender read
    lock(conn, clock, user="alice").acquire()  # the fast one takes the stale lock
    slow = lock(conn, clock, user="bob")
    body = slow._lease(clock(), 1)
    body["metadata"]["resourceVersion"] = seen["metadata"]["resourceVersion"]
    with pytest.raises(Locked, match="locked by alice"):
        slow._put(body, lost_to_someone=True)
    assert read_lock(conn, ENV, "checkout", clock()).user == "alice"  # type: ignore[union-attr]


def test_a_lock_not_renewed_for_its_duration_is_stale_and_taken_over(
    conn: Connection, clock: Clock
) -> None:
    old = lock(conn, clock, user="old")
    old.acquire()
    clock.advance(LOCK_SECONDS - 0.1)
    assert not read_lock(conn, ENV, "checkout", clock()).stale  # type: ignore[union-attr]
    clock.advance(0.1)
    info = read_lock(conn, ENV, "checkout", clock())
    assert info is not None and info.stale
    assert "stale: not renewed for 15 s" in describe(info, ENV)
    assert "lock release checkout --env production --force" in describe(info, ENV)
    replaced = lock(conn, clock, user="alice").acquire()
    assert replaced is not None and replaced.user == "old" and replaced.stale
    assert read_lock(conn, ENV, "checkout", clock()).user == "alice"  # type: ignore[union-attr]
    with pytest.raises(LockLost, match="alice holds it now"):
        old.renew()


def test_renewing_keeps_a_lock_from_going_stale(conn: Connection, clock: Clock) -> None:
    held = lock(conn, clock)
    held.acquire()
    for _ in range(4):
        clock.advance(LOCK_SECONDS - 1)
        held.renew()
    with pytest.raises(Locked):
        lock(conn, clock, user="bob").acquire()


def test_release_deletes_only_a_lease_still_ours(conn: Connection, clock: Clock) -> None:
    mine = lock(conn, clock)
    mine.acquire()
    mine.release()
    assert read_lock(conn, ENV, "checkout", clock()) is None
    mine.acquire()
    clock.advance(LOCK_SECONDS)
    lock(conn, clock, user="bob").acquire()
    mine.release()  # it is bob's now
    assert read_lock(conn, ENV, "checkout", clock()).user == "bob"  # type: ignore[union-attr]


def test_a_lease_whose_holder_was_changed_by_hand_is_lost_at_the_next_renewal(
    conn: Connection, clock: Clock
) -> None:
    mine = lock(conn, clock)
    mine.acquire()
    body = lease(conn, "sqlifier-lock-checkout")
    body["spec"]["holderIdentity"] = "mallory@elsewhere/1"
    put_lease(conn, body)
    with pytest.raises(LockLost, match="no longer ours"):
        mine.renew()


def test_force_release_breaks_a_stale_lock_and_records_it(conn: Connection, clock: Clock) -> None:
    lock(conn, clock, user="old").acquire()
    clock.advance(LOCK_SECONDS)
    said: list[str] = []
    broken = force_release(conn, ENV, "checkout", clock(), lambda r, _i: said.append(r))
    assert broken.user == "old"
    assert said == ["ok: broke the stale lock of old (deploy v2: fix checkout)"]
    assert read_lock(conn, ENV, "checkout", clock()) is None


def test_force_release_refuses_a_lock_still_renewed_without_a_second_flag(
    conn: Connection, clock: Clock
) -> None:
    lock(conn, clock).acquire()
    said: list[str] = []
    with pytest.raises(UserError, match=r"--even-if-alive"):
        force_release(conn, ENV, "checkout", clock(), lambda r, _i: said.append(r))
    assert said == ["refused: deploy by alice, renewed within 15 s"]
    force_release(conn, ENV, "checkout", clock(), lambda r, _i: said.append(r), alive_ok=True)
    assert said[-1] == "ok: broke the live lock of alice (deploy v2: fix checkout)"


def test_force_release_of_a_free_lock_says_so(conn: Connection, clock: Clock) -> None:
    said: list[str] = []
    with pytest.raises(UserError, match="checkout in production is not locked"):
        force_release(conn, ENV, "checkout", clock(), lambda r, _i: said.append(r))
    assert said == ["refused: not locked"]
