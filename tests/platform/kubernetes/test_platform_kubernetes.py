"""KubernetesPlatform against a real control plane (the fake node plays the kubelet)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sqlifier.platform import PlatformError
from sqlifier.platform.kubernetes.api import Cluster as Connection
from sqlifier.platform.kubernetes.api import connect
from sqlifier.platform.kubernetes.platform import RESTARTED_AT, KubernetesPlatform
from tests.k8s.agent_stack import ENV, apply_workloads, write_stack
from tests.k8s.fixtures import Cluster, until

SERVICE = "image-processor-svc"


@pytest.fixture
def conn(cluster: Cluster, namespace: str) -> Iterator[Connection]:
    with connect(namespace, kubeconfig=cluster.kubeconfig) as c:
        yield c


@pytest.fixture
def platform(conn: Connection, namespace: str, tmp_path: Path) -> Iterator[KubernetesPlatform]:
    stack = write_stack(tmp_path, namespace)
    apply_workloads(conn, stack)
    found = KubernetesPlatform(conn, stack, ENV, ready_timeout=60)
    found.start()
    yield found
    found.close()


def ready(platform: KubernetesPlatform, count: int) -> bool:
    pods = platform.instances(SERVICE)
    return len(pods) == count and all(p.ready for p in pods)


def deployment(conn: Connection, name: str) -> Any:
    path = conn.resource("apps/v1", "Deployment").path(conn.namespace, name)
    return conn.request("GET", path, verb="get", what=name)


def test_instances_come_from_one_list_then_the_watch(platform: KubernetesPlatform) -> None:
    until(lambda: ready(platform, 2), "two ready pods of image-processor-svc")
    until(lambda: len(platform.instances("web")) == 1, "one pod of web")
    infos = platform.instances(SERVICE, "stable")
    assert {i.service for i in infos} == {SERVICE}
    assert {i.release for i in infos} == {"1"}
    assert platform.stable_release(SERVICE) == "1"
    # Pods that came after the first list were seen through the watch, not a second list.
    assert platform.watch.lists == 1
    assert platform.watch.events > 0


def test_a_crash_and_an_oom_kill_show_in_instances(
    platform: KubernetesPlatform, cluster: Cluster, namespace: str
) -> None:
    until(lambda: ready(platform, 2), "two ready pods")
    first, second = (i.name for i in platform.instances(SERVICE))
    cluster.node.crash(namespace, first)
    cluster.node.oom(namespace, second)
    until(
        lambda: (
            {i.name: (i.state, i.restarts) for i in platform.instances(SERVICE)}
            == {first: ("crashloop", 1), second: ("crashloop", 1)}
        ),
        "both pods crashlooping with one restart",
    )
    reasons = {i.name: i.reason for i in platform.instances(SERVICE)}
    assert reasons == {first: "CrashLoopBackOff", second: "OOMKilled"}
    assert platform.watch.lists == 1


def test_scale_goes_through_the_scale_subresource(
    platform: KubernetesPlatform, conn: Connection
) -> None:
    until(lambda: ready(platform, 2), "two ready pods")
    asyncio.run(platform.scale(SERVICE, 4, by="rule:test"))
    assert deployment(conn, SERVICE)["spec"]["replicas"] == 4
    until(lambda: ready(platform, 4), "four ready pods")
    # Only spec.replicas changed: the scale subresource leaves the pod template alone.
    managers = [m["manager"] for m in deployment(conn, SERVICE)["metadata"]["managedFields"]]
    assert "sqlifier" in managers


def test_restart_rolls_every_pod(platform: KubernetesPlatform, conn: Connection) -> None:
    until(lambda: ready(platform, 2), "two ready pods")
    before = {i.name for i in platform.instances(SERVICE)}
    asyncio.run(platform.restart(SERVICE))
    template = deployment(conn, SERVICE)["spec"]["template"]["metadata"]["annotations"]
    assert RESTARTED_AT in template
    until(
        lambda: ready(platform, 2) and not before & {i.name for i in platform.instances(SERVICE)},
        "two new ready pods in place of the old ones",
    )


def test_logs_read_each_pod_once(
    platform: KubernetesPlatform, cluster: Cluster, namespace: str
) -> None:
    until(lambda: ready(platform, 1) or ready(platform, 2), "ready pods")
    until(lambda: ready(platform, 2), "two ready pods")
    pod = platform.instances(SERVICE)[0].name
    cluster.node.set_log(namespace, pod, ["ERROR disk full", "all good"])

    async def read(count: int) -> list[tuple[str, str, str]]:
        out: list[tuple[str, str, str]] = []
        stream = platform.logs(SERVICE)
        async for line in stream:
            if line.instance == pod:
                out.append((line.instance, line.level, line.text))
            if len(out) >= count:
                break
        return out

    # two lines with one stamp: both read, once (a timeout fails rather than hangs)
    lines = asyncio.run(asyncio.wait_for(read(2), 60))
    assert lines == [(pod, "error", "ERROR disk full"), (pod, "info", "all good")]


def test_canaries_are_not_yet_on_kubernetes(platform: KubernetesPlatform) -> None:
    spec = platform.services()[SERVICE]
    with pytest.raises(PlatformError, match="image-processor-svc is not yet on Kubernetes"):
        asyncio.run(platform.start_canaries(spec, platform_release(), 1))


def test_scale_of_a_service_the_stack_lacks_names_the_services(
    platform: KubernetesPlatform,
) -> None:
    with pytest.raises(PlatformError, match=r"nope is not a service.*image-processor-svc, web"):
        asyncio.run(platform.scale("nope", 2))


def platform_release() -> Any:
    from sqlifier.platform import ReleaseRef

    return ReleaseRef("2", image="registry.example.com/shop/services:2")
