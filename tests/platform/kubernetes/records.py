"""What the tests of sqlifier's records in the cluster (locks, leader, state, audit) share:
a connection to a fresh namespace, a clock the test moves, and an unreachable cluster."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlifier.platform.kubernetes.api import Cluster as Connection
from sqlifier.platform.kubernetes.api import connect
from tests.k8s.fixtures import Cluster
from tests.servers import free_port

STACK = "shop"
ENV = "production"
START = 1_800_000_000.0  # 2027-01-15: far from the wall clock, so no test leans on it


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def connection(cluster: Cluster, namespace: str) -> Iterator[Connection]:
    """For a test module's `conn` fixture."""
    with connect(namespace, kubeconfig=cluster.kubeconfig) as c:
        yield c


def unreachable(cluster: Cluster, namespace: str, tmp_path: Path) -> Connection:
    """A connection to the same cluster's credentials on a port where nothing listens."""
    text = cluster.kubeconfig.read_text()
    dead = re.sub(r"https://127\.0\.0\.1:\d+", f"https://127.0.0.1:{free_port()}", text)
    path = tmp_path / "dead.kubeconfig"
    path.write_text(dead)
    return connect(namespace, kubeconfig=path, check_namespace=False)


def lease(conn: Connection, name: str) -> Any:
    resource = conn.resource("coordination.k8s.io/v1", "Lease")
    return conn.request("GET", resource.path(conn.namespace, name), verb="get", what=name)


def put_lease(conn: Connection, body: Any) -> Any:
    resource = conn.resource("coordination.k8s.io/v1", "Lease")
    name = body["metadata"]["name"]
    path = resource.path(conn.namespace, name)
    return conn.request("PUT", path, verb="update", what=name, body=body)
