"""The agent's `/metrics`: a snapshot of its measurements in the Prometheus text format.

`render` turns a plain snapshot (the agent builds it once per scrape) into the text
exposition format 0.0.4. Names follow Prometheus conventions: base units (seconds, bytes,
ratios where 1.0 is 100%), `_total` on counters, and every series labelled with the
stack and environment. A value that is missing or None has no sample: its line is left
out, never written as 0. A family without any sample is left out as well.

The router's own counts are counters and a histogram, so that `rate()`, `sum by` and
`histogram_quantile()` work on them: `sqlifier_router_requests_total` by service, track and
status class (`code="2xx"`), and `sqlifier_router_request_duration_seconds` (`_bucket`
with `le` in seconds, `_sum`, `_count`) by service and track. They come from the data
plane's cumulative counts, kept monotonic across its restarts (`totals.py`); the gauges
beside them (`sqlifier_service_requests_per_second`, `..._latency_seconds`) are the same
measurements over the last ten seconds, as the rules see them.

`sqlifier_instance_state` has an `instance` label, which Prometheus also attaches to
every target: a scrape configuration without `honor_labels: true` keeps the agent's as
`exported_instance`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlifier.lang.signals import LOG_LEVELS, QUANTILES
from sqlifier.router.metrics import BUCKETS_MS, CLASSES

__all__ = ["CONTENT_TYPE", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[tuple[str, str], ...]
Sample = tuple[Labels, Any]


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    kind: str  # "gauge", "counter" or "histogram"
    help: str


def _gauge(name: str, text: str) -> Family:
    return Family(f"sqlifier_{name}", "gauge", text)


def _counter(name: str, text: str) -> Family:
    return Family(f"sqlifier_{name}_total", "counter", text)


# (key in a service's snapshot, family), in output order.
_SERVICE_GAUGES = (
    ("cpu", _gauge("service_cpu_ratio", "Mean CPU use per instance; 1.0 is one core.")),
    ("memory", _gauge("service_memory_bytes", "Mean resident memory per instance.")),
    ("rps", _gauge("service_requests_per_second", "Requests per second through the router.")),
    ("error_rate", _gauge("service_error_ratio", "Share of responses with a 5xx status.")),
)
# The label is `percentile` ("p99", spelled as in `latency(p99)`), not `quantile`: that
# label belongs to summaries, which also carry _sum and _count, and `promtool check
# metrics` refuses it on a gauge.
_LATENCY = _gauge(
    "service_latency_seconds",
    "Request latency percentile through the router, over the last measurement window.",
)
_SERVICE_COUNTS = (
    ("instances", _gauge("service_instances", "Running instances.")),
    ("ready_instances", _gauge("service_ready_instances", "Ready instances.")),
    ("restarts_total", _counter("service_restarts", "Instance restarts.")),
)
_LOG_LINES = _counter("service_log_lines", "Log lines from the service's instances, by level.")
_ROUTER_REQUESTS = _counter(
    "router_requests", "Requests through the router, by service, track and status class."
)
_ROUTER_LATENCY = Family(
    "sqlifier_router_request_duration_seconds",
    "histogram",
    "Latency of requests through the router, by service and track.",
)
# The histogram's upper bounds in seconds, as `le` values; the last is +Inf.
_LE = (*(format(ms / 1000, "g") for ms in BUCKETS_MS), "+Inf")
_INSTANCE_STATE = _gauge("instance_state", "1 for the instance's current state.")
_INSTANCE_CPU = _gauge("instance_cpu_ratio", "CPU use of the instance; 1.0 is one core.")
_INSTANCE_MEMORY = _gauge("instance_memory_bytes", "Resident memory of the instance.")
_RULE_STATE = _gauge("rule_state", "1 for the rule's current state for the service.")
_ACTIONS = _counter("rule_actions", "Actions started by rules, by result.")
_DECISIONS = _counter("rule_decisions", "Decisions recorded by rules.")
_ENGINE = (
    ("ticks_total", _counter("engine_ticks", "Rule evaluation rounds.")),
    ("last_tick_seconds", _gauge("engine_last_tick_seconds", "Duration of the last round.")),
    ("paused", _gauge("engine_paused", "1 while automation is paused.")),
)


def render(snapshot: Mapping[str, Any]) -> str:
    """The snapshot in the Prometheus text exposition format 0.0.4, in a stable order."""
    common: Labels = (("stack", str(snapshot["stack"])), ("env", str(snapshot["env"])))
    lines: list[str] = []
    for family, samples in _families(snapshot):
        present = [(labels, value) for labels, value in samples if value is not None]
        if not present:
            continue
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for labels, value in present:
            if family.kind == "histogram":
                lines.extend(_histogram(family.name, common + labels, value))
            else:
                lines.append(f"{family.name}{_labels(common + labels)} {_value(value)}")
    return "".join(line + "\n" for line in lines)


def _families(snapshot: Mapping[str, Any]) -> Iterator[tuple[Family, list[Sample]]]:
    services = sorted((snapshot.get("services") or {}).items())
    yield from _service_families(services)
    yield from _router_families(snapshot.get("router") or [])
    instances = sorted(snapshot.get("instances") or [], key=lambda i: (i["service"], i["instance"]))
    yield from _instance_families(instances)
    rules = sorted(snapshot.get("rules") or [], key=lambda r: (r["rule"], r["service"]))
    yield _RULE_STATE, [(_pick(r, "rule", "service", "state"), 1) for r in rules]
    yield _ACTIONS, _counts(snapshot.get("actions_total"), "rule", "service", "action", "result")
    yield _DECISIONS, _counts(snapshot.get("decisions_total"), "rule", "service", "decision")
    engine = snapshot.get("engine") or {}
    for key, family in _ENGINE:
        yield family, [((), engine.get(key))]
    yield from _slo_families(snapshot.get("slo") or [])


_SLO_TARGET = _gauge("slo_objective_ratio", "The objective's target; 0.999 is 99.9%.")
_SLO_BUDGET = _gauge(
    "slo_error_budget_remaining_ratio", "Share of the window's error budget left; below 0 spent."
)
_SLO_BURN = _gauge("slo_burn_rate", "Error budget burn rate over a window; 1 is on budget.")
_SLO_REQUESTS = _gauge(
    "slo_window_requests", "Requests counted over the objective's window, good or all."
)


def _slo_families(rows: Iterable[Mapping[str, Any]]) -> Iterator[tuple[Family, list[Sample]]]:
    """Each objective's target, budget left, burn rates (`window` label, like "1h") and
    the window's good and total requests (`kind` label)."""
    rows = sorted(rows, key=lambda r: (r["service"], r["objective"]))
    yield _SLO_TARGET, [(_pick(r, "service", "objective"), r["target"]) for r in rows]
    yield _SLO_BUDGET, [(_pick(r, "service", "objective"), r["budget_left"]) for r in rows]
    yield (
        _SLO_BURN,
        [
            ((*_pick(r, "service", "objective"), ("window", window)), rate)
            for r in rows
            for window, rate in r["burn_rates"].items()
        ],
    )
    yield (
        _SLO_REQUESTS,
        [
            ((*_pick(r, "service", "objective"), ("kind", kind)), r[kind])
            for r in rows
            for kind in ("good", "total")
        ],
    )


