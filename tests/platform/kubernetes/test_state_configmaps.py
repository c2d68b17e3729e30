"""The agent's state kept in ConfigMaps, written only by the leader (fenced), against a
real API server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sqlifier.engine.machine import Engine
from sqlifier.engine.persist import load_state, save_state
from sqlifier.platform.kubernetes.api import Cluster as Connection
from sqlifier.platform.kubernetes.apply import owned
from sqlifier.platform.kubernetes.leader import LEASE_SECONDS, RETRY, Elector, NotLeader
from sqlifier.platform.kubernetes.state import ENGINE_KEY, ClusterState, deploy_key
from tests.engine.test_persist import HOT, World, compiled, fired_at
from tests.k8s.fixtures import Cluster
from tests.platform.kubernetes.records import ENV, STACK, Clock, connection

# What engine/persist.py saves: pending windows (held), cooldowns, the action budget, the
# releases already rolled back from; and a deploy's record.
ENGINE = {
    "paused_all": False,
    "paused": ["nightly"],
    "budget": {"checkout": [1_800_000_000.5, 1_800_000_010.0]},
    "budget_told": [],
    "scaled_up": {"checkout": 1_800_000_000.5},
    "rolled_back": [["payment-gateway", "v7"]],
    "rules": [
        {
            "rule": "scale_up",
            "service": "image-processor-svc",
            "text": "ON high_cpu(>80%) FOR 3m DO SCALE service.name TO instances + 2 LIMIT 20;",
            "held": {"0": 1_799_999_910.0},
            "restart": None,
            "cooldown_until": 1_800_000_300.0,
            "last_fired": 1_799_999_000.0,
            "running": False,
        }
    ],
}
DEPLOY = {"id": "d-42", "service": "checkout", "state": "canary", "step": 1, "weight": 10}


@pytest.fixture
def conn(cluster: Cluster, namespace: str) -> Iterator[Connection]:
    yield from connection(cluster, namespace)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def elect(conn: Connection, clock: Clock, name: str) -> Elector:
    elector = Elector(conn, STACK, ENV, name, clock=clock)
    elector.tick()
    return elector


def state(conn: Connection, clock: Clock, elector: Elector) -> ClusterState:
    return ClusterState(conn, STACK, ENV, elector.fence, clock=clock)


def configmap(conn: Connection, name: str) -> Any:
    resource = conn.resource("v1", "ConfigMap")
    return conn.request("GET", resource.path(conn.namespace, name), verb="get", what=name)


def test_what_the_leader_saves_is_read_back_the_same(conn: Connection, clock: Clock) -> None:
    store = state(conn, clock, elect(conn, clock, "a"))
    store.save("engine", ENGINE)
    store.save("deploy-d-42", DEPLOY)
    assert store.load("engine") == ENGINE
    assert store.load("deploy-d-42") == DEPLOY
    assert store.load("deploy-d-43") is None
    assert store.keys() == ["deploy-d-42", "engine"]
    assert store.keys("deploy-") == ["deploy-d-42"]


def test_a_save_replaces_the_document_and_carries_the_leaders_term(
    conn: Connection, clock: Clock
) -> None:
    store = state(conn, clock, elect(conn, clock, "a"))
    store.save("deploy-d-42", DEPLOY)
    store.save("deploy-d-42", {**DEPLOY, "step": 2, "weight": 50})
    assert store.load("deploy-d-42") == {**DEPLOY, "step": 2, "weight": 50}
    notes = configmap(conn, "sqlifier-state-deploy-d-42")["metadata"]["annotations"]
    assert notes == {"sqlifier.dev/leader": "a", "sqlifier.dev/term": "1"}


def test_a_follower_cannot_save(conn: Connection, clock: Clock) -> None:
    elect(conn, clock, "a")
    follower = elect(conn, clock, "b")
    with pytest.raises(NotLeader, match="agent b is not the leader of production"):
        state(conn, clock, follower).save("engine", ENGINE)
    assert state(conn, clock, follower).load("engine") is None


def test_a_deposed_leader_that_still_believes_it_leads_cannot_save(
    conn: Connection, clock: Clock
) -> None:
    """Fencing: its own elector (paused, never ticked) still says it leads; the Lease does
    not, and the write is refused."""
    old = elect(conn, clock, "a")
    clock.advance(LEASE_SECONDS + RETRY)
    new = elect(conn, clock, "b")
    assert new.leading
    clock.advance(-(LEASE_SECONDS + RETRY))  # a's clock: it thinks no time has passed
    assert old.leading
    with pytest.raises(NotLeader, match=r"no longer the leader of production: .* names b"):
        state(conn, clock, old).save("engine", ENGINE)


def test_a_late_write_of_a_deposed_leader_is_refused_once_the_new_one_claimed(
    conn: Connection, clock: Clock
) -> None:
    old = elect(conn, clock, "a")
    state(conn, clock, old).save("engine", ENGINE)
    term = old.fence()  # the old leader's last Lease check passes here, then it pauses
    clock.advance(LEASE_SECONDS + RETRY)
    new = elect(conn, clock, "b")
    assert state(conn, clock, new).claim() == 1
    stamped = configmap(conn, "sqlifier-state-engine")["metadata"]["annotations"]
    assert stamped == {"sqlifier.dev/leader": "b", "sqlifier.dev/term": "2"}
    # The old leader passed its Lease check before the takeover and writes only now:
    late = state(conn, clock, old)
    with pytest.raises(NotLeader, match=r"written by a newer leader \(b, term 2\)"):
        late._write("engine", term, {"state.json": "{}"})
    assert state(conn, clock, new).load("engine") == ENGINE


def test_the_new_leader_continues_from_the_old_ones_state(conn: Connection, clock: Clock) -> None:
    old = elect(conn, clock, "a")
    state(conn, clock, old).save("engine", ENGINE)
    state(conn, clock, old).save("deploy-d-42", DEPLOY)
    clock.advance(LEASE_SECONDS + RETRY)
    new = state(conn, clock, elect(conn, clock, "b"))
    new.claim()
    assert new.load("engine") == ENGINE
    assert new.load("deploy-d-42") == DEPLOY
    new.save("deploy-d-42", {**DEPLOY, "step": 2})
    new.delete("engine")
    assert new.keys() == ["deploy-d-42"]


def test_up_and_down_never_remove_the_state(conn: Connection, clock: Clock) -> None:
    state(conn, clock, elect(conn, clock, "a")).save("engine", ENGINE)
    owner = {"sqlifier.dev/stack": STACK, "sqlifier.dev/env": ENV}
    assert list(owned(conn, owner)) == []


def test_a_document_edited_into_something_else_is_named(conn: Connection, clock: Clock) -> None:
    store = state(conn, clock, elect(conn, clock, "a"))
    store.save("engine", ENGINE)
    body = configmap(conn, "sqlifier-state-engine")
    body["data"]["state.json"] = "{not json"
    resource = conn.resource("v1", "ConfigMap")
    conn.request(
        "PUT", resource.path(conn.namespace, "sqlifier-state-engine"), verb="update",
        what="engine", body=body,
    )  # fmt: skip
    with pytest.raises(Exception, match=r"sqlifier-state-engine: data\['state.json'\] is not JSON"):
        store.load("engine")


def test_a_rules_window_half_elapsed_survives_a_failover(conn: Connection, clock: Clock) -> None:
    """HOT holds for 30 s before it acts: the old leader saw 15 s of it, the new one acts
    after the other 15 s, not after 30 s more."""
    world = World()
    before = Engine(compiled(HOT))
    old = elect(conn, clock, "a")
    assert fired_at(before, world, 0, 15) == []
    state(conn, clock, old).save(ENGINE_KEY, {"saved_at": 14.0, "engine": save_state(before)})
    clock.advance(LEASE_SECONDS + RETRY)  # the old leader dies; the other takes over
    store = state(conn, clock, elect(conn, clock, "b"))
    store.claim()
    saved = store.load(ENGINE_KEY)
    assert saved is not None
    after = Engine(compiled(HOT))
    load_state(after, saved["engine"], now=31.0, saved_at=saved["saved_at"])
    assert fired_at(after, world, 31, 70) == [31]


def test_a_deploys_record_is_kept_under_its_id(conn: Connection, clock: Clock) -> None:
    store = state(conn, clock, elect(conn, clock, "a"))
    store.save(deploy_key("d1f2e3a4b"), DEPLOY)
    assert store.keys("deploy-") == ["deploy-d1f2e3a4b"]
    assert store.load(deploy_key("d1f2e3a4b")) == DEPLOY
