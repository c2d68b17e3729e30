"""The audit log kept in ConfigMaps: hash-chained as the local one, chunked under the
1 MiB a ConfigMap holds, never forked by two writers, verified, against a real API server."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from sqlifier.errors import UserError
from sqlifier.platform.kubernetes.api import Cluster as Connection
from sqlifier.platform.kubernetes.apply import owned
from sqlifier.platform.kubernetes.audit import ClusterAudit
from sqlifier.store.audit import GENESIS, _digest
from tests.k8s.fixtures import Cluster
from tests.platform.kubernetes.records import ENV, STACK, Clock, connection


@pytest.fixture
def conn(cluster: Cluster, namespace: str) -> Iterator[Connection]:
    yield from connection(cluster, namespace)


def log(conn: Connection, chunk_bytes: int | None = None) -> ClusterAudit:
    if chunk_bytes is None:
        return ClusterAudit(conn, STACK, ENV, Clock())
    return ClusterAudit(conn, STACK, ENV, Clock(), chunk_bytes=chunk_bytes)


def configmap(conn: Connection, name: str) -> Any:
    resource = conn.resource("v1", "ConfigMap")
    return conn.request("GET", resource.path(conn.namespace, name), verb="get", what=name)


def replace(conn: Connection, body: Any) -> None:
    resource = conn.resource("v1", "ConfigMap")
    name = body["metadata"]["name"]
    conn.request("PUT", resource.path(conn.namespace, name), verb="update", what=name, body=body)


def fill(audit: ClusterAudit, count: int, start: int = 1) -> None:
    for n in range(start, start + count):
        audit.record("alice", "deploy", f"shop/production/checkout v{n}", "ok", why="fix")


def test_entries_are_chained_with_the_local_logs_hash(conn: Connection) -> None:
    audit = log(conn)
    first = audit.record("alice", "deploy", "shop/production/checkout v2", "ok", why="fix")
    second = audit.record(
        "agent", "scale", "shop/production/web 2 -> 4", "ok", details={"cpu": 0.91}
    )
    assert (first.id, first.prev_hash, second.id, second.prev_hash) == (1, GENESIS, 2, first.hash)
    assert (first.service, second.service) == ("checkout", "web")
    fields = (2, second.at, "agent", "scale", "shop/production/web 2 -> 4", "ok", "", "web",
              '{"cpu":0.91}')  # fmt: skip
    assert second.hash == _digest(fields, first.hash)
    assert log(conn).entries() == [first, second]
    assert log(conn).entries(service="web") == [second]
    assert log(conn).verify().ok


def test_an_empty_log_verifies(conn: Connection) -> None:
    result = log(conn).verify()
    assert (result.ok, result.entries) == (True, 0)


def test_a_tampered_entry_is_found_and_named(conn: Connection) -> None:
    fill(log(conn), 3)
    chunk = configmap(conn, "sqlifier-audit-000001")
    chunk["data"]["000000000002"] = chunk["data"]["000000000002"].replace('"ok"', '"failed"')
    replace(conn, chunk)
    result = log(conn).verify()
    assert not result.ok
    assert result.at_id == 2
    assert result.problem == (
        "entry 2 was changed: its hash does not match "
        f"(ConfigMap {conn.namespace}/sqlifier-audit-000001, key 000000000002)"
    )


def test_a_removed_entry_is_found(conn: Connection) -> None:
    fill(log(conn), 3)
    chunk = configmap(conn, "sqlifier-audit-000001")
    del chunk["data"]["000000000002"]
    replace(conn, chunk)
    result = log(conn).verify()
    assert result.problem is not None
    assert result.problem.startswith("entry 3 does not follow entry 1: entry 2 was removed")


def test_removing_the_last_entry_is_found_by_the_head(conn: Connection) -> None:
    fill(log(conn), 3)
    chunk = configmap(conn, "sqlifier-audit-000001")
    del chunk["data"]["000000000003"]
    replace(conn, chunk)
    result = log(conn).verify()
    assert (result.ok, result.problem) == (
        False,
        "the last entry was removed (the head names entry 3)",
    )


def test_a_full_chunk_is_sealed_and_the_chain_goes_on_in_the_next(conn: Connection) -> None:
    audit = log(conn, chunk_bytes=2048)
    fill(audit, 30)
    sealed = configmap(conn, "sqlifier-audit-000001")
    assert sealed["metadata"]["annotations"]["sqlifier.dev/next-chunk"] == "sqlifier-audit-000002"
    assert sum(len(v) for v in sealed["data"].values()) <= 2048
    entries = log(conn).entries()
    assert [e.id for e in entries] == list(range(1, 31))
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    assert log(conn).verify().ok
    fill(log(conn, chunk_bytes=2048), 2, start=31)  # a new writer finds the newest chunk
    assert [e.id for e in log(conn).entries()][-3:] == [30, 31, 32]


def test_a_chunk_fills_up_to_what_a_configmap_holds(conn: Connection) -> None:
    audit = log(conn)  # the real chunk size: the API server must accept a full chunk
    details = {"analysis": "x" * 40_000}
    for n in range(21):
        audit.record("agent", "canary step", f"shop/production/checkout {n}", "ok", details=details)
    assert configmap(conn, "sqlifier-audit-000002")["data"]
    assert log(conn).verify().ok


def test_a_writer_that_lost_a_race_chains_to_the_winners_entry(conn: Connection) -> None:
    one, two = log(conn), log(conn)
    one.record("alice", "deploy", "shop/production/checkout v1", "ok")
    two.record("bob", "deploy", "shop/production/web v1", "ok")
    # `one` still knows the chunk as it left it: its append is refused (409), read again.
    third = one.record("alice", "deploy", "shop/production/checkout v2", "ok")
    assert third.id == 3
    assert [e.who for e in log(conn).entries()] == ["alice", "bob", "alice"]
    assert log(conn).verify().ok


@pytest.mark.parametrize("chunk_bytes", [None, 1500])
def test_writers_racing_never_fork_the_chain(conn: Connection, chunk_bytes: int | None) -> None:
    start = threading.Barrier(4)

    def write(who: str) -> None:
        audit = log(conn, chunk_bytes)
        start.wait()
        for n in range(8):
            audit.record(who, "scale", f"shop/production/web {n}", "ok")

    threads = [threading.Thread(target=write, args=(f"w{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = log(conn).entries()
    assert [e.id for e in entries] == list(range(1, 33))
    result = log(conn).verify()
    assert (result.ok, result.entries) == (True, 32)


def test_up_and_down_never_remove_the_audit_log(conn: Connection) -> None:
    fill(log(conn), 1)
    assert list(owned(conn, {"sqlifier.dev/stack": STACK, "sqlifier.dev/env": ENV})) == []


def test_an_entry_that_is_no_entry_is_named_and_stops_appending(conn: Connection) -> None:
    fill(log(conn), 2)
    chunk = configmap(conn, "sqlifier-audit-000001")
    chunk["data"]["000000000002"] = "scribbled over"
    replace(conn, chunk)
    result = log(conn).verify()
    assert (result.ok, result.entries, result.at_id) == (False, 2, 2)
    assert result.problem == (
        "entry 000000000002 is not an audit entry "
        f"(ConfigMap {conn.namespace}/sqlifier-audit-000001, key 000000000002)"
    )
    with pytest.raises(UserError, match=r"last entry \(ConfigMap sqlifier-audit-000001, key "):
        fill(log(conn), 1)


def test_a_removed_head_is_said_and_the_next_append_writes_it_again(conn: Connection) -> None:
    writer = log(conn)
    fill(writer, 2)
    resource = conn.resource("v1", "ConfigMap")
    path = resource.path(conn.namespace, "sqlifier-audit-head")
    conn.request("DELETE", path, verb="delete", what="head")
    result = log(conn).verify()
    assert (result.ok, result.entries) == (False, 2)
    assert result.problem == (
        f"ConfigMap {conn.namespace}/sqlifier-audit-head is missing: the removal of the last "
        "entries cannot be ruled out"
    )
    fill(writer, 1, start=3)  # the writer remembers the head it wrote: its patch finds none
    assert configmap(conn, "sqlifier-audit-head")["data"]["id"] == "3"
    assert log(conn).verify().ok
