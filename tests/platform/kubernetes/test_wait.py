"""Waiting for readiness, and naming a pod that is not ready, against a real control plane
whose fake node (tests/k8s/fake_node.py) plays the crashes, OOM kills and failed pulls."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sqlifier.platform.kubernetes.api import Cluster as Connection
from sqlifier.platform.kubernetes.api import connect
from sqlifier.platform.kubernetes.apply import apply
from sqlifier.platform.kubernetes.errors import NotReady
from sqlifier.platform.kubernetes.wait import POLL, wait_ready
from tests.k8s.fake_node import START_ANNOTATION
from tests.k8s.fixtures import Cluster, until
from tests.platform.kubernetes.manifests import deployment, statefulset


class Clock:
    """Time that passes only when the code under test pauses."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.pauses: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


@pytest.fixture
def conn(cluster: Cluster, namespace: str) -> Iterator[Connection]:
    with connect(namespace, kubeconfig=cluster.kubeconfig) as c:
        yield c


def pod_of(cluster: Cluster, namespace: str, app: str) -> Any:
    """The app's one pod, once the fake node has given it a status."""
    from kubernetes import client

    def started() -> Any:
        pods = (
            client.CoreV1Api(cluster.api)
            .list_namespaced_pod(namespace, label_selector=f"app={app}")
            .items
        )
        return [p for p in pods if p.status.container_statuses]

    return until(started, f"{app}'s pod has a status")[0]


def not_ready(conn: Connection, objects: list[Any], timeout: float = 5) -> str:
    clock = Clock()
    with pytest.raises(NotReady) as e:
        wait_ready(conn, objects, timeout, clock=clock, sleep=clock.sleep)
    assert clock.pauses == [POLL] * int(timeout / POLL)
    return str(e.value)


def test_wait_returns_once_deployments_and_statefulsets_are_ready(conn: Connection) -> None:
    objects = [deployment("web", replicas=2), statefulset("db", replicas=2)]
    apply(conn, objects)
    wait_ready(conn, objects, timeout=60)


def test_a_crashing_pod_is_named_with_its_events_and_last_log_lines(
    cluster: Cluster, conn: Connection
) -> None:
    web = deployment("web", annotations={START_ANNOTATION: "crash"})
    apply(conn, [web])
    pod = pod_of(cluster, conn.namespace, "web").metadata.name
    cluster.node.set_log(
        conn.namespace, pod, [f"line {i}" for i in range(1, 13)] + ["panic: no DATABASE_URL"]
    )
    message = not_ready(conn, [web])
    assert message == (
        f"Deployment {conn.namespace}/web is not ready after 5 s: 0 of 1 pods ready; "
        f"pod {pod}: CrashLoopBackOff, last exit Error (exit code 1), 1 restart\n"
        "  its events:\n"
        "    Warning BackOff: Back-off restarting failed container\n"
        "  its last log lines:\n"
        + "".join(f"    line {i}\n" for i in range(4, 13))
        + "    panic: no DATABASE_URL\n"
        f"  (kubectl -n {conn.namespace} describe pod {pod} shows more)"
    )


def test_an_oom_killed_pod_says_so(cluster: Cluster, conn: Connection) -> None:
    web = deployment("web", annotations={START_ANNOTATION: "oom"})
    apply(conn, [web])
    pod_of(cluster, conn.namespace, "web")
    assert "CrashLoopBackOff, last exit OOMKilled (exit code 137), 1 restart" in not_ready(
        conn, [web]
    )


def test_an_image_that_never_pulls_is_named(cluster: Cluster, conn: Connection) -> None:
    web = deployment("web", image="registry.invalid/shop/web:1")
    apply(conn, [web])
    pod_of(cluster, conn.namespace, "web")
    message = not_ready(conn, [web])
    assert 'ImagePullBackOff (Back-off pulling image "registry.invalid/shop/web:1")' in message
    assert (
        'Warning Failed: Failed to pull image "registry.invalid/shop/web:1": not found' in message
    )


def test_a_pod_failing_its_readiness_probe_is_named(cluster: Cluster, conn: Connection) -> None:
    web = deployment("web", annotations={START_ANNOTATION: "unready"})
    apply(conn, [web])
    pod = pod_of(cluster, conn.namespace, "web").metadata.name
    message = not_ready(conn, [web])
    assert f"pod {pod}: running, not ready (its readiness probe fails)" in message
    assert "Warning Unhealthy: Readiness probe failed" in message


def test_a_workload_whose_pods_are_refused_shows_the_controller_events(
    cluster: Cluster, conn: Connection
) -> None:
    web = deployment("web")
    web["spec"]["template"]["spec"]["serviceAccountName"] = "nobody"
    apply(conn, [web])

    def refused() -> bool:
        from kubernetes import client

        events = client.CoreV1Api(cluster.api).list_namespaced_event(conn.namespace).items
        return any(e.reason == "FailedCreate" for e in events)

    until(refused, "the ReplicaSet controller reports FailedCreate")
    message = not_ready(conn, [web])
    assert message.startswith(
        f"Deployment {conn.namespace}/web is not ready after 5 s: 0 of 1 pods ready; "
        "no pod was created\n  its events:\n    Warning FailedCreate: Error creating: pods "
    )
    assert 'serviceaccount "nobody" not found' in message


def test_the_first_workload_not_ready_is_named_the_ready_ones_are_not(
    cluster: Cluster, conn: Connection
) -> None:
    good, bad = deployment("good"), deployment("bad", annotations={START_ANNOTATION: "crash"})
    apply(conn, [good, bad])
    pod_of(cluster, conn.namespace, "bad")
    until(lambda: _ready(conn, "good"), "good is ready")
    assert not_ready(conn, [good, bad]).startswith(f"Deployment {conn.namespace}/bad is not ready")


def _ready(conn: Connection, name: str) -> bool:
    answer = conn.request(
        "GET", f"/apis/apps/v1/namespaces/{conn.namespace}/deployments/{name}",
        verb="get", what=name,
    )  # fmt: skip
    return bool((answer.get("status") or {}).get("availableReplicas") == 1)
