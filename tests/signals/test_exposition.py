"""The agent's /metrics: the text format, checked by promtool and scraped by Prometheus."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path
from typing import Any

from sqlifier.signals.exposition import render
from tests.prom import (
    PROMTOOL,
    MetricsServer,
    needs_prometheus,
    needs_promtool,
    running_prometheus,
    wait_for_value,
)

RICH: dict[str, Any] = {
    "stack": "shop",
    "env": "dev",
    "services": {
        "storefront": {
            "cpu": 0.42,
            "memory": 31457280.0,
            "rps": 12.5,
            "error_rate": 0.01,
            "latency_p50": 0.003,
            "latency_p90": 0.009,
            "latency_p95": 0.012,
            "latency_p99": 0.02,
            "instances": 2,
            "ready_instances": 2,
            "restarts_total": 3,
            "log_lines_total": {"info": 120, "error": 2, "critical": 0},
        },
        "checkout": {"cpu": 1.5, "memory": None, "instances": 1, "ready_instances": 0},
    },
    "router": [
        {
            "service": "storefront",
            "track": "stable",
            "status": {"1xx": 0, "2xx": 40, "3xx": 1, "4xx": 2, "5xx": 3},
            "latency": [1, 2, 3, *[0] * 22, 4],
            "latency_sum": 120.5,
        },
    ],
    "instances": [
        {"service": "storefront", "instance": "storefront-1", "state": "ready", "cpu": 0.5},
        {
            "service": "storefront",
            "instance": "storefront-0",
            "state": "ready",
            "cpu": 0.4,
            "memory": 1.0e7,
        },
        {"service": "checkout", "instance": "checkout-0", "state": "starting", "cpu": None},
    ],
    "rules": [
        {"rule": "storefront-autoscale", "service": "storefront", "state": "pending"},
        {"rule": "restart-crashed", "service": "checkout", "state": "firing"},
    ],
    "actions_total": [
        {
            "rule": "storefront-autoscale",
            "service": "storefront",
            "action": "SCALE",
            "result": "failed",
            "count": 1,
        },
        {
            "rule": "storefront-autoscale",
            "service": "storefront",
            "action": "SCALE",
            "result": "done",
            "count": 4,
        },
    ],
    "decisions_total": [
        {"rule": "storefront-autoscale", "service": "storefront", "decision": "fired", "count": 7},
    ],
    "engine": {"ticks_total": 120, "last_tick_seconds": 0.0012, "paused": False},
}


def lines_of(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.split("{")[0].split(" ")[0] == name]


def test_a_service_family_has_help_type_and_one_line_per_service_in_name_order() -> None:
    text = render(RICH)
    start = text.index("# HELP sqlifier_service_cpu_ratio ")
    assert text[start:].splitlines()[:4] == [
        "# HELP sqlifier_service_cpu_ratio Mean CPU use per instance; 1.0 is one core.",
        "# TYPE sqlifier_service_cpu_ratio gauge",
        'sqlifier_service_cpu_ratio{stack="shop",env="dev",service="checkout"} 1.5',
        'sqlifier_service_cpu_ratio{stack="shop",env="dev",service="storefront"} 0.42',
    ]


def test_every_family_is_announced_once_and_every_series_carries_stack_and_env() -> None:
    text = render(RICH)
    helps = [line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")]
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert helps == types
    assert len(set(helps)) == len(helps) == 20
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert all(line.startswith(tuple(helps)) for line in samples)
    assert all('{stack="shop",env="dev"' in line for line in samples)
    assert text.endswith("\n")


def test_counters_end_in_total_and_gauges_do_not() -> None:
    types = [line.split()[2:] for line in render(RICH).splitlines() if line.startswith("# TYPE")]
    assert {name for name, kind in types if kind == "counter"} == {
        "sqlifier_service_restarts_total",
        "sqlifier_service_log_lines_total",
        "sqlifier_router_requests_total",
        "sqlifier_rule_actions_total",
        "sqlifier_rule_decisions_total",
        "sqlifier_engine_ticks_total",
    }
    assert {name for name, kind in types if kind == "histogram"} == {
        "sqlifier_router_request_duration_seconds"
    }
    assert all(
        kind == "gauge"
        for name, kind in types
        if not name.endswith("_total") and name != "sqlifier_router_request_duration_seconds"
    )


def test_router_requests_are_counted_by_service_track_and_status_class() -> None:
    assert lines_of(render(RICH), "sqlifier_router_requests_total") == [
        f'sqlifier_router_requests_total{{stack="shop",env="dev",service="storefront",track="stable",code="{code}"}} {n}'
        for code, n in (("1xx", 0), ("2xx", 40), ("3xx", 1), ("4xx", 2), ("5xx", 3))
    ]


def test_router_latency_is_a_histogram_with_cumulative_buckets_in_seconds() -> None:
    text = render(RICH)
    name = "sqlifier_router_request_duration_seconds"
    labels = 'stack="shop",env="dev",service="storefront",track="stable"'
    buckets = lines_of(text, f"{name}_bucket")
    assert len(buckets) == 26
    assert buckets[:4] == [
        f'{name}_bucket{{{labels},le="0.0005"}} 1',
        f'{name}_bucket{{{labels},le="0.001"}} 3',
        f'{name}_bucket{{{labels},le="0.002"}} 6',
        f'{name}_bucket{{{labels},le="0.003"}} 6',
    ]
    assert buckets[-2:] == [
        f'{name}_bucket{{{labels},le="30"}} 6',
        f'{name}_bucket{{{labels},le="+Inf"}} 10',
    ]
    assert lines_of(text, f"{name}_sum") == [f"{name}_sum{{{labels}}} 120.5"]
    assert lines_of(text, f"{name}_count") == [f"{name}_count{{{labels}}} 10"]
    start = text.index(f"# HELP {name} ")
    assert text[start:].splitlines()[1] == f"# TYPE {name} histogram"


def test_latency_is_a_gauge_per_percentile_in_seconds() -> None:
    assert lines_of(render(RICH), "sqlifier_service_latency_seconds") == [
        'sqlifier_service_latency_seconds{stack="shop",env="dev",service="storefront",percentile="p50"} 0.003',
        'sqlifier_service_latency_seconds{stack="shop",env="dev",service="storefront",percentile="p90"} 0.009',
        'sqlifier_service_latency_seconds{stack="shop",env="dev",service="storefront",percentile="p95"} 0.012',
        'sqlifier_service_latency_seconds{stack="shop",env="dev",service="storefront",percentile="p99"} 0.02',
    ]


def test_log_lines_by_level_from_least_to_most_severe() -> None:
    levels = [
        line.split('level="')[1].split('"')[0]
        for line in lines_of(render(RICH), "sqlifier_service_log_lines_total")
    ]
    assert levels == ["info", "error", "critical"]


def test_instances_state_is_one_line_with_the_current_state() -> None:
    text = render(RICH)
    assert lines_of(text, "sqlifier_instance_state") == [
        'sqlifier_instance_state{stack="shop",env="dev",service="checkout",instance="checkout-0",state="starting"} 1',
        'sqlifier_instance_state{stack="shop",env="dev",service="storefront",instance="storefront-0",state="ready"} 1',
        'sqlifier_instance_state{stack="shop",env="dev",service="storefront",instance="storefront-1",state="ready"} 1',
    ]
    assert lines_of(text, "sqlifier_instance_memory_bytes") == [
        'sqlifier_instance_memory_bytes{stack="shop",env="dev",service="storefront",instance="storefront-0"} 10000000.0',
    ]


def test_rules_state_actions_and_decisions() -> None:
    text = render(RICH)
    assert lines_of(text, "sqlifier_rule_state") == [
        'sqlifier_rule_state{stack="shop",env="dev",rule="restart-crashed",service="checkout",state="firing"} 1',
        'sqlifier_rule_state{stack="shop",env="dev",rule="storefront-autoscale",service="storefront",state="pending"} 1',
    ]
    assert lines_of(text, "sqlifier_rule_actions_total") == [
        'sqlifier_rule_actions_total{stack="shop",env="dev",rule="storefront-autoscale",service="storefront",action="SCALE",result="done"} 4',
        'sqlifier_rule_actions_total{stack="shop",env="dev",rule="storefront-autoscale",service="storefront",action="SCALE",result="failed"} 1',
    ]
    assert lines_of(text, "sqlifier_rule_decisions_total") == [
        'sqlifier_rule_decisions_total{stack="shop",env="dev",rule="storefront-autoscale",service="storefront",decision="fired"} 7',
    ]


def test_the_engine_series_have_only_stack_and_env() -> None:
    assert render(RICH).splitlines()[-9:] == [
        "# HELP sqlifier_engine_ticks_total Rule evaluation rounds.",
        "# TYPE sqlifier_engine_ticks_total counter",
        'sqlifier_engine_ticks_total{stack="shop",env="dev"} 120',
        "# HELP sqlifier_engine_last_tick_seconds Duration of the last round.",
        "# TYPE sqlifier_engine_last_tick_seconds gauge",
        'sqlifier_engine_last_tick_seconds{stack="shop",env="dev"} 0.0012',
        "# HELP sqlifier_engine_paused 1 while automation is paused.",
        "# TYPE sqlifier_engine_paused gauge",
        'sqlifier_engine_paused{stack="shop",env="dev"} 0',
    ]


def test_label_values_escape_backslash_double_quote_and_newline() -> None:
    snapshot = {"stack": 'a\\b"c\nd', "env": "dev", "engine": {"paused": True}}
    assert lines_of(render(snapshot), "sqlifier_engine_paused") == [
        'sqlifier_engine_paused{stack="a\\\\b\\"c\\nd",env="dev"} 1',
    ]


def test_missing_and_none_values_leave_out_the_line_and_an_empty_family() -> None:
    snapshot = {
        "stack": "shop",
        "env": "dev",
        "services": {"web": {"cpu": None, "rps": 3, "latency_p99": None, "log_lines_total": None}},
        "instances": [{"service": "web", "instance": "web-0", "state": "ready"}],
        "engine": {"ticks_total": None},
    }
    assert render(snapshot) == (
        "# HELP sqlifier_service_requests_per_second Requests per second through the router.\n"
        "# TYPE sqlifier_service_requests_per_second gauge\n"
        'sqlifier_service_requests_per_second{stack="shop",env="dev",service="web"} 3\n'
        "# HELP sqlifier_instance_state 1 for the instance's current state.\n"
        "# TYPE sqlifier_instance_state gauge\n"
        'sqlifier_instance_state{stack="shop",env="dev",service="web",instance="web-0",state="ready"} 1\n'
    )
    assert render({"stack": "shop", "env": "dev"}) == ""


def test_values_in_the_formats_notation() -> None:
    def value(cpu: float) -> str:
        text = render({"stack": "s", "env": "e", "services": {"web": {"cpu": cpu}}})
        return text.splitlines()[-1].rsplit(" ", 1)[1]

    assert [value(v) for v in (0.5, 2, 1e-07, 3.0e12, math.nan, math.inf, -math.inf)] == [
        "0.5", "2", "1e-07", "3000000000000.0", "NaN", "+Inf", "-Inf",
    ]  # fmt: skip


def test_the_order_does_not_depend_on_the_snapshots_order() -> None:
    shuffled = {
        **RICH,
        "services": dict(reversed(RICH["services"].items())),
        "instances": list(reversed(RICH["instances"])),
        "rules": list(reversed(RICH["rules"])),
        "actions_total": list(reversed(RICH["actions_total"])),
    }
    assert render(shuffled) == render(RICH)


@needs_promtool
def test_promtool_accepts_the_text() -> None:
    assert PROMTOOL is not None
    check = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=render(RICH),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (check.returncode, check.stdout, check.stderr) == (0, "", "")


@needs_promtool
def test_promtool_would_catch_a_quantile_label_on_a_gauge() -> None:
    # Why latency is labelled `percentile`: the check above would fail with `quantile`.
    assert PROMTOOL is not None
    text = render(RICH).replace('percentile="p99"', 'quantile="0.99"')
    check = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode != 0
    assert 'non-summary metrics should not have "quantile" label' in check.stdout + check.stderr


@needs_prometheus
def test_prometheus_scrapes_the_text(tmp_path: Path) -> None:
    with (
        MetricsServer(render(RICH)) as metrics,
        running_prometheus(tmp_path, [metrics.address]) as prometheus,
    ):
        promql = 'sqlifier_service_cpu_ratio{stack="shop",env="dev",service="storefront"}'
        assert wait_for_value(prometheus.url, promql) == 0.42
        assert (
            wait_for_value(prometheus.url, 'sqlifier_service_latency_seconds{percentile="p99"}')
            == 0.02
        )
        # Without honor_labels, the target's own `instance` label wins (see the module).
        state = 'sqlifier_instance_state{exported_instance="storefront-0",state="ready"}'
        assert wait_for_value(prometheus.url, state) == 1.0
