"""The test cluster itself: a real control plane (etcd, kube-apiserver, the controllers)
with a fake node in place of a kubelet, which cannot run here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.k8s.controlplane import missing_binaries, running_control_plane
from tests.k8s.fake_node import START_ANNOTATION
from tests.k8s.fixtures import Cluster, require_binaries, until


def deployment(name: str, replicas: int, annotations: dict[str, str] | None = None) -> Any:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations or {}},
                "spec": {"containers": [{"name": "app", "image": "example/app:1"}]},
            },
        },
    }


def statefulset(name: str, replicas: int, annotations: dict[str, str] | None = None) -> Any:
    body = deployment(name, replicas, annotations)
    body["kind"] = "StatefulSet"
    body["spec"]["serviceName"] = name
    return body


def apps(cluster: Cluster) -> Any:
    from kubernetes import client

    return client.AppsV1Api(cluster.api)


def core(cluster: Cluster) -> Any:
    from kubernetes import client

    return client.CoreV1Api(cluster.api)


def pods(cluster: Cluster, namespace: str, app: str) -> list[Any]:
    found = core(cluster).list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return sorted(found, key=lambda p: p.metadata.name)


def ready_replicas(cluster: Cluster, namespace: str, name: str, kind: str = "deployment") -> int:
    read = getattr(apps(cluster), f"read_namespaced_{kind}_status")
    return int(read(name, namespace).status.ready_replicas or 0)


def container(pod: Any) -> Any:
    return pod.status.container_statuses[0]


def test_a_deployment_gets_ready_pods_on_the_fake_node(cluster: Cluster, namespace: str) -> None:
    apps(cluster).create_namespaced_deployment(namespace, deployment("web", 2))
    until(lambda: ready_replicas(cluster, namespace, "web") == 2, "web has 2 ready pods")
    for pod in pods(cluster, namespace, "web"):
        assert pod.spec.node_name == cluster.node.name
        assert pod.status.phase == "Running"
        assert pod.status.pod_ip.startswith("10.244.")


def test_the_scale_subresource_scales_a_deployment(cluster: Cluster, namespace: str) -> None:
    apps(cluster).create_namespaced_deployment(namespace, deployment("web", 1))
    until(lambda: ready_replicas(cluster, namespace, "web") == 1, "web has 1 ready pod")
    apps(cluster).patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 3}})
    until(lambda: ready_replicas(cluster, namespace, "web") == 3, "web has 3 ready pods")
    apps(cluster).patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 1}})
    # The pods scaled away are gone, not left Terminating: the node finishes their deletion.
    until(lambda: len(pods(cluster, namespace, "web")) == 1, "web is down to one pod")


def test_a_statefulset_starts_its_pods_in_order(cluster: Cluster, namespace: str) -> None:
    body = statefulset("db", 2, {START_ANNOTATION: "unready"})
    apps(cluster).create_namespaced_stateful_set(namespace, body)
    first = until(
        lambda: [p for p in pods(cluster, namespace, "db") if p.status.container_statuses],
        "db-0 runs",
    )
    assert [p.metadata.name for p in first] == ["db-0"]
    assert container(first[0]).ready is False
    # While db-0 is not ready, the controller does not create db-1.
    until(
        lambda: (
            apps(cluster).read_namespaced_stateful_set_status("db", namespace).status.replicas == 1
        ),
        "the StatefulSet counts db-0",
    )
    assert [p.metadata.name for p in pods(cluster, namespace, "db")] == ["db-0"]
    cluster.node.run(namespace, "db-0")
    until(
        lambda: (
            len([p for p in pods(cluster, namespace, "db") if p.status.container_statuses]) == 2
        ),
        "db-1 is created once db-0 is ready, and runs",
    )
    cluster.node.run(namespace, "db-1")
    until(lambda: ready_replicas(cluster, namespace, "db", "stateful_set") == 2, "db is ready")


def test_a_crash_shows_in_the_pod_status(cluster: Cluster, namespace: str) -> None:
    apps(cluster).create_namespaced_deployment(namespace, deployment("web", 1))
    until(lambda: ready_replicas(cluster, namespace, "web") == 1, "web is ready")
    name = pods(cluster, namespace, "web")[0].metadata.name
    cluster.node.crash(namespace, name)
    status = container(core(cluster).read_namespaced_pod(name, namespace))
    assert (status.ready, status.restart_count) == (False, 1)
    assert status.state.waiting.reason == "CrashLoopBackOff"
    assert status.last_state.terminated.reason == "Error"
    until(lambda: ready_replicas(cluster, namespace, "web") == 0, "the Deployment sees it")
    events = core(cluster).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}"
    )
    assert [e.reason for e in events.items] == ["BackOff"]


def test_an_oom_kill_shows_in_the_pod_status(cluster: Cluster, namespace: str) -> None:
    apps(cluster).create_namespaced_deployment(
        namespace, deployment("web", 1, {START_ANNOTATION: "oom"})
    )
    pod = until(
        lambda: [p for p in pods(cluster, namespace, "web") if p.status.container_statuses],
        "web's pod has a status",
    )[0]
    status = container(pod)
    assert status.last_state.terminated.reason == "OOMKilled"
    assert status.last_state.terminated.exit_code == 137
    assert (status.ready, status.restart_count) == (False, 1)


def test_a_pod_turns_unready_and_ready_again(cluster: Cluster, namespace: str) -> None:
    apps(cluster).create_namespaced_deployment(namespace, deployment("web", 1))
    until(lambda: ready_replicas(cluster, namespace, "web") == 1, "web is ready")
    name = pods(cluster, namespace, "web")[0].metadata.name
    cluster.node.unready(namespace, name)
    until(lambda: ready_replicas(cluster, namespace, "web") == 0, "web is unready")
    assert container(pods(cluster, namespace, "web")[0]).state.running is not None
    cluster.node.run(namespace, name)
    until(lambda: ready_replicas(cluster, namespace, "web") == 1, "web is ready again")


def test_an_image_that_does_not_pull_waits_in_image_pull_back_off(
    cluster: Cluster, namespace: str
) -> None:
    body = deployment("web", 1)
    body["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.invalid/web:1"
    apps(cluster).create_namespaced_deployment(namespace, body)
    pod = until(
        lambda: [p for p in pods(cluster, namespace, "web") if p.status.container_statuses],
        "web's pod has a status",
    )[0]
    assert container(pod).state.waiting.reason == "ImagePullBackOff"


def test_pod_logs_come_through_the_api_from_the_fake_kubelet(
    cluster: Cluster, namespace: str
) -> None:
    apps(cluster).create_namespaced_deployment(namespace, deployment("web", 1))
    until(lambda: ready_replicas(cluster, namespace, "web") == 1, "web is ready")
    name = pods(cluster, namespace, "web")[0].metadata.name
    cluster.node.set_log(namespace, name, ["one", "two", "three"])
    log = core(cluster).read_namespaced_pod_log(name, namespace, tail_lines=2)
    assert log == "two\nthree\n"


def test_the_node_keeps_its_lease_and_ready_condition(cluster: Cluster) -> None:
    from kubernetes import client

    lease = client.CoordinationV1Api(cluster.api).read_namespaced_lease(
        cluster.node.name, "kube-node-lease"
    )
    assert lease.spec.holder_identity == cluster.node.name
    node = core(cluster).read_node(cluster.node.name)
    assert {c.type: c.status for c in node.status.conditions}["Ready"] == "True"


def test_the_httproute_crd_holds_a_route_with_weights(gateway_api: Cluster, namespace: str) -> None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    custom = client.CustomObjectsApi(gateway_api.api)
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web"},
        "spec": {
            "parentRefs": [{"name": "public", "namespace": "infra"}],
            "rules": [{"backendRefs": [
                {"name": "web", "port": 80, "weight": 90},
                {"name": "web-canary", "port": 80, "weight": 10},
            ]}],
        },
    }  # fmt: skip
    args = ("gateway.networking.k8s.io", "v1", namespace, "httproutes")
    custom.create_namespaced_custom_object(*args, route)
    stored = custom.get_namespaced_custom_object(*args, "web")
    weights = [b["weight"] for b in stored["spec"]["rules"][0]["backendRefs"]]
    assert weights == [90, 10]
    route["metadata"]["name"] = "bad"
    route["spec"]["rules"][0]["backendRefs"][1]["weight"] = -1
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(*args, route)
    assert refused.value.status == 422


def test_missing_binaries_say_how_to_build_them(tmp_path: Path) -> None:
    reason = missing_binaries(tmp_path)
    assert reason is not None
    assert f"etcd, kube-apiserver, kube-controller-manager missing in {tmp_path}" in reason
    assert "scripts/k8s-build.sh" in reason


@pytest.mark.slow
def test_stopping_the_control_plane_leaves_no_process(tmp_path: Path) -> None:
    require_binaries()
    with running_control_plane(tmp_path) as cp:
        processes = dict(cp.processes)
        assert sorted(processes) == ["apiserver", "controller-manager", "etcd"]
        assert all(p.poll() is None for p in processes.values())
    for process in processes.values():
        assert process.poll() is not None
        with pytest.raises(ProcessLookupError):  # reaped: not even a zombie is left
            os.kill(process.pid, 0)


def test_the_node_renews_its_lease(cluster: Cluster) -> None:
    from kubernetes import client

    leases = client.CoordinationV1Api(cluster.api)
    before = leases.read_namespaced_lease(cluster.node.name, "kube-node-lease").spec.renew_time
    until(
        lambda: (
            leases.read_namespaced_lease(cluster.node.name, "kube-node-lease").spec.renew_time
            > before
        ),
        "the lease is renewed",
    )
