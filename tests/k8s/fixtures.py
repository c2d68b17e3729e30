"""pytest fixtures of the Kubernetes test cluster (loaded by tests/conftest.py).

    def test_x(cluster: Cluster, namespace: str) -> None:
        cluster.kubeconfig      # a kubeconfig of the cluster's admin
        cluster.api             # a kubernetes.client.ApiClient as the admin
        cluster.node            # the FakeNode: cluster.node.crash(namespace, "web-0")
        namespace               # a fresh namespace, deleted after the test

One control plane and one fake node per test session, started by the first test that asks
(some 5-15 s) and stopped at the end, every process checked gone. Without the binaries
(`scripts/k8s-build.sh` builds them) the tests that ask are skipped, saying what is missing;
with SQLIFIER_K8S_REQUIRED=1 (CI) they fail instead.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.k8s.controlplane import ControlPlane, missing_binaries, running_control_plane
from tests.k8s.fake_node import FakeNode

__all__ = ["USERS", "Cluster", "cluster", "gateway_api", "namespace", "until"]

# Users besides the admin, with no rights until a test's RBAC objects grant them some.
USERS = (("developer", ("developers",)),)
_numbers = itertools.count(1)
T = TypeVar("T")


@dataclass
class Cluster:
    control_plane: ControlPlane
    node: FakeNode
    api: Any  # kubernetes.client.ApiClient, as the admin

    @property
    def kubeconfig(self) -> Path:
        return self.control_plane.kubeconfig

    def new_namespace(self, prefix: str = "t") -> str:
        """A namespace of its own (the caller deletes it, or it goes with the cluster)."""
        from kubernetes import client

        name = f"{prefix}-{next(_numbers)}"
        client.CoreV1Api(self.api).create_namespace({"metadata": {"name": name}})
        return name

    def delete_namespace(self, name: str) -> None:
        from kubernetes import client

        client.CoreV1Api(self.api).delete_namespace(name)


def until(check: Callable[[], T | None], what: str, deadline: float = 60.0) -> T:
    """Poll `check` until it returns something true, and return that; the deadline only
    stops a test that would hang (it fails naming `what`)."""
    end = time.monotonic() + deadline
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"not within {deadline:.0f} s: {what}")
        time.sleep(0.05)


def require_binaries() -> None:
    reason = missing_binaries()
    if reason is None:
        return
    if os.environ.get("SQLIFIER_K8S_REQUIRED"):
        pytest.fail(f"SQLIFIER_K8S_REQUIRED is set, but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_binaries()
    workdir = tmp_path_factory.mktemp("k8s")
    with running_control_plane(workdir, users=USERS) as cp:
        api = cp.api_client()
        node = FakeNode(api)
        node.start()
        try:
            yield Cluster(cp, node, api)
        finally:
            node.stop()
            api.close()
    left = [name for name, p in cp.processes.items() if p.poll() is None]
    assert not left, f"still running after the session: {left}"


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    name = cluster.new_namespace(prefix=_prefix(request.node.name))
    yield name
    cluster.delete_namespace(name)


@pytest.fixture(scope="session")
def gateway_api(cluster: Cluster) -> Cluster:
    """The cluster with the Gateway API CRDs installed."""
    from tests.k8s.crds import install_gateway_api

    install_gateway_api(cluster.api)
    return cluster


def _prefix(test_name: str) -> str:
    kept = "".join(c if c.isalnum() else "-" for c in test_name.lower().removeprefix("test_"))
    return kept.strip("-")[:40].strip("-") or "t"
