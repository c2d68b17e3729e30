"""SLOs on Kubernetes: the good and total requests of an objective as PromQL, the
Prometheus rules `sqlifier render` writes for them, and the counts read back over the HTTP
API for the agent.

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
the local platform. The rules (`rule_groups`) record, per service and objective, the error
ratio and burn rate over 5m, 30m, 1h, 6h and 3d, the error ratio over the SLO's window and
the budget left, and alert with the SRE workbook's multi-window pairs (14.4 over 1h and 5m,
6 over 6h and 30m, 1 over 3d and 6h). `PrometheusSlo` reads the counts over the HTTP API
(urllib, one instant query each): what the agent calls on a cluster.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from sqlifier.engine.slo import BURN_WINDOWS, SloFigures, budget_left, burn_rate, exhaustion
from sqlifier.errors import UserError
from sqlifier.platform.kubernetes.render_common import Manifest, Target, metadata
from sqlifier.stack.model import GatewayMetrics, MetricQueries, Objective, Prometheus, Stack

__all__ = [
    "ALERTS",
    "PRESETS",
    "Counts",
    "PrometheusSlo",
    "Queries",
    "error_ratio",
    "events",
    "prometheus_rule",
    "queries_for",
    "rule_groups",
    "rules_text",
    "threshold_notes",
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

# (alert, severity, long window, short window, share of the budget spent over the long
# window when it fires): the Google SRE workbook's pairs, as the rules `sqlifier init` ships.
ALERTS = (
    ("SqlifierSloPage", "page", 3600.0, 300.0, 0.02),
    ("SqlifierSloTicket", "ticket", 21600.0, 1800.0, 0.05),
    ("SqlifierSloTicketSlow", "ticket", 259200.0, 21600.0, 0.10),
)


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


def threshold_notes(stack: Stack, env: str) -> list[str]:
    """A warning per latency objective whose threshold is no bound of the histogram: it is
    counted at the bound below, stricter than written."""
    queries = queries_for(stack.prometheus)
    notes = []
    for name, service in sorted(stack.services_for(env).items()):
        for objective in service.slo.objectives if service.slo else ():
            if objective.threshold is None or not queries.buckets or queries.latency is None:
                continue
            at = bound(queries, objective.threshold)
            if abs(at * queries.unit - objective.threshold) > 1e-9:
                above = [b for b in queries.buckets if b > at][:1]
                nearby = ", ".join(_ms(b * queries.unit) for b in (at, *above))
                notes.append(
                    f"service {name}: latency p = {_ms(objective.threshold)} is counted at "
                    f"{_ms(at * queries.unit)}, the bound below it in {queries.name}'s latency "
                    f"histogram; set p on a bound ({nearby}) to count exactly"
                )
    return notes


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"


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


def _rates(
    queries: Queries, objective: Objective, service: str, namespace: str, window: str
) -> tuple[str, str]:
    """(bad, total) requests a second over `window`: both there, or neither."""
    total, other, counts_good = _selectors(queries, objective, service, namespace)
    total_q = f"sum(rate({total}[{window}]))"
    if counts_good:
        return f"{total_q} - sum(rate({other}[{window}]))", total_q
    return f"(sum(rate({other}[{window}])) or {total_q} * 0)", total_q


def error_ratio(
    queries: Queries, objective: Objective, service: str, namespace: str, window: float
) -> str:
    """The share of bad requests over `window`, as PromQL; nothing without requests."""
    bad, total = _rates(queries, objective, service, namespace, window_text(window))
    return f"({bad}) / ({total} > 0)"


# --- the rules file --------------------------------------------------------------------

_RATIO = "sqlifier:slo_error_ratio:rate{w}"
_BURN = "sqlifier:slo_burn_rate:{w}"


def rule_groups(stack: Stack, env: str) -> list[dict[str, Any]]:
    """The Prometheus rule groups of every objective of environment `env`: one group per
    service and objective (empty when no service has an `slo`)."""
    target = Target.of(stack, env)
    queries = queries_for(stack.prometheus)
    groups = []
    for name, service in sorted(stack.services_for(env).items()):
        if service.slo is None:
            continue
        for objective in service.slo.objectives:
            groups.append(
                {
                    "name": f"sqlifier-slo-{name}-{objective.name}",
                    "rules": list(_rules(target, queries, name, objective, service.slo.window)),
                }
            )
    return groups


def _rules(
    target: Target, queries: Queries, service: str, objective: Objective, window: float
) -> Iterator[dict[str, Any]]:
    labels = {
        "sqlifier_stack": target.stack,
        "sqlifier_env": target.env,
        "service": service,
        "objective": objective.name,
    }
    match = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    budget = 1.0 - objective.target
    bad, total = _rates(queries, objective, service, target.namespace, "5m")
    yield {"record": "sqlifier:slo_bad:rate5m", "expr": bad, "labels": labels}
    yield {"record": "sqlifier:slo_total:rate5m", "expr": total, "labels": labels}
    for seconds in BURN_WINDOWS:
        w = window_text(seconds)
        if w == "5m":
            expr = f"sqlifier:slo_bad:rate5m{match} / (sqlifier:slo_total:rate5m{match} > 0)"
        else:
            expr = error_ratio(queries, objective, service, target.namespace, seconds)
        yield {"record": _RATIO.format(w=w), "expr": expr, "labels": labels}
        yield {
            "record": _BURN.format(w=w),
            "expr": f"{_RATIO.format(w=w)}{match} / {budget:.10g}",
            "labels": labels,
        }
    # Over the SLO's window: the mean bad rate over the mean rate (each 5-minute rate
    # weighs alike, so the ratio is the window's share of bad requests).
    period = window_text(window)
    yield {
        "record": "sqlifier:slo_period_error_ratio",
        "expr": f"avg_over_time(sqlifier:slo_bad:rate5m{match}[{period}]) / "
        f"(avg_over_time(sqlifier:slo_total:rate5m{match}[{period}]) > 0)",
        "labels": {**labels, "slo_window": period},
    }
    yield {
        "record": "sqlifier:slo_error_budget_remaining:ratio",
        "expr": f"1 - sqlifier:slo_period_error_ratio{match} / {budget:.10g}",
        "labels": {**labels, "slo_window": period},
    }
    yield {
        "record": "sqlifier:slo_objective:ratio",
        "expr": f"vector({objective.target:.10g})",
        "labels": {**labels, "slo_window": period},
    }
    for alert, severity, long, short, share in ALERTS:
        factor = _factor(share, window, long)
        yield {
            "alert": alert,
            "expr": f"{_BURN.format(w=window_text(long))}{match} > {factor:g}\n"
            f"and {_BURN.format(w=window_text(short))}{match} > {factor:g}",
            "labels": {"severity": severity, "service": service, "objective": objective.name},
            "annotations": {
                "summary": f"{service} burns its {objective.name} error budget at "
                '{{ $value | printf "%.1f" }} times the sustainable rate',
                "description": f"{share:.0%} of the {period} error budget of {service} "
                f"({objective.name} {objective.target:.10g}) spent in "
                f"{window_text(long)}, and still burning over the last {window_text(short)}.",
            },
        }


def _factor(share: float, window: float, long: float) -> float:
    """The burn rate that spends `share` of the budget in `long`: 14.4, 6 and 1 for a
    30-day window; never below 1 (a budget spent no faster than it lasts is no alert)."""
    return max(1.0, round(share * window / long, 4))


def rules_text(groups: Sequence[Mapping[str, Any]], command: str) -> str:
    """The rule groups as a Prometheus rules file (`rule_files` in prometheus.yml)."""
    import yaml  # noqa: PLC0415 (render only)

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> Any:
        style = "|" if "\n" in value else None  # an alert's two windows, one a line
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    Dumper.ignore_aliases = lambda *_: True  # type: ignore[method-assign]  # each rule whole
    body = yaml.dump(
        {"groups": [dict(g) for g in groups]}, Dumper=Dumper, sort_keys=False, width=1000
    )
    return f"# Rendered by sqlifier ({command}); edits are lost on the next render.\n{body}"


def prometheus_rule(target: Target, groups: Sequence[Mapping[str, Any]]) -> Manifest:
    """The rule groups as a PrometheusRule (monitoring.coreos.com/v1, Prometheus Operator)."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": metadata(target, "sqlifier-slo"),
        "spec": {"groups": [dict(g) for g in groups]},
    }


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
