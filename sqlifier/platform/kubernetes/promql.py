"""The agent's signals on a cluster, from PromQL: the queries, their templates, the client.

On Kubernetes there is no process to sample and no router of sqlifier's to count requests:
cpu() and memory() come from the kubelet's cAdvisor series, and rps, error_rate and
latency from the Gateway implementation's own metrics, all read from the Prometheus of
`[prometheus] url`. Each signal is a query template; the text `$namespace`, `$service`,
`$pods` (the service's pod names as a regex alternation, from the agent's pod watch),
`$window` (the rate window) and `$quantile` (0.5 ... 0.99) is replaced before it is sent.

    RESOURCE_QUERIES  cpu and memory: one series per pod (the agent takes the mean)
    GATEWAY_QUERIES   rps, error_rate, latency: one number per service, per gateway
                      implementation ([prometheus] gateway = "envoy-gateway", "istio",
                      "nginx", "traefik")
    templates()       the queries in force: the gateway's, with the stack file's
                      `[prometheus] queries = { rps = "..." }` in place of any of them
    query_vector()    an instant query's series as {labels: value}, or why there are none

docs/kubernetes.md ("The agent on Kubernetes") shows every template.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

from sqlifier.errors import UserError
from sqlifier.signals import prometheus
from sqlifier.stack.model import PROMETHEUS_GATEWAYS, PROMETHEUS_SIGNALS

__all__ = [
    "GATEWAY_QUERIES",
    "QUANTILES",
    "RESOURCE_QUERIES",
    "SIGNALS",
    "VectorResult",
    "fill",
    "query_vector",
    "templates",
]

QUANTILES = (50, 90, 95, 99)
WINDOW = "1m"
SIGNALS = PROMETHEUS_SIGNALS

# Per pod: the sum of its containers (the pause container and the pod's own cgroup, which
# cAdvisor reports with container="" or "POD", are left out: they would count it twice).
_CONTAINERS = 'namespace="$namespace", pod=~"$pods", container!="", container!="POD"'
RESOURCE_QUERIES = {
    "cpu": f"sum by (pod) (rate(container_cpu_usage_seconds_total{{{_CONTAINERS}}}[$window]))",
    "memory": f"sum by (pod) (container_memory_working_set_bytes{{{_CONTAINERS}}})",
}

# rps, error_rate (a share, 0-1) and latency (seconds, at $quantile) of one service, as
# each Gateway implementation's metrics name its backends.
_ENVOY = 'envoy_cluster_name=~"httproute/$namespace/$service/.*"'
_ISTIO = 'destination_service_namespace="$namespace", destination_service_name="$service"'
_NGINX = 'exported_namespace="$namespace", service="$service"'
_TRAEFIK = 'service=~"$namespace-$service-.*"'
GATEWAY_QUERIES: dict[str, dict[str, str]] = {
    "envoy-gateway": {
        "rps": f"sum(rate(envoy_cluster_upstream_rq_total{{{_ENVOY}}}[$window]))",
        "error_rate": (
            f'sum(rate(envoy_cluster_upstream_rq_xx{{{_ENVOY}, envoy_response_code_class="5"}}'
            f"[$window])) / sum(rate(envoy_cluster_upstream_rq_total{{{_ENVOY}}}[$window]))"
        ),
        "latency": (
            "histogram_quantile($quantile, sum by (le) (rate("
            f"envoy_cluster_upstream_rq_time_bucket{{{_ENVOY}}}[$window]))) / 1000"
        ),
    },
    "istio": {
        "rps": f"sum(rate(istio_requests_total{{{_ISTIO}}}[$window]))",
        "error_rate": (
            f'sum(rate(istio_requests_total{{{_ISTIO}, response_code=~"5.."}}[$window])) '
            f"/ sum(rate(istio_requests_total{{{_ISTIO}}}[$window]))"
        ),
        "latency": (
            "histogram_quantile($quantile, sum by (le) (rate("
            f"istio_request_duration_milliseconds_bucket{{{_ISTIO}}}[$window]))) / 1000"
        ),
    },
    "nginx": {
        "rps": f"sum(rate(nginx_ingress_controller_requests{{{_NGINX}}}[$window]))",
        "error_rate": (
            f'sum(rate(nginx_ingress_controller_requests{{{_NGINX}, status=~"5.."}}[$window])) '
            f"/ sum(rate(nginx_ingress_controller_requests{{{_NGINX}}}[$window]))"
        ),
        "latency": (
            "histogram_quantile($quantile, sum by (le) (rate("
            f"nginx_ingress_controller_request_duration_seconds_bucket{{{_NGINX}}}[$window])))"
        ),
    },
    "traefik": {
        "rps": f"sum(rate(traefik_service_requests_total{{{_TRAEFIK}}}[$window]))",
        "error_rate": (
            f'sum(rate(traefik_service_requests_total{{{_TRAEFIK}, code=~"5.."}}[$window])) '
            f"/ sum(rate(traefik_service_requests_total{{{_TRAEFIK}}}[$window]))"
        ),
        "latency": (
            "histogram_quantile($quantile, sum by (le) (rate("
            f"traefik_service_request_duration_seconds_bucket{{{_TRAEFIK}}}[$window])))"
        ),
    },
}
GATEWAYS = PROMETHEUS_GATEWAYS
assert set(GATEWAY_QUERIES) == set(GATEWAYS)


def templates(gateway: str | None, overrides: Mapping[str, str]) -> dict[str, str]:
    """The query of each signal: cAdvisor's for cpu and memory, the gateway's for traffic,
    and the stack file's own where it gives one. UserError for a gateway not known here
    (with no query of its own for each traffic signal) or a signal that is not one."""
    unknown = sorted(set(overrides) - set(SIGNALS))
    if unknown:
        raise UserError(
            f"[prometheus] queries names {', '.join(unknown)}: the signals a query can be "
            f"given for are {', '.join(SIGNALS)}"
        )
    out = dict(RESOURCE_QUERIES)
    if gateway is not None:
        known = GATEWAY_QUERIES.get(gateway)
        if known is None:
            raise UserError(
                f'[prometheus] gateway = "{gateway}" is not a gateway sqlifier has queries for: '
                f"use one of {', '.join(GATEWAYS)}, or give each of rps, error_rate and "
                "latency in [prometheus] queries"
            )
        out.update(known)
    out.update(overrides)
    return out


def fill(template: str, values: Mapping[str, str]) -> str:
    """The template with each `$name` of `values` replaced (longest names first)."""
    for name in sorted(values, key=len, reverse=True):
        template = template.replace(f"${name}", values[name])
    return template


def pods_regex(names: list[str]) -> str:
    """Pod names as an exact-match alternation for `pod=~"..."` (PromQL anchors it). A
    pod's name is letters, digits, '-' and '.': only the dot needs escaping, and in a
    PromQL string its backslash is written twice."""
    return "|".join(n.replace(".", "\\\\.") for n in sorted(names)) or "^$"


@dataclass(frozen=True, slots=True)
class VectorResult:
    series: dict[str, float]  # the label a caller asked for ("pod") -> value; {"": v} for one
    error: str | None  # why there is nothing: as prometheus.query words it


async def query_vector(base_url: str, promql: str, timeout: float, by: str = "") -> VectorResult:
    """An instant query: each series' value under its label `by` ("" for a single number,
    a scalar, or a vector of one series). NaN and infinities are left out."""
    try:
        async with asyncio.timeout(timeout):
            status, body = await prometheus._get(
                base_url, {"query": promql, "timeout": f"{timeout:g}"}
            )
    except TimeoutError:
        return VectorResult({}, f"timed out after {timeout:g}s")
    except ConnectionRefusedError:
        return VectorResult({}, "connection refused")
    except (OSError, ValueError) as exc:
        return VectorResult({}, str(exc) or type(exc).__name__)
    try:
        answer = json.loads(body)
        if answer.get("status") != "success":
            return VectorResult(
                {}, f"query error: {answer.get('errorType')}: {answer.get('error')}"
            )
        data = answer["data"]
        if data["resultType"] == "scalar":
            return _finite({"": float(data["result"][1])})
        series = {}
        for item in data["result"]:
            label = str(item["metric"].get(by, "")) if by else ""
            series[label] = float(item["value"][1])
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return VectorResult({}, f"not a Prometheus answer (HTTP {status})")
    result = _finite(series)
    if not result.series and result.error is None:
        return VectorResult({}, "the query returned no series")
    return result


def _finite(series: dict[str, float]) -> VectorResult:
    kept = {k: v for k, v in series.items() if math.isfinite(v)}
    if series and not kept:
        return VectorResult({}, "the query returned NaN")
    return VectorResult(kept, None)
