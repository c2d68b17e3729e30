"""An objective's counts read from a real Prometheus over its HTTP API (`PrometheusSlo`,
what the agent calls on Kubernetes): Prometheus is started by the test and scrapes a small
exporter serving a Gateway's counters, as Envoy Gateway names them."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from sqlifier.engine.slo import SloFigures
from sqlifier.errors import UserError
from sqlifier.platform.kubernetes.slo_promql import (
    PRESETS,
    Counts,
    PrometheusSlo,
    Queries,
    burn_rate_expr,
)
from sqlifier.stack import load_stack
from sqlifier.stack import model as m
from tests.prom import MetricsServer, Prometheus, needs_prometheus, start_prometheus, wait_for_value
from tests.servers import free_port

ROUTE = 'envoy_cluster_name="httproute/shop/checkout/rule/0"'
HOST_ROUTE = 'envoy_cluster_name="httproute/shop/checkout.shop.example.com/rule/0"'
OTHER = 'envoy_cluster_name="httproute/shop/checkout-admin/rule/0"'
ENVOY = PRESETS[m.GatewayMetrics.ENVOY_GATEWAY]
AVAILABLE = m.Objective("availability", 0.999)
FAST = m.Objective("latency", 0.99, 0.25)


def exposition(requests: int, errors: int, fast: int) -> str:
    """Envoy's counters for two routes of checkout (half the traffic each) and one of
    another service, which must not be counted: `fast` answered within 250 ms."""
    lines = [
        "# TYPE envoy_cluster_upstream_rq_total counter",
        "# TYPE envoy_cluster_upstream_rq_xx counter",
        "# TYPE envoy_cluster_upstream_rq_time histogram",
    ]
    for route, share in ((ROUTE, 2), (HOST_ROUTE, 2), (OTHER, 1)):
        n, bad, quick = requests // share, errors // share, fast // share
        if route == OTHER:
            bad = n  # another service failing entirely
        lines += [
            f"envoy_cluster_upstream_rq_total{{{route}}} {n}",
            f'envoy_cluster_upstream_rq_xx{{envoy_response_code_class="2",{route}}} {n - bad}',
            f'envoy_cluster_upstream_rq_xx{{envoy_response_code_class="5",{route}}} {bad}',
            f'envoy_cluster_upstream_rq_time_bucket{{{route},le="100"}} {quick // 2}',
            f'envoy_cluster_upstream_rq_time_bucket{{{route},le="250"}} {quick}',
            f'envoy_cluster_upstream_rq_time_bucket{{{route},le="500"}} {n}',
            f'envoy_cluster_upstream_rq_time_bucket{{{route},le="+Inf"}} {n}',
            f"envoy_cluster_upstream_rq_time_sum{{{route}}} {n * 100}",
            f"envoy_cluster_upstream_rq_time_count{{{route}}} {n}",
        ]
    return "\n".join(lines) + "\n"


def instant_at(url: str, promql: str, at: float) -> dict[str, Any]:
    """The `data` of an instant query at time `at`."""
    query = urlencode({"query": promql, "time": f"{at:.3f}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{url}/api/v1/query?{query}", timeout=60) as answer:
        data: dict[str, Any] = json.loads(answer.read())["data"]
    return data


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prometheus, float]]:
    """Prometheus after it scraped the counters at zero, then after 20,000 requests (100
    of them 5xx, 19,000 within 250 ms); and the time of a scrape after the jump."""
    with MetricsServer(exposition(0, 0, 0)) as exporter:
        prometheus = start_prometheus(tmp_path_factory.mktemp("prom"), [exporter.address])
        try:
            total = f"sum(envoy_cluster_upstream_rq_total{{{ROUTE}}})"
            assert wait_for_value(prometheus.url, total) == 0.0
            time.sleep(2)  # a few scrapes at zero (Prometheus scrapes every second)
            exporter.text = exposition(20000, 100, 19000)
            assert wait_for_value(prometheus.url, f"{total} > 0") == 10000.0
            time.sleep(2)
            yield prometheus, time.time()
        finally:
            prometheus.stop()


@needs_prometheus
def test_the_counts_of_availability_over_a_window(scraped: tuple[Prometheus, float]) -> None:
    prometheus, at = scraped
    slo = PrometheusSlo(prometheus.url, "shop", ENVOY)
    counts = slo.counts("checkout", AVAILABLE, 60.0, at)
    assert counts.error is None
    # increase() extrapolates both counts alike: the share of good ones is exact.
    assert counts.total >= 20000 * 0.9
    assert counts.good / counts.total == pytest.approx(0.995)
    assert slo.burn_rate("checkout", AVAILABLE, 60.0, at) == pytest.approx(5.0)
    assert slo.budget_left("checkout", AVAILABLE, 60.0, at) == pytest.approx(-4.0)


@needs_prometheus
def test_the_counts_of_latency_over_a_window(scraped: tuple[Prometheus, float]) -> None:
    prometheus, at = scraped
    slo = PrometheusSlo(prometheus.url, "shop", ENVOY)
    counts = slo.counts("checkout", FAST, 60.0, at)
    assert counts.error is None
    assert counts.good / counts.total == pytest.approx(0.95)
    assert slo.burn_rate("checkout", FAST, 60.0, at) == pytest.approx(5.0)


@needs_prometheus
def test_a_window_before_any_request_has_no_figures(scraped: tuple[Prometheus, float]) -> None:
    prometheus, at = scraped
    slo = PrometheusSlo(prometheus.url, "shop", ENVOY)
    assert slo.counts("web", AVAILABLE, 60.0, at) == Counts()  # no series of web at all
    assert slo.burn_rate("web", AVAILABLE, 60.0, at) is None


@needs_prometheus
def test_a_query_prometheus_refuses_says_why(scraped: tuple[Prometheus, float]) -> None:
    prometheus, at = scraped
    broken = Queries("custom", "rq_total{app=$service}", "x{}", None)
    counts = PrometheusSlo(prometheus.url, "shop", broken).counts("checkout", AVAILABLE, 60, at)
    assert counts.good == counts.total == 0
    assert counts.error is not None
    assert counts.error.startswith(f"{prometheus.url}/api/v1/query: bad_data: ")


@needs_prometheus
@pytest.mark.parametrize("objective", [AVAILABLE, FAST])
def test_the_burn_rate_as_promql(scraped: tuple[Prometheus, float], objective: m.Objective) -> None:
    prometheus, at = scraped
    promql = burn_rate_expr(ENVOY, objective, "checkout", "shop", 60.0)
    data = instant_at(prometheus.url, promql, at)
    assert [float(r["value"][1]) for r in data["result"]] == [pytest.approx(5.0)]
    none = instant_at(prometheus.url, burn_rate_expr(ENVOY, objective, "web", "shop", 60.0), at)
    assert none["result"] == []


@needs_prometheus
def test_the_figures_sqlifier_slo_shows(scraped: tuple[Prometheus, float]) -> None:
    prometheus, at = scraped
    figures = PrometheusSlo(prometheus.url, "shop", ENVOY).figures(
        "checkout", AVAILABLE, 30 * 86400.0, at
    )
    assert isinstance(figures, SloFigures)
    assert figures.good / figures.total == pytest.approx(0.995)
    assert figures.budget_left == pytest.approx(-4.0)
    assert list(figures.burn_rates) == [300.0, 1800.0, 3600.0, 21600.0, 259200.0]
    assert all(rate == pytest.approx(5.0) for rate in figures.burn_rates.values())
    assert figures.exhaustion == 0.0  # spent already


def test_the_prometheus_of_an_environment(tmp_path: Path) -> None:
    path = tmp_path / "sqlifier.toml"
    text = (
        '[stack]\nname = "shop"\n\n[environments.prod]\nplatform = "kubernetes"\n'
        'kubernetes = { namespace = "shop-prod" }\n{prometheus}\n'
        '[services.web]\nrun = "web"\nimage = "registry.example.com/web"\n'
    )
    path.write_text(text.replace("{prometheus}", ""))
    with pytest.raises(UserError) as caught:
        PrometheusSlo.of(load_stack(path)[0], "prod")
    assert str(caught.value) == (
        "environment prod of sqlifier.toml runs on Kubernetes, where the SLOs are counted by "
        'Prometheus: set [prometheus] url, like url = "http://prometheus.monitoring:9090"'
    )
    prometheus = '[prometheus]\nurl = "http://prometheus:9090/"\ngateway_metrics = "istio"\n'
    path.write_text(text.replace("{prometheus}", prometheus))
    slo = PrometheusSlo.of(load_stack(path)[0], "prod")
    assert (slo.url, slo.namespace, slo.queries) == (
        "http://prometheus:9090",
        "shop-prod",
        PRESETS[m.GatewayMetrics.ISTIO],
    )


def test_no_prometheus_listening_is_an_error_naming_it(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    counts = PrometheusSlo(url, "shop", ENVOY, timeout=5).counts("checkout", AVAILABLE, 60)
    assert counts == Counts(error=f"{url}/api/v1/query: [Errno 111] Connection refused")


def test_a_url_that_is_not_http_is_refused() -> None:
    with pytest.raises(ValueError, match="not an http:// or https:// URL: 'prometheus:9090'"):
        PrometheusSlo("prometheus:9090", "shop", ENVOY)
