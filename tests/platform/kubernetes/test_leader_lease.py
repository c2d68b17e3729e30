"""Leader election with a Lease: two electors in one process against a real API server, on
a clock the test moves (no waiting but the API's own round trips)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlifier.platform.kubernetes.api import Cluster as Connection
from sqlifier.platform.kubernetes.errors import ClusterError
from sqlifier.platform.kubernetes.leader import (
    LEADER_LEASE,
    LEASE_SECONDS,
    RENEW_DEADLINE,
    RENEW_EVERY,
    RETRY,
    Elector,
    NotLeader,
)
from sqlifier.platform.kubernetes.locks import parse_time
from tests.k8s.fixtures import Cluster
from tests.platform.kubernetes.records import (
    ENV,
    STACK,
    Clock,
    connection,
    lease,
    put_lease,
    unreachable,
)


@pytest.fixture
def conn(cluster: Cluster, namespace: str) -> Iterator[Connection]:
    yield from connection(cluster, namespace)


@pytest.fixture
def clock() -> Clock:
    return Clock()


class Agent:
    """An elector and what it was told: (leading, why) in order."""

    def __init__(self, conn: Connection, clock: Clock, name: str) -> None:
        self.told: list[tuple[bool, str]] = []
        self.elector = Elector(
            conn, STACK, ENV, name, clock=clock, on_change=lambda a, w: self.told.append((a, w))
        )


def run(clock: Clock, agents: list[Agent], until: float, dead: tuple[Agent, ...] = ()) -> None:
    """Tick the live agents in time order up to `until`, as their loops would."""
    live = [a for a in agents if a not in dead]
    wake = {id(a): clock() for a in live}
    while True:
        agent = min(live, key=lambda a: wake[id(a)])
        if wake[id(agent)] > until:
            clock.now = until
            return
        clock.now = max(clock.now, wake[id(agent)])
        try:
            wake[id(agent)] = agent.elector.tick()
        except ClusterError:  # as Elector.run: try again after RETRY
            wake[id(agent)] = clock() + RETRY


def test_of_two_agents_exactly_one_leads(conn: Connection, clock: Clock) -> None:
    a, b = Agent(conn, clock, "a"), Agent(conn, clock, "b")
    run(clock, [a, b], clock() + 60)
    assert a.elector.leading and not b.elector.leading
    assert a.told == [(True, "elected")] and b.told == []
    assert b.elector.holder == "a"
    assert lease(conn, LEADER_LEASE)["spec"]["holderIdentity"] == "a"


def test_the_leader_renews_every_few_seconds(conn: Connection, clock: Clock) -> None:
    a = Agent(conn, clock, "a")
    start = clock()
    run(clock, [a], start + 30)
    renewed = parse_time(lease(conn, LEADER_LEASE)["spec"]["renewTime"])
    assert renewed is not None and start + 30 - RENEW_EVERY <= renewed <= start + 30
    assert a.elector.deadline == pytest.approx(start + 30 + RENEW_DEADLINE, abs=RENEW_EVERY)


def test_when_the_leader_dies_the_other_takes_over_within_lease_duration_and_retry(
    conn: Connection, clock: Clock
) -> None:
    a, b = Agent(conn, clock, "a"), Agent(conn, clock, "b")
    run(clock, [a, b], clock() + 20)
    last_renewal = a.elector._renewed  # a dies now: it renews no more
    died = clock()
    run(clock, [a, b], died + 60, dead=(a,))
    assert b.told == [(True, "took over from a")]
    took = lease(conn, LEADER_LEASE)["spec"]
    assert took["holderIdentity"] == "b" and took["leaseTransitions"] == 2
    taken_at = parse_time(took["acquireTime"])
    assert taken_at is not None
    assert last_renewal + LEASE_SECONDS <= taken_at <= last_renewal + LEASE_SECONDS + RETRY
    assert taken_at - died <= LEASE_SECONDS + RETRY


def test_a_leader_that_cannot_renew_stops_acting_before_anyone_may_take_over(
    cluster: Cluster, namespace: str, conn: Connection, clock: Clock, tmp_path: Path
) -> None:
    a, b = Agent(conn, clock, "a"), Agent(conn, clock, "b")
    run(clock, [a, b], clock() + 3)
    renewed = a.elector._renewed
    a.elector.cluster = unreachable(cluster, namespace, tmp_path)  # its network is cut
    # Both keep ticking; a's renewals fail, b waits for the Lease to expire.
    moments: list[tuple[float, bool, bool]] = []
    while clock() < renewed + LEASE_SECONDS + RETRY:
        run(clock, [a, b], clock() + 0.5)
        moments.append((clock() - renewed, a.elector.leading, b.elector.leading))
    a_stopped = min(t for t, a_leads, _ in moments if not a_leads)
    b_started = min(t for t, _, b_leads in moments if b_leads)
    assert a_stopped <= RENEW_DEADLINE < LEASE_SECONDS <= b_started
    assert not any(a_leads and b_leads for _, a_leads, b_leads in moments)
    assert a.told == [(True, "elected"), (False, "could not renew the Lease within 10 s")]
    with pytest.raises(NotLeader, match="agent a is not the leader of production"):
        a.elector.fence()


def test_leading_ends_at_the_deadline_even_if_the_loop_is_stuck(
    conn: Connection, clock: Clock
) -> None:
    a = Agent(conn, clock, "a")
    a.elector.tick()
    assert a.elector.leading
    clock.advance(RENEW_DEADLINE - 0.01)
    assert a.elector.leading
    clock.advance(0.01)  # no tick: the loop is stuck, the property still says it
    assert not a.elector.leading


def test_a_lease_stolen_by_hand_makes_the_old_leader_step_down(
    conn: Connection, clock: Clock
) -> None:
    a, b = Agent(conn, clock, "a"), Agent(conn, clock, "b")
    run(clock, [a, b], clock() + 6)
    body = lease(conn, LEADER_LEASE)
    body["spec"]["holderIdentity"] = "someone-by-hand"
    put_lease(conn, body)
    run(clock, [a, b], clock() + RENEW_EVERY + 0.1)
    assert a.told[-1] == (False, "the Lease was taken by someone-by-hand")
    assert not a.elector.leading and not b.elector.leading


def test_a_resigning_leader_hands_over_at_once(conn: Connection, clock: Clock) -> None:
    a, b = Agent(conn, clock, "a"), Agent(conn, clock, "b")
    run(clock, [a, b], clock() + 6)
    a.elector.resign()
    assert a.told[-1] == (False, "resigned")
    run(clock, [a, b], clock() + RETRY, dead=(a,))
    assert b.elector.leading
    assert b.told == [(True, "elected")]


def test_each_new_leader_has_a_higher_term(conn: Connection, clock: Clock) -> None:
    a, b = Agent(conn, clock, "a"), Agent(conn, clock, "b")
    run(clock, [a, b], clock() + 1)
    first = a.elector.fence()
    run(clock, [a, b], clock() + 30, dead=(a,))
    second = b.elector.fence()
    assert (first.identity, first.term) == ("a", 1)
    assert (second.identity, second.term) == ("b", 2)


def test_the_live_loop_resigns_when_told_to_stop(conn: Connection, clock: Clock) -> None:
    a = Agent(conn, clock, "a")
    a.elector.tick()
    stopping = asyncio.Event()
    stopping.set()
    asyncio.run(a.elector.run(stopping))
    assert a.told == [(True, "elected"), (False, "resigned")]
    assert lease(conn, LEADER_LEASE)["spec"].get("holderIdentity") is None
