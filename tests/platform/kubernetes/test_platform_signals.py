"""cpu(), memory(), rps, error_rate and latency on a cluster: the agent's PromQL against a
REAL Prometheus, which scrapes tests/k8s/fake_exporter.py (a mock of the kubelet's cAdvisor
and of Envoy Gateway, which cannot run here); pods from the real control plane."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlifier.engine.series import LOG, SeriesStore
from sqlifier.errors import DiagnosticsError, UserError
from sqlifier.lang.signals import LOG_LEVELS
from sqlifier.platform.kubernetes.api import connect
from sqlifier.platform.kubernetes.platform import KubernetesPlatform
from sqlifier.platform.kubernetes.promql import GATEWAY_QUERIES, RESOURCE_QUERIES, templates
from sqlifier.platform.kubernetes.signals import KubernetesSignals
from sqlifier.stack import load_stack
from sqlifier.stack.model import Prometheus
from tests.k8s.agent_stack import ENV, apply_workloads, write_stack
from tests.k8s.fake_exporter import FakeExporter
from tests.k8s.fixtures import Cluster, until
from tests.prom import needs_prometheus, running_prometheus

SERVICE = "image-processor-svc"


@pytest.fixture
def exporter() -> Iterator[FakeExporter]:
    with FakeExporter() as found:
        yield found


@pytest.fixture
def platform(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[KubernetesPlatform]:
    stack = write_stack(tmp_path / "stack", namespace)
    with connect(namespace, kubeconfig=cluster.kubeconfig) as conn:
        apply_workloads(conn, stack)
        found = KubernetesPlatform(conn, stack, ENV)
        found.start()
        until(lambda: sum(i.ready for i in found.instances(SERVICE)) == 2, "two ready pods")
        yield found
        found.close()


# rate() divides by its whole window: a series younger than it reads low. The tests' series
# are seconds old, so their window is short, and they wait for it to fill.
WINDOW = "3s"


def run_until(
    signals: KubernetesSignals, store: SeriesStore, keys: list[str], exporter: FakeExporter
) -> dict[str, float]:
    """Once Prometheus has scraped the window full, step once a second (as the agent does)
    until every key has a value."""
    until(lambda: exporter.scrapes >= 6, "six scrapes")

    async def loop() -> dict[str, float]:
        for _ in range(120):
            signals.step(signals.clock())
            await asyncio.sleep(0.5)
            values = {k: store.level(SERVICE, k, signals.clock()) for k in keys}
            if all(v is not None for v in values.values()):
                await signals.close()
                return {k: float(v) for k, v in values.items() if v is not None}
        await signals.close()
        pytest.fail(f"no values for {keys}: {signals.sources}")

    return asyncio.run(loop())


@needs_prometheus
def test_cpu_and_memory_come_from_cadvisor_series(
    platform: KubernetesPlatform, exporter: FakeExporter, namespace: str, tmp_path: Path
) -> None:
    first, second = (i.name for i in platform.instances(SERVICE))
    exporter.cpu(namespace, first, 0.4)
    exporter.cpu(namespace, second, 0.2)
    exporter.memory(namespace, first, 128 * 2**20)
    exporter.memory(namespace, second, 64 * 2**20)
    exporter.cpu(namespace, "someone-else-0", 9.0)  # not a pod of the service
    with running_prometheus(tmp_path / "prom", [exporter.address]) as prom:
        store = SeriesStore()
        signals = KubernetesSignals(store, platform, Prometheus(url=prom.url), window=WINDOW)
        values = run_until(signals, store, ["cpu", "cpu_share", "memory", "memory_share"], exporter)
    # The mean per pod; the pod's cgroup and the pause container are left out.
    assert values["cpu"] == pytest.approx(0.3, abs=0.02)
    assert values["cpu_share"] == pytest.approx(0.3 / 0.5, abs=0.04)  # of its 500m limit
    assert values["memory"] == pytest.approx(96 * 2**20)
    assert values["memory_share"] == pytest.approx(96 / 256)  # of its 256Mi limit
    assert store.level(SERVICE, "instances", signals.clock()) == 2
    assert store.level(SERVICE, "ready_instances", signals.clock()) == 2


@needs_prometheus
def test_traffic_comes_from_the_gateways_series(
    platform: KubernetesPlatform, exporter: FakeExporter, namespace: str, tmp_path: Path
) -> None:
    exporter.traffic(namespace, SERVICE, rps=40, errors=0.25, latency_ms=120)
    with running_prometheus(tmp_path / "prom", [exporter.address]) as prom:
        store = SeriesStore()
        signals = KubernetesSignals(
            store, platform, Prometheus(url=prom.url), gateway="envoy-gateway", window=WINDOW
        )
        values = run_until(
            signals, store, ["rps", "error_rate", "latency_p50", "latency_p99"], exporter
        )
    assert values["rps"] == pytest.approx(40, rel=0.1)
    assert values["error_rate"] == pytest.approx(0.25, abs=0.02)
    # Every request took 120 ms: the quantiles fall in the (100 ms, 250 ms] bucket.
    assert 0.1 < values["latency_p50"] <= 0.25
    assert 0.1 < values["latency_p99"] <= 0.25


@needs_prometheus
def test_a_prometheus_that_does_not_answer_is_said_per_signal(
    platform: KubernetesPlatform,
) -> None:
    store = SeriesStore()
    signals = KubernetesSignals(store, platform, Prometheus(url="http://127.0.0.1:9", timeout=1))

    async def loop() -> None:
        signals.step(signals.clock())
        for _ in range(40):
            await asyncio.sleep(0.1)
            if "cpu" in signals.sources:
                break
        await signals.close()

    asyncio.run(loop())
    assert signals.sources["cpu"] == "prometheus: connection refused"
    assert store.last_sample(SERVICE, "cpu") is None  # never written


def test_query_templates_per_gateway_and_from_the_stack_file() -> None:
    assert templates(None, {}) == RESOURCE_QUERIES
    mine = templates("istio", {"rps": 'sum(rate(my_requests{svc="$service"}[1m]))'})
    assert mine["rps"] == 'sum(rate(my_requests{svc="$service"}[1m]))'
    assert mine["error_rate"] == GATEWAY_QUERIES["istio"]["error_rate"]
    with pytest.raises(UserError, match="use one of envoy-gateway, istio, nginx, traefik"):
        templates("haproxy", {})


def test_check_refuses_an_unknown_gateway_with_its_position(tmp_path: Path) -> None:
    path = tmp_path / "sqlifier.toml"
    path.write_text(
        '[stack]\nname = "s"\n\n[prometheus]\nurl = "http://127.0.0.1:9090"\n'
        'gateway = "haproxy"\nqueries = { rps = "1", p99 = "2" }\n\n'
        '[services.web]\nrun = "x"\n'
    )
    with pytest.raises(DiagnosticsError) as caught:
        load_stack(path)
    said = [d.headline() for d in caught.value.diagnostics]
    assert said[0].endswith(
        "sqlifier.toml:6:11: error: [prometheus] gateway = 'haproxy' is not one sqlifier has "
        "queries for: use one of envoy-gateway, istio, nginx, traefik, or give rps, "
        "error_rate and latency in [prometheus] queries"
    )
    assert "sqlifier.toml:7:" in said[1]
    assert "[prometheus] queries.p99 is not a signal a query can be given for" in said[1]


def test_pod_log_lines_become_log_events(
    platform: KubernetesPlatform, cluster: Cluster, namespace: str
) -> None:
    pod, *others = [i.name for i in platform.instances(SERVICE)]
    for other in others:  # the service's other pods say nothing (not even the fake start line)
        cluster.node.set_log(namespace, other, [])
    store = SeriesStore()
    signals = KubernetesSignals(
        store, platform, Prometheus(), redact=lambda text: text.replace("hunter2", "******")
    )

    async def loop() -> None:
        signals.step(signals.clock())
        # written once the agent reads: what a pod wrote before it started is not counted
        cluster.node.set_log(
            namespace, pod, ["CRITICAL card declined for hunter2", "ERROR retry", "all good"]
        )
        for _ in range(100):
            await asyncio.sleep(0.1)
            if store.count(SERVICE, LOG, 0, signals.clock() + 1) >= 3:
                break
        await signals.close()

    asyncio.run(loop())
    now = signals.clock() + 1
    assert store.count(SERVICE, LOG, 0, now, rank=LOG_LEVELS["critical"]) == 1
    assert store.count(SERVICE, LOG, 0, now, min_rank=LOG_LEVELS["error"]) == 2
    assert store.count(SERVICE, LOG, 0, now, match=re.compile(r"\*\*\*\*\*\*")) == 1
    assert store.count(SERVICE, LOG, 0, now, match=re.compile("hunter2")) == 0
    assert signals.log_totals[SERVICE] == {"critical": 1, "error": 1, "info": 1}
