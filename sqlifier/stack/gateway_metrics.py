"""`[prometheus] gateway_metrics`: whose request metrics count a service's requests on
Kubernetes, for its SLOs (docs/slo.md, "On Kubernetes").

    gateway_metrics = "istio"                  # a Gateway API implementation sqlifier knows
    gateway_metrics = { requests = 'http_requests_total{service="$service"}',
                        errors = 'http_requests_total{service="$service",code=~"5.."}',
                        latency = 'http_request_duration_seconds_bucket{service="$service"}',
                        unit = "s" }           # or the metrics written out

Each query is a selector (a metric name and its label matchers) in which `$service` and
`$namespace` name the service; `latency` is a histogram's bucket series without `le`, which
sqlifier adds for each objective's threshold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlifier.stack import model as m
from sqlifier.stack.dropped import INVALID as _INVALID  # what the reader drops from a table

if TYPE_CHECKING:
    from sqlifier.stack.reader import StackReader
    from sqlifier.stack.tomlpos import Path as KeyPath

__all__ = ["read_gateway_metrics"]

_UNITS = {"s": 1.0, "ms": 0.001}


def read_gateway_metrics(reader: StackReader) -> Any:
    """The reader of the key, for `[prometheus]`'s schema."""

    def read(value: object, path: KeyPath) -> Any:
        if isinstance(value, dict):
            return _queries(reader, value, path)
        known = [g.value for g in m.GatewayMetrics]
        if isinstance(value, str) and value in known:
            return m.GatewayMetrics(value)
        return reader.choice(m.GatewayMetrics)(value, path)  # reports what is valid

    return read


def _queries(reader: StackReader, value: dict[str, Any], path: KeyPath) -> Any:
    where = ".".join(str(p) for p in path)
    schema = {
        "requests": _selector(reader),
        "errors": _selector(reader),
        "latency": _selector(reader, histogram=True),
        "unit": _unit(reader),
    }
    typed = reader.table(value, path, schema, where)
    if typed is None:
        return _INVALID
    missing = [key for key in ("requests", "errors") if key not in value]
    if missing:
        reader.error(
            path,
            f"{where} needs {' and '.join(missing)}: the selector of every request to a "
            "service and of those answered 5xx, like requests = 'http_requests_total{service=\""
            "$service\"}'",
        )
        return _INVALID
    if "requests" not in typed or "errors" not in typed:
        return _INVALID  # reported above
    return m.MetricQueries(
        typed["requests"], typed["errors"], typed.get("latency"), typed.get("unit", 1.0)
    )


def _selector(reader: StackReader, histogram: bool = False) -> Any:
    def read(value: object, path: KeyPath) -> Any:
        where = ".".join(str(p) for p in path)
        text = reader.text(value, path)
        if text is _INVALID or not isinstance(text, str):
            return _INVALID
        if "$service" not in text:
            reader.error(
                path,
                f"{where} must name the service with $service, like "
                f"'{_example(histogram)}': without it every service reads the same requests",
            )
            return _INVALID
        if histogram and "le=" in text.replace(" ", ""):
            reader.error(
                path,
                f"{where} must leave out le: sqlifier adds it for each latency objective's "
                f"threshold, like '{_example(True)}'",
            )
            return _INVALID
        return text

    return read


def _unit(reader: StackReader) -> Any:
    def read(value: object, path: KeyPath) -> Any:
        if isinstance(value, str) and value in _UNITS:
            return _UNITS[value]
        where = ".".join(str(p) for p in path)
        shown = f"'{value}'" if isinstance(value, str) else str(value)
        reader.error(
            path,
            f'{where} must be "s" or "ms" (the unit of the histogram\'s le), found {shown}',
        )
        return _INVALID

    return read


def _example(histogram: bool) -> str:
    if histogram:
        return 'http_request_duration_seconds_bucket{service="$service"}'
    return 'http_requests_total{service="$service"}'
