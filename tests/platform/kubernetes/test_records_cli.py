"""`sqlifier lock list`, `lock release --force` and `audit verify` on a Kubernetes
environment, as a user runs them (the installed command), against a real API server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlifier.platform.kubernetes.api import Cluster as Connection
from sqlifier.platform.kubernetes.audit import ClusterAudit
from sqlifier.platform.kubernetes.locks import LOCK_SECONDS, LeaseLock, read_lock
from tests.conftest import run_sqlifier
from tests.k8s.fixtures import Cluster
from tests.platform.kubernetes.records import Clock, connection

STACK = "shop"
ENV = "cluster"


@pytest.fixture
def conn(cluster: Cluster, namespace: str) -> Iterator[Connection]:
    yield from connection(cluster, namespace)


@pytest.fixture
def stack(
    tmp_path: Path, cluster: Cluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> Path:
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.setenv("SQLIFIER_USER", "carol")
    (tmp_path / "sqlifier.toml").write_text(
        f'[stack]\nname = "{STACK}"\n\n'
        f'[environments.{ENV}]\nplatform = "kubernetes"\n'
        f'kubernetes = {{ namespace = "{namespace}" }}\n\n'
        '[services.checkout]\nrun = "python -m checkout"\nimage = "registry.example/checkout"\n'
    )
    return tmp_path


# Renewed an hour ahead of the wall clock: live however slow the commands start.
AHEAD = 3600.0


def test_lock_list_shows_the_leases_as_local_locks_show(conn: Connection, stack: Path) -> None:
    clock = Clock(time.time() + AHEAD)
    LeaseLock(conn, STACK, ENV, "checkout", "deploy", "alice", "v2", "fix", clock=clock).acquire()
    result = run_sqlifier("lock", "list", "--env", ENV, cwd=stack)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("checkout: locked by alice since ")
    assert result.stdout.endswith(" (deploy v2: fix)\n")
    shown = json.loads(run_sqlifier("lock", "list", "--env", ENV, "--json", cwd=stack).stdout)
    assert sorted(shown[0]) == sorted(
        ["service", "env", "user", "pid", "started", "since", "what", "version", "reason",
         "host", "stale"]
    )  # fmt: skip
    assert (shown[0]["user"], shown[0]["stale"]) == ("alice", False)


def test_lock_release_force_breaks_a_stale_lease_and_audits_it_in_the_cluster(
    conn: Connection, stack: Path
) -> None:
    clock = Clock(0.0)  # renewed at the start of 1970: long stale
    LeaseLock(conn, STACK, ENV, "checkout", "deploy", "alice", "v2", clock=clock).acquire()
    listed = run_sqlifier("lock", "list", "--env", ENV, cwd=stack).stdout
    assert f"stale: not renewed for {LOCK_SECONDS} s" in listed
    result = run_sqlifier("lock", "release", "checkout", "--force", "--env", ENV, cwd=stack)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("broke the lock of checkout: it was locked by alice")
    assert read_lock(conn, ENV, "checkout", 0.0) is None
    [entry] = ClusterAudit(conn, STACK, ENV).entries()
    assert (entry.who, entry.what, entry.target) == (
        "carol",
        "lock release --force",
        "cluster/checkout",
    )
    assert entry.result == "ok: broke the stale lock of alice (deploy v2)"


def test_lock_release_force_refuses_a_live_lease(conn: Connection, stack: Path) -> None:
    clock = Clock(time.time() + AHEAD)
    LeaseLock(conn, STACK, ENV, "checkout", "deploy", "alice", clock=clock).acquire()
    result = run_sqlifier("lock", "release", "checkout", "--force", "--env", ENV, cwd=stack)
    assert result.returncode == 1
    assert "--even-if-alive" in result.stderr
    assert "Traceback" not in result.stderr


def test_audit_verify_checks_the_log_in_the_cluster(conn: Connection, stack: Path) -> None:
    audit = ClusterAudit(conn, STACK, ENV)
    for n in range(3):
        audit.record("agent", "scale", f"shop/cluster/checkout {n}", "ok")
    result = run_sqlifier("audit", "verify", "--env", ENV, cwd=stack)
    assert (result.returncode, result.stdout) == (0, "3 entries, chain intact\n")
    listed = run_sqlifier("audit", "--env", ENV, "--json", cwd=stack)
    assert [e["id"] for e in json.loads(listed.stdout)] == [1, 2, 3]


def test_audit_verify_names_a_tampered_entry_in_the_cluster(conn: Connection, stack: Path) -> None:
    audit = ClusterAudit(conn, STACK, ENV)
    for n in range(3):
        audit.record("agent", "scale", f"shop/cluster/checkout {n}", "ok")
    resource = conn.resource("v1", "ConfigMap")
    path = resource.path(conn.namespace, "sqlifier-audit-000001")
    chunk = conn.request("GET", path, verb="get", what="chunk")
    chunk["data"]["000000000001"] = chunk["data"]["000000000001"].replace("scale", "SCALE")
    conn.request("PUT", path, verb="update", what="chunk", body=chunk)
    result = run_sqlifier("audit", "verify", "--env", ENV, cwd=stack)
    assert result.returncode == 1
    assert result.stderr == (
        f"ConfigMaps sqlifier-audit-* in namespace {conn.namespace}: 3 entries, chain broken: "
        "entry 1 was changed: its hash does not match "
        f"(ConfigMap {conn.namespace}/sqlifier-audit-000001, key 000000000001)\n"
    )


def test_audit_reset_refuses_a_log_kept_in_the_cluster(stack: Path) -> None:
    result = run_sqlifier("audit", "reset", "--env", ENV, cwd=stack)
    assert result.returncode == 1
    assert "kept in its cluster, and is never reset" in result.stderr
