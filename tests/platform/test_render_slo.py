"""The Prometheus rules `sqlifier render` writes for a Kubernetes environment's SLOs:
their PromQL per Gateway implementation, checked by the real `promtool check rules`, and
evaluated by `promtool test rules` on synthetic series (a 20x burn pages, a 10x burn opens
the tickets but does not page, a 0.5x burn fires nothing)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from sqlifier.errors import DiagnosticsError, UserError
from sqlifier.platform.kubernetes.slo_promql import PRESETS, bound, error_ratio, events, queries_for
from sqlifier.platform.kubernetes.slo_rules import rule_groups, rules_text
from sqlifier.stack import load_stack
from sqlifier.stack import model as m
from tests.conftest import run_sqlifier
from tests.prom import PROMTOOL, needs_promtool

STACK = """\
[stack]
name = "shop"

[environments.prod]
platform = "kubernetes"
kubernetes = { namespace = "shop", gateway = "public" }
{prometheus}
[services.checkout]
run = "checkout"
image = "registry.example.com/shop/checkout"
routes = ["/api/checkout", "shop.example.com/pay"]
slo = {slo}

[services.web]
run = "web"
image = "registry.example.com/shop/web"
routes = ["/"]
"""
BOTH = '{ availability = "99.9%", latency = { p = "300ms", target = "99%" }, window = "30d" }'
AVAILABILITY = '{ availability = "99.9%" }'
ROUTE = 'envoy_cluster_name="httproute/shop/checkout/rule/0"'
AVAILABLE = m.Objective("availability", 0.999)
FAST = m.Objective("latency", 0.99, 0.25)


def write(folder: Path, slo: str = BOTH, prometheus: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sqlifier.toml"
    path.write_text(STACK.replace("{slo}", slo).replace("{prometheus}", prometheus))
    return path


def stack_of(folder: Path, slo: str = BOTH, prometheus: str = "") -> m.Stack:
    return load_stack(write(folder, slo, prometheus), "sqlifier.toml")[0]


def rules_file(folder: Path, slo: str = BOTH, prometheus: str = "") -> Path:
    stack = stack_of(folder, slo, prometheus)
    path = folder / "prometheus-rules.yaml"
    path.write_text(rules_text(rule_groups(stack, "prod"), "test"))
    return path


def promtool(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *map(str, args)], cwd=cwd, capture_output=True, text=True, check=False
    )


# --- the PromQL ------------------------------------------------------------------------


def test_envoy_gateway_counts_every_httproute_of_the_service() -> None:
    good, total = events(
        PRESETS[m.GatewayMetrics.ENVOY_GATEWAY], AVAILABLE, "checkout", "shop", 3600
    )
    route = 'envoy_cluster_name=~"httproute/shop/checkout(/|[.][^/]*/)rule/[0-9]+"'
    assert total == f"sum(increase(envoy_cluster_upstream_rq_total{{{route}}}[1h]))"
    assert good == (
        f"{total} - (sum(increase(envoy_cluster_upstream_rq_xx{{"
        f'envoy_response_code_class="5",{route}}}[1h])) or {total} * 0)'
    )


def test_a_latency_threshold_between_two_bounds_is_counted_at_the_lower() -> None:
    envoy = PRESETS[m.GatewayMetrics.ENVOY_GATEWAY]
    assert bound(envoy, 0.3) == 250.0
    assert bound(envoy, 0.25) == 250.0
    assert bound(envoy, 1.0) == 1000.0
    good, total = events(envoy, FAST, "checkout", "shop", 300)
    assert 'le=~"250([.]0*)?"' in good
    assert 'le=~"[+]Inf"' in total


def test_istio_counts_unanswered_requests_as_bad() -> None:
    ratio = error_ratio(PRESETS[m.GatewayMetrics.ISTIO], AVAILABLE, "checkout", "shop", 300)
    assert 'response_code=~"5..|0"' in ratio
    assert 'destination_service_name="checkout",destination_service_namespace="shop"' in ratio


def test_nginx_gateway_fabric_has_no_latency_histogram(tmp_path: Path) -> None:
    stack = stack_of(
        tmp_path, prometheus='[prometheus]\ngateway_metrics = "nginx-gateway-fabric"\n'
    )
    with pytest.raises(UserError) as caught:
        rule_groups(stack, "prod")
    assert str(caught.value).startswith(
        "service checkout: its latency objective cannot be counted from "
        "nginx-gateway-fabric's metrics, which have no latency histogram"
    )
    good, _ = events(queries_for(stack.prometheus), AVAILABLE, "checkout", "shop", 300)
    assert 'nginx_upstream_name="shop_checkout_80",nginx_status_range="5xx"' in good


def test_metrics_written_out_in_the_stack_file(tmp_path: Path) -> None:
    prometheus = (
        "[prometheus]\ngateway_metrics = { requests = 'http_requests_total{app=\"$service\"}', "
        'errors = \'http_requests_total{app="$service",code=~"5.."}\', '
        'latency = \'http_request_duration_seconds_bucket{app="$service"}\', unit = "s" }\n'
    )
    queries = queries_for(stack_of(tmp_path, prometheus=prometheus).prometheus)
    good, total = events(queries, FAST, "checkout", "shop", 300)
    assert good == (
        'sum(increase(http_request_duration_seconds_bucket{app="checkout",le=~"0[.]250*"}[5m]))'
    )
    assert total == (
        'sum(increase(http_request_duration_seconds_bucket{app="checkout",le=~"[+]Inf"}[5m]))'
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            '"traefik"',
            "prometheus.gateway_metrics must be one of 'envoy-gateway', 'istio', "
            "'nginx-gateway-fabric', found 'traefik'",
        ),
        (
            "{ requests = 'http_requests_total', errors = 'x{app=\"$service\"}' }",
            "prometheus.gateway_metrics.requests must name the service with $service, like "
            "'http_requests_total{service=\"$service\"}': without it every service reads the "
            "same requests",
        ),
        (
            "{ requests = 'x{app=\"$service\"}' }",
            "prometheus.gateway_metrics needs errors: the selector of every request to a "
            "service and of those answered 5xx, like requests = "
            "'http_requests_total{service=\"$service\"}'",
        ),
        (
            "{ requests = 'x{a=\"$service\"}', errors = 'y{a=\"$service\"}', "
            'latency = \'h_bucket{a="$service",le="0.3"}\' }',
            "prometheus.gateway_metrics.latency must leave out le: sqlifier adds it for each "
            "latency objective's threshold, like "
            "'http_request_duration_seconds_bucket{service=\"$service\"}'",
        ),
        (
            '{ requests = \'x{a="$service"}\', errors = \'y{a="$service"}\', unit = "us" }',
            'prometheus.gateway_metrics.unit must be "s" or "ms" (the unit of the '
            "histogram's le), found 'us'",
        ),
    ],
)
def test_gateway_metrics_refused_with_a_position(tmp_path: Path, value: str, message: str) -> None:
    path = write(tmp_path, prometheus=f"[prometheus]\ngateway_metrics = {value}\n")
    with pytest.raises(DiagnosticsError) as caught:
        load_stack(path, "sqlifier.toml")
    found = [(d.line, d.message) for d in caught.value.diagnostics if d.is_error]
    assert found == [(8, message)]


# --- the rules, checked and evaluated by promtool --------------------------------------


@needs_promtool
def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    path = rules_file(tmp_path)
    result = promtool("check", "rules", path, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 36 rules found" in result.stdout  # 18 per objective


def test_one_group_per_service_and_objective(tmp_path: Path) -> None:
    groups = rule_groups(stack_of(tmp_path), "prod")
    assert [g["name"] for g in groups] == [
        "sqlifier-slo-checkout-availability",
        "sqlifier-slo-checkout-latency",
    ]
    alerts = {r["alert"]: r for r in groups[0]["rules"] if "alert" in r}
    assert alerts["SqlifierSloPage"]["expr"].endswith(
        'sqlifier:slo_burn_rate:5m{sqlifier_stack="shop",sqlifier_env="prod",'
        'service="checkout",objective="availability"} > 14.4'
    )
    assert " > 6\n" in alerts["SqlifierSloTicket"]["expr"]
    assert " > 1\n" in alerts["SqlifierSloTicketSlow"]["expr"]


def test_the_alert_factors_follow_the_slo_window(tmp_path: Path) -> None:
    slo = '{ availability = "99.9%", window = "7d" }'
    groups = rule_groups(stack_of(tmp_path, slo), "prod")
    exprs = [r["expr"] for r in groups[0]["rules"] if "alert" in r]
    # 2% of a week's budget in an hour, 5% in 6 hours; 10% in 3 days is below 1: 1.
    assert [e.split(" > ")[1].split("\n")[0] for e in exprs] == ["3.36", "1.4", "1"]


def _series(errors_per_minute: int) -> list[dict[str, str]]:
    series = [{"series": f"envoy_cluster_upstream_rq_total{{{ROUTE}}}", "values": "0+10000x240"}]
    if errors_per_minute:  # Envoy has no series of 5xx answers before the first one
        series.append(
            {
                "series": f'envoy_cluster_upstream_rq_xx{{envoy_response_code_class="5",{ROUTE}}}',
                "values": f"0+{errors_per_minute}x240",
            }
        )
    return series


def _fired(burn: float, severity: str) -> dict[str, object]:
    return {
        "exp_labels": {
            "severity": severity,
            "sqlifier_stack": "shop",
            "sqlifier_env": "prod",
            "service": "checkout",
            "objective": "availability",
        },
        "exp_annotations": {
            "summary": "checkout burns its availability error budget at "
            f"{burn:.1f} times the sustainable rate",
        },
    }


@needs_promtool
@pytest.mark.parametrize(
    ("errors_per_minute", "firing"),
    [
        (200, {"SqlifierSloPage", "SqlifierSloTicket", "SqlifierSloTicketSlow"}),  # 20x
        (100, {"SqlifierSloTicket", "SqlifierSloTicketSlow"}),  # 10x: under the page's 14.4
        (5, set()),  # 0.5x: within budget
        (0, set()),  # no 5xx at all: the budget is whole
    ],
)
def test_promtool_evaluates_the_burn_rate_alerts(
    tmp_path: Path, errors_per_minute: int, firing: set[str]
) -> None:
    path = rules_file(tmp_path, AVAILABILITY)
    # Strip the annotations' description: promtool compares every annotation given.
    text = yaml.safe_load(path.read_text())
    for group in text["groups"]:
        for rule in group["rules"]:
            rule.get("annotations", {}).pop("description", None)
    path.write_text(yaml.safe_dump(text, sort_keys=False))
    burn = errors_per_minute / 10000 / 0.001
    severities = {
        "SqlifierSloPage": "page",
        "SqlifierSloTicket": "ticket",
        "SqlifierSloTicketSlow": "ticket",
    }
    test = {
        "rule_files": [path.name],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": _series(errors_per_minute),
                "alert_rule_test": [
                    {
                        "eval_time": "2h",
                        "alertname": name,
                        "exp_alerts": [_fired(burn, severity)] if name in firing else [],
                    }
                    for name, severity in severities.items()
                ],
                "promql_expr_test": [
                    {
                        # The budget left after 2 hours at this rate (the only hours seen).
                        "expr": "sqlifier:slo_error_budget_remaining:ratio > bool "
                        f"{1 - burn - 0.01:g} and sqlifier:slo_error_budget_remaining:ratio"
                        f" < {1 - burn + 0.01:g}",
                        "eval_time": "2h",
                        "exp_samples": [
                            {
                                "labels": '{objective="availability",service="checkout",'
                                'slo_window="30d",sqlifier_env="prod",sqlifier_stack="shop"}',
                                "value": 1,
                            }
                        ],
                    }
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test, sort_keys=False))
    result = promtool("test", "rules", "test.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# --- `sqlifier render` -----------------------------------------------------------------


@needs_promtool
def test_render_prints_the_rules_file(tmp_path: Path) -> None:
    write(tmp_path)
    result = run_sqlifier("render", "--env", "prod", "--prometheus-rules", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (
        0,
        "warning: service checkout: latency p = 300ms is counted at 250ms, the bound below "
        "it in envoy-gateway's latency histogram; set p on a bound (250ms, 500ms) to count "
        "exactly\n",
    )
    assert result.stdout.startswith(
        "# Rendered by sqlifier (sqlifier render --env prod --prometheus-rules); edits are lost"
    )
    (tmp_path / "rules.yaml").write_text(result.stdout)
    assert promtool("check", "rules", "rules.yaml", cwd=tmp_path).returncode == 0


def test_render_writes_the_rules_beside_the_manifests(tmp_path: Path) -> None:
    slo = BOTH.replace("300ms", "250ms")  # on a bound: no warning
    write(tmp_path, slo)
    out = tmp_path / "deploy"
    result = run_sqlifier("render", "--env", "prod", "-o", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rules = out / "prometheus" / "prometheus-rules.yaml"
    assert result.stderr == f"wrote 13 manifests to {out} and {rules}\n"
    assert [g["name"] for g in yaml.safe_load(rules.read_text())["groups"]] == [
        "sqlifier-slo-checkout-availability",
        "sqlifier-slo-checkout-latency",
    ]
    # Without objectives, the next render removes the file it wrote.
    path = tmp_path / "sqlifier.toml"
    path.write_text(path.read_text().replace(f"slo = {slo}\n", ""))
    result = run_sqlifier("render", "--env", "prod", "-o", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not rules.exists()


def test_render_with_the_operator_adds_a_prometheus_rule(tmp_path: Path) -> None:
    write(tmp_path)
    result = run_sqlifier("render", "--env", "prod", "--prometheus-operator", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    objects = list(yaml.safe_load_all(result.stdout))
    rule = objects[-1]
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert (rule["metadata"]["name"], rule["metadata"]["namespace"]) == ("sqlifier-slo", "shop")
    assert len(rule["spec"]["groups"]) == 2
    plain = run_sqlifier("render", "--env", "prod", cwd=tmp_path)
    assert "PrometheusRule" not in plain.stdout


def test_render_of_rules_without_objectives_says_what_to_do(tmp_path: Path) -> None:
    path = write(tmp_path)
    path.write_text(path.read_text().replace(f"slo = {BOTH}\n", ""))
    result = run_sqlifier("render", "--env", "prod", "--prometheus-rules", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "sqlifier: error: no service of environment prod has an slo: there are no Prometheus "
        'rules to print; give a service one, like slo = { availability = "99.9%" }\n'
    )


@needs_promtool
@pytest.mark.parametrize("le", ["250", "250.0"])  # as Prometheus 2 keeps it, and 3 writes it
def test_promtool_counts_latency_at_the_bucket_bound(tmp_path: Path, le: str) -> None:
    path = rules_file(tmp_path, '{ latency = { p = "250ms", target = "99%" } }')
    bucket = "envoy_cluster_upstream_rq_time_bucket"
    series = [  # 2% of the requests slower than 250 ms: twice the 1% the objective allows
        {"series": f'{bucket}{{{ROUTE},le="100"}}', "values": "0+5000x120"},
        {"series": f'{bucket}{{{ROUTE},le="{le}"}}', "values": "0+9800x120"},
        {"series": f'{bucket}{{{ROUTE},le="+Inf"}}', "values": "0+10000x120"},
    ]
    burn = "sqlifier:slo_burn_rate:1h"
    test = {
        "rule_files": [path.name],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": f"{burn} > bool 1.99 and {burn} < 2.01",
                        "eval_time": "1h",
                        "exp_samples": [
                            {
                                "labels": '{objective="latency",service="checkout",'
                                'sqlifier_env="prod",sqlifier_stack="shop"}',
                                "value": 1,
                            }
                        ],
                    }
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test, sort_keys=False))
    result = promtool("test", "rules", "test.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_render_refuses_a_latency_objective_nginx_cannot_count(tmp_path: Path) -> None:
    write(tmp_path, prometheus='[prometheus]\ngateway_metrics = "nginx-gateway-fabric"\n')
    result = run_sqlifier("render", "--env", "prod", "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "sqlifier: error: service checkout: its latency objective cannot be counted from "
        "nginx-gateway-fabric's metrics, which have no latency histogram; set [prometheus] "
        "gateway_metrics to a table with a latency bucket series, like latency = "
        "'http_request_duration_seconds_bucket{service=\"$service\"}'\n"
    )


def test_render_prints_the_rules_or_writes_them_not_both(tmp_path: Path) -> None:
    write(tmp_path)
    out = str(tmp_path / "out")
    result = run_sqlifier("render", "--env", "prod", "--prometheus-rules", "-o", out, cwd=tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "sqlifier: error: --prometheus-rules prints the rules on stdout; with -o DIR they are "
        "written to DIR/prometheus/prometheus-rules.yaml: give one or the other\n"
    )
