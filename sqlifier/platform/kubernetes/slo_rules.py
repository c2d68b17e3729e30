"""The Prometheus rules of a Kubernetes environment's SLOs, as `sqlifier render` writes
them (docs/slo.md, "On Kubernetes"): Sloth-style recordings and the SRE workbook's
multi-window, multi-burn-rate alerts, of the PromQL of slo_promql.py.

Per service and objective, one rule group `sqlifier-slo-SERVICE-OBJECTIVE`:

    sqlifier:slo_bad:rate5m, sqlifier:slo_total:rate5m    bad and all requests a second
    sqlifier:slo_error_ratio:rateW, sqlifier:slo_burn_rate:W
                                  W = 5m, 30m, 1h, 6h, 3d (engine/slo.py's BURN_WINDOWS)
    sqlifier:slo_period_error_ratio, sqlifier:slo_error_budget_remaining:ratio,
    sqlifier:slo_objective:ratio  over the SLO's window (label slo_window)
    SqlifierSloPage, SqlifierSloTicket, SqlifierSloTicketSlow
                                  14.4 over 1h and 5m, 6 over 6h and 30m, 1 over 3d and 6h
                                  (for a 30-day window; scaled to another, never below 1)

A window's error ratio has no sample without requests (no NaN in the series). The SLO
window's ratio is the mean 5-minute bad rate over the mean 5-minute rate: weighted by the
traffic, like the local budget, and with no 30-day range over the raw counters.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlifier.engine.slo import BURN_WINDOWS
from sqlifier.errors import UserError
from sqlifier.platform.kubernetes.render_common import Manifest, Target, metadata
from sqlifier.platform.kubernetes.slo_promql import (
    Queries,
    bound,
    error_ratio,
    queries_for,
    rates,
    window_text,
)
from sqlifier.stack.model import Objective, Stack

__all__ = [
    "ALERTS",
    "RULES_FILE",
    "prometheus_rule",
    "rule_groups",
    "rules_text",
    "threshold_notes",
    "write_rules",
]

# Below the manifests' folder, not among them: the file holds no Kubernetes object, and
# `kubectl apply -f DIR` (or a GitOps tool reading DIR) would stop at it.
RULES_FILE = "prometheus/prometheus-rules.yaml"

# (alert, severity, long window, short window, share of the budget spent over the long
# window when it fires): the Google SRE workbook's pairs, as the rules `sqlifier init` ships.
ALERTS = (
    ("SqlifierSloPage", "page", 3600.0, 300.0, 0.02),
    ("SqlifierSloTicket", "ticket", 21600.0, 1800.0, 0.05),
    ("SqlifierSloTicketSlow", "ticket", 259200.0, 21600.0, 0.10),
)


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
    bad, total = rates(queries, objective, service, target.namespace, "5m")
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


def write_rules(folder: Path, groups: Sequence[Mapping[str, Any]], command: str) -> Path | None:
    """The rules file below the manifests in `folder` (its path), or none: without groups,
    a file an earlier render wrote there is removed."""
    path = folder / RULES_FILE
    try:
        if groups:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(rules_text(groups, command), encoding="utf-8")
            return path
        if path.is_file() and path.read_text(encoding="utf-8").startswith("# Rendered by"):
            path.unlink()
    except OSError as exc:
        reason = exc.strerror or exc
        raise UserError(f"{path}: cannot write the Prometheus rules: {reason}") from None
    return None
