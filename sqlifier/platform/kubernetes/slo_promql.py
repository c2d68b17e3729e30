"""SLOs on Kubernetes: the good and total requests of an objective as PromQL, and the
counts read back over Prometheus' HTTP API for the agent (the rules `sqlifier render`
writes of the same PromQL are in slo_rules.py).

On a cluster the requests are counted by the Gateway, and Prometheus scrapes its counters.
Which counters depends on the Gateway API implementation (`[prometheus] gateway_metrics`):

    envoy-gateway         envoy_cluster_upstream_rq_total, _rq_xx{class 5}, _rq_time_bucket
                          (ms), per HTTPRoute rule: `httproute/NAMESPACE/ROUTE/rule/N`
    istio                 istio_requests_total{response_code}, istio_request_duration_
                          milliseconds_bucket, per destination service (reporter="source")
    nginx-gateway-fabric  nginx_http_upstream_peer_responses_total{nginx_status_range} per
                          upstream `NAMESPACE_SERVICE_80` (NGINX Plus); no latency histogram

An objective's requests, over a window W:

    availability  total = increase(requests[W]), bad = increase(errors[W])
    latency       total = increase(bucket{le="+Inf"}[W]), good = increase(bucket{le=P}[W])

`burn_rate` and `budget_left` (engine/slo.py) make the same figures of those counts as on
the local platform. `PrometheusSlo` reads the counts over the HTTP API (urllib, one instant
query each): what the agent calls on a cluster.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from sqlifier.engine.slo import BURN_WINDOWS, SloFigures, budget_left, burn_rate, exhaustion
from sqlifier.errors import UserError
from sqlifier.platform.kubernetes.render_common import Target
from sqlifier.stack.model import GatewayMetrics, MetricQueries, Objective, Prometheus, Stack

__all__ = [
    "PRESETS",
    "Counts",
    "PrometheusSlo",
    "Queries",
    "bound",
    "burn_rate_expr",
    "error_ratio",
    "events",
    "queries_for",
    "rates",
    "window_text",
]

# Envoy's default histogram bounds (milliseconds), which Envoy Gateway and Istio keep.
_ENVOY_BUCKETS: tuple[float, ...] = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
_ENVOY_BUCKETS += (10000, 30000, 60000, 300000, 600000, 1800000, 3600000)
# An HTTPRoute of the service: `NAME` (routes without a host) or `NAME.HOST`.
_ENVOY_ROUTE = 'envoy_cluster_name=~"httproute/$namespace/$service(/|[.][^/]*/)rule/[0-9]+"'
_ISTIO = 'reporter="source",destination_service_name="$service",destination_service_namespace="$namespace"'  # noqa: E501


@dataclass(frozen=True, slots=True)
class Queries:
    """A source of request metrics: selectors where `$service` and `$namespace` name a
    service; `latency` a histogram's bucket series without `le`, in `unit` seconds, with
    its bounds when they are known (a threshold between two is taken at the lower)."""

    name: str
    requests: str
    errors: str
    latency: str | None
    unit: float = 1.0
    buckets: tuple[float, ...] = ()


PRESETS: dict[GatewayMetrics, Queries] = {
    GatewayMetrics.ENVOY_GATEWAY: Queries(
        "envoy-gateway",
        f"envoy_cluster_upstream_rq_total{{{_ENVOY_ROUTE}}}",
        f'envoy_cluster_upstream_rq_xx{{envoy_response_code_class="5",{_ENVOY_ROUTE}}}',
        f"envoy_cluster_upstream_rq_time_bucket{{{_ENVOY_ROUTE}}}",
        0.001,
        _ENVOY_BUCKETS,
    ),
    GatewayMetrics.ISTIO: Queries(
        "istio",
        f"istio_requests_total{{{_ISTIO}}}",
        f'istio_requests_total{{{_ISTIO},response_code=~"5..|0"}}',  # 0: no answer at all
        f"istio_request_duration_milliseconds_bucket{{{_ISTIO}}}",
        0.001,
        _ENVOY_BUCKETS,
    ),
    GatewayMetrics.NGINX_GATEWAY_FABRIC: Queries(
        "nginx-gateway-fabric",
        'nginx_http_upstream_peer_responses_total{nginx_upstream_name="$namespace_$service_80"}',
        'nginx_http_upstream_peer_responses_total{nginx_upstream_name="$namespace_$service_80",'
        'nginx_status_range="5xx"}',
        None,
    ),
}


def queries_for(prometheus: Prometheus) -> Queries:
    """The queries `[prometheus] gateway_metrics` names (Envoy Gateway's without it)."""
    chosen = prometheus.gateway_metrics
    if chosen is None:
        return PRESETS[GatewayMetrics.ENVOY_GATEWAY]
    if isinstance(chosen, GatewayMetrics):
        return PRESETS[chosen]
    assert isinstance(chosen, MetricQueries)
    return Queries("custom", chosen.requests, chosen.errors, chosen.latency, chosen.unit)


def window_text(seconds: float) -> str:
    """A window as PromQL writes it: 300 -> 5m, 259200 -> 3d, 5400 -> 90m."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{math.ceil(seconds)}s"


# --- the PromQL of one objective -------------------------------------------------------


def _fill(selector: str, service: str, namespace: str) -> str:
    return selector.replace("$namespace", namespace).replace("$service", service)


def _with_le(selector: str, le: str) -> str:
    """The bucket selector with an `le` matcher: `x{a="b"}` -> `x{a="b",le=~"..."}`."""
    matcher = f'le=~"{le}"'
    if selector.endswith("{}"):
        return f"{selector[:-2]}{{{matcher}}}"
    if selector.endswith("}"):
        return f"{selector[:-1]},{matcher}}}"
    return f"{selector}{{{matcher}}}"


def bound(queries: Queries, threshold: float) -> float:
    """The histogram bound a latency threshold (seconds) is counted at, in its unit: the
    threshold itself, or the largest known bound below it."""
    value = threshold / queries.unit
    below = [b for b in queries.buckets if b <= value * (1 + 1e-9)]
    if queries.buckets and below:
        return float(below[-1])
    return value


def _le_pattern(value: float) -> str:
    """A regex matching a bound however the exporter wrote it: 300, 300.0, 0.25."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    escaped = text.replace(".", "[.]")
    return f"{escaped}([.]0*)?" if "." not in text else f"{escaped}0*"


def _selectors(
    queries: Queries, objective: Objective, service: str, namespace: str
) -> tuple[str, str, bool]:
    """(the selector of all requests, of the bad ones or the good ones, whether it counts
    the good ones) of one objective."""
    if objective.name == "availability":
        return (
            _fill(queries.requests, service, namespace),
            _fill(queries.errors, service, namespace),
            False,
        )
    if queries.latency is None or objective.threshold is None:
        raise UserError(
            f"service {service}: its latency objective cannot be counted from "
            f"{queries.name}'s metrics, which have no latency histogram; set "
            "[prometheus] gateway_metrics to a table with a latency bucket series, like "
            "latency = 'http_request_duration_seconds_bucket{service=\"$service\"}'"
        )
    bucket = _fill(queries.latency, service, namespace)
    fast = _le_pattern(bound(queries, objective.threshold))
    return _with_le(bucket, r"[+]Inf"), _with_le(bucket, fast), True


def events(
    queries: Queries, objective: Objective, service: str, namespace: str, window: float
) -> tuple[str, str]:
    """(good, total) requests of one objective over the last `window` seconds, as PromQL."""
    total, other, counts_good = _selectors(queries, objective, service, namespace)
    w = window_text(window)
    total_q = f"sum(increase({total}[{w}]))"
    if counts_good:
        return f"sum(increase({other}[{w}]))", total_q
    # No series of errors yet (Envoy makes one at the first 5xx): none were bad.
    return f"{total_q} - (sum(increase({other}[{w}])) or {total_q} * 0)", total_q


def rates(
    queries: Queries, objective: Objective, service: str, namespace: str, window: str
) -> tuple[str, str]:
    """(bad, total) requests a second over `window` (PromQL's `5m`): both, or neither."""
    total, other, counts_good = _selectors(queries, objective, service, namespace)
    total_q = f"sum(rate({total}[{window}]))"
    if counts_good:
        return f"{total_q} - sum(rate({other}[{window}]))", total_q
    return f"(sum(rate({other}[{window}])) or {total_q} * 0)", total_q


def error_ratio(
    queries: Queries, objective: Objective, service: str, namespace: str, window: float
) -> str:
    """The share of bad requests over `window`, as PromQL; nothing without requests."""
    bad, total = rates(queries, objective, service, namespace, window_text(window))
    return f"({bad}) / ({total} > 0)"


def burn_rate_expr(
    queries: Queries, objective: Objective, service: str, namespace: str, window: float
) -> str:
    """The burn rate over `window`, as PromQL: the share of bad requests over the share the
    objective allows (`burn_rate(W)` of a rule); nothing without requests."""
    ratio = error_ratio(queries, objective, service, namespace, window)
    return f"{ratio} / {1.0 - objective.target:.10g}"


# --- the counts, read from Prometheus --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Counts:
    """Good and total requests of a window (0 and 0 without requests), or why there are
    none: `error` names the Prometheus and what went wrong."""

    good: float = 0.0
    total: float = 0.0
    error: str | None = None


class PrometheusSlo:
    """An environment's objectives, counted by a Prometheus server over its HTTP API."""

    def __init__(
        self,
        url: str,
        namespace: str,
        queries: Queries,
        timeout: float = 2.0,
        opener: urllib.request.OpenerDirector | None = None,
    ) -> None:
        split = urlsplit(url)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise ValueError(f"not an http:// or https:// URL: {url!r}")
        self.url = url.rstrip("/")
        self.namespace = namespace
        self.queries = queries
        self.timeout = timeout
        self._opener = opener or urllib.request.build_opener()

    @classmethod
    def of(cls, stack: Stack, env: str) -> PrometheusSlo:
        """The Prometheus of a Kubernetes environment's SLOs (`[prometheus] url`)."""
        target = Target.of(stack, env)
        url = stack.prometheus.url
        if url is None:
            raise UserError(
                f"environment {env} of {stack.path.name} runs on Kubernetes, where the SLOs "
                "are counted by Prometheus: set [prometheus] url, like "
                'url = "http://prometheus.monitoring:9090"'
            )
        try:
            return cls(
                url, target.namespace, queries_for(stack.prometheus), stack.prometheus.timeout
            )
        except ValueError as exc:
            raise UserError(
                f"{stack.path.name}: [prometheus] url: {exc}; write it like "
                '"http://prometheus.monitoring:9090"'
            ) from None

    def counts(
        self, service: str, objective: Objective, window: float, at: float | None = None
    ) -> Counts:
        """Good and total requests of `service`'s objective over the `window` seconds
        before `at` (Prometheus' now without it)."""
        good_q, total_q = events(self.queries, objective, service, self.namespace, window)
        good, error = self._value(good_q, at)
        if error is not None:
            return Counts(error=error)
        total, error = self._value(total_q, at)
        if error is not None:
            return Counts(error=error)
        if good is None or total is None or total <= 0:
            return Counts()
        return Counts(min(max(good, 0.0), total), total)

    def burn_rate(
        self, service: str, objective: Objective, window: float, at: float | None = None
    ) -> float | None:
        counts = self.counts(service, objective, window, at)
        return burn_rate(counts.good, counts.total, objective.target)

    def budget_left(
        self, service: str, objective: Objective, window: float, at: float | None = None
    ) -> float | None:
        counts = self.counts(service, objective, window, at)
        return budget_left(counts.good, counts.total, objective.target)

    def figures(
        self, service: str, objective: Objective, window: float, at: float
    ) -> SloFigures | str:
        """What `sqlifier slo` shows of one objective whose window is `window` seconds, at
        `at`; or why Prometheus could not tell (the first error met)."""
        whole = self.counts(service, objective, window, at)
        if whole.error is not None:
            return whole.error
        rates: dict[float, float | None] = {}
        for seconds in BURN_WINDOWS:
            counts = self.counts(service, objective, min(seconds, window), at)
            if counts.error is not None:
                return counts.error
            rates[seconds] = burn_rate(counts.good, counts.total, objective.target)
        left = budget_left(whole.good, whole.total, objective.target)
        return SloFigures(
            service,
            objective.name,
            objective.target,
            window,
            whole.good,
            whole.total,
            left,
            rates,
            exhaustion(left, rates.get(3600.0), window),
        )

    def _value(self, promql: str, at: float | None) -> tuple[float | None, str | None]:
        """(the query's one value or None without series, why it failed)."""
        params = {"query": promql, "timeout": f"{self.timeout:g}s"}
        if at is not None:
            params["time"] = f"{at:.3f}"
        where = f"{self.url}/api/v1/query"
        try:
            with self._opener.open(f"{where}?{urlencode(params)}", timeout=self.timeout) as r:
                body = r.read()
        except urllib.error.HTTPError as exc:
            with exc:
                body = exc.read()
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            return None, f"{where}: {reason}"
        return _read(where, body)


def _read(where: str, body: bytes) -> tuple[float | None, str | None]:
    try:
        answer = json.loads(body)
        if answer["status"] != "success":
            return None, f"{where}: {answer.get('errorType')}: {answer.get('error')}"
        result = answer["data"]["result"]
        if not result:
            return None, None
        value = float(result[0]["value"][1])
    except (ValueError, KeyError, IndexError, TypeError):
        return None, f"{where}: not a Prometheus answer"
    return (None, None) if math.isnan(value) else (value, None)