def _service_families(
    services: list[tuple[str, Mapping[str, Any]]],
) -> Iterator[tuple[Family, list[Sample]]]:
    for key, family in _SERVICE_GAUGES:
        yield family, [((("service", name),), values.get(key)) for name, values in services]
    yield (
        _LATENCY,
        [
            ((("service", name), ("percentile", q)), values.get(f"latency_{q}"))
            for name, values in services
            for q in QUANTILES
        ],
    )
    for key, family in _SERVICE_COUNTS:
        yield family, [((("service", name),), values.get(key)) for name, values in services]
    yield (
        _LOG_LINES,
        [
            ((("service", name), ("level", level)), count)
            for name, values in services
            for level, count in sorted((values.get("log_lines_total") or {}).items(), key=_severity)
        ],
    )


def _router_families(
    rows: Iterable[Mapping[str, Any]],
) -> Iterator[tuple[Family, list[Sample]]]:
    rows = sorted(rows, key=lambda r: (r["service"], r["track"]))
    yield (
        _ROUTER_REQUESTS,
        [
            ((*_pick(row, "service", "track"), ("code", code)), row["status"].get(code, 0))
            for row in rows
            for code in CLASSES
        ],
    )
    yield (
        _ROUTER_LATENCY,
        [(_pick(row, "service", "track"), (row["latency"], row["latency_sum"])) for row in rows],
    )


def _histogram(name: str, labels: Labels, value: tuple[list[int], float]) -> Iterator[str]:
    """A histogram's lines: cumulative `_bucket`s by `le`, then `_sum` and `_count`."""
    buckets, total = value
    seen = 0
    for le, count in zip(_LE, buckets, strict=True):
        seen += count
        yield f"{name}_bucket{_labels((*labels, ('le', le)))} {seen}"
    yield f"{name}_sum{_labels(labels)} {_value(total)}"
    yield f"{name}_count{_labels(labels)} {seen}"


def _instance_families(
    instances: list[Mapping[str, Any]],
) -> Iterator[tuple[Family, list[Sample]]]:
    yield _INSTANCE_STATE, [(_pick(i, "service", "instance", "state"), 1) for i in instances]
    yield _INSTANCE_CPU, [(_pick(i, "service", "instance"), i.get("cpu")) for i in instances]
    yield _INSTANCE_MEMORY, [(_pick(i, "service", "instance"), i.get("memory")) for i in instances]


def _counts(rows: Iterable[Mapping[str, Any]] | None, *keys: str) -> list[Sample]:
    return sorted(((_pick(row, *keys), row.get("count")) for row in rows or []), key=_by_labels)


def _by_labels(sample: Sample) -> Labels:
    return sample[0]


def _pick(row: Mapping[str, Any], *keys: str) -> Labels:
    return tuple((key, str(row[key])) for key in keys)


def _severity(item: tuple[str, Any]) -> tuple[int, str]:
    return LOG_LEVELS.get(item[0], 100), item[0]


def _labels(labels: Labels) -> str:
    return "{" + ",".join(f'{name}="{_escape_label(value)}"' for name, value in labels) + "}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _value(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)
