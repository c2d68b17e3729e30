"""Budget-aware delivery: what a spent budget asks of a deploy, the plan's line, the slower
canary, and the figures /metrics exports."""

from __future__ import annotations

from pathlib import Path

import pytest

from sqlifier.delivery.budget import Budget, budget_gate, make_budget, policy_for, slowed
from sqlifier.delivery.plan import ServicePlan, plan_service
from sqlifier.engine.series import SeriesStore
from sqlifier.signals.exposition import render
from sqlifier.signals.slo import SLICES, SloTracker
from sqlifier.stack import load_stack
from sqlifier.stack.model import BudgetPolicy, Environment, Objective, Service, Slo

STACK = """\
[stack]
name = "shop"

[environments.production]
approval = "required"
approvers = ["alice", "bob"]
budget = "freeze"

[environments.staging.services.web]
slo = { spent = "none" }

[services.web]
run = "x"
routes = ["/"]
slo = { availability = "99.9%", window = "30d" }

[services.api]
run = "y"
"""

PRODUCTION = Environment("production", approvers=("alice", "bob"))
DEV = Environment("dev")


def spent(policy: BudgetPolicy, left: float = -0.25) -> Budget:
    return Budget("web", left, "availability", policy, 2.0, 0.999, 30 * 86400.0)


def test_the_policy_is_the_services_then_the_environments_then_approve(tmp_path: Path) -> None:
    path = tmp_path / "sqlifier.toml"
    path.write_text(STACK)
    stack, _ = load_stack(path, "sqlifier.toml")
    assert policy_for(stack, "production", "web") is BudgetPolicy.FREEZE
    assert policy_for(stack, "staging", "web") is BudgetPolicy.NONE
    assert policy_for(stack, "dev", "web") is BudgetPolicy.APPROVE
    assert make_budget(stack, "dev", "api", []) is None  # no slo: no budget
    budget = make_budget(
        stack, "dev", "web", [("availability", 0.999, 0.4), ("latency", 0.99, -0.1)]
    )
    assert budget is not None and (budget.left, budget.objective) == (-0.1, "latency")


def test_a_healthy_budget_asks_nothing_more() -> None:
    assert budget_gate(spent(BudgetPolicy.FREEZE, 0.3), PRODUCTION, "eve", False, False) is None
    assert budget_gate(spent(BudgetPolicy.NONE), PRODUCTION, "eve", False, False) is None
    assert budget_gate(None, PRODUCTION, "eve", False, False) is None


def test_a_spent_budget_needs_an_approver() -> None:
    refused = budget_gate(spent(BudgetPolicy.APPROVE), PRODUCTION, "eve", False, False)
    assert refused is not None and not refused.allowed
    assert refused.reason == (
        "the error budget of web in production is spent (-25.0% left of availability): the "
        "deploy needs an approver; run again with --approve as one of its approvers (alice, bob)"
    )
    stranger = budget_gate(spent(BudgetPolicy.APPROVE), PRODUCTION, "eve", True, False)
    assert stranger is not None and not stranger.allowed
    assert stranger.reason.endswith("eve is not an approver of production; approvers: alice, bob")
    approved = budget_gate(spent(BudgetPolicy.APPROVE), PRODUCTION, "alice", True, False)
    assert approved is not None and approved.allowed
    assert approved.reason.endswith(": approved by alice")
    # An environment without approvers: --approve acknowledges the spent budget.
    acknowledged = budget_gate(spent(BudgetPolicy.APPROVE), DEV, "eve", True, False)
    assert acknowledged is not None and acknowledged.allowed


def test_a_frozen_budget_lets_only_fixes_through() -> None:
    refused = budget_gate(spent(BudgetPolicy.FREEZE), PRODUCTION, "alice", True, False)
    assert refused is not None and not refused.allowed
    assert refused.reason.endswith(
        "deploys are frozen except fixes; deploy a release that fixes it with --fix"
    )
    fix = budget_gate(spent(BudgetPolicy.FREEZE), PRODUCTION, "alice", False, True)
    assert fix is not None and fix.allowed


def test_a_spent_budget_slows_the_canary() -> None:
    service = Service("web", "x", Path("."), slo=Slo((Objective("availability", 0.999),)))
    assert slowed(service, spent(BudgetPolicy.APPROVE)).rollout.pause == 60.0
    assert slowed(service, spent(BudgetPolicy.APPROVE, 0.5)).rollout.pause == 30.0


def test_the_plan_shows_the_budget_and_its_policy(tmp_path: Path) -> None:
    path = tmp_path / "sqlifier.toml"
    path.write_text(STACK)
    stack, _ = load_stack(path, "sqlifier.toml")
    plan = plan_service(stack, "production", "web", None, "v2", budget=spent(BudgetPolicy.FREEZE))
    assert (
        "  error budget: SPENT (-25.0% left of availability 99.9% over 30d): frozen: only a "
        "release marked as a fix (--fix) may go out; canary pauses x2"
    ) in plan.lines()
    assert ServicePlan.from_json(plan.to_json()) == plan
    healthy = plan_service(stack, "dev", "web", None, "v2", budget=spent(BudgetPolicy.APPROVE, 0.5))
    assert (
        "  error budget: 50.0% left of availability 99.9% over 30d; the usual approval "
        "applies (when spent: approve)"
    ) in healthy.lines()


def test_each_tick_refreshes_a_tenth_of_the_services() -> None:
    services = {
        f"s{i}": Service(f"s{i}", "x", Path("."), slo=Slo((Objective("availability", 0.99),)))
        for i in range(20)
    }
    tracker = SloTracker(services, 0.0)
    for name in services:
        (_, counts), *_ = tracker.objectives[name]
        counts.add(0.0, 99.0, 100.0)
    store = SeriesStore()
    tracker.step(1.0, (), store)
    assert sum(store.level(n, "error_budget", 1.0) is not None for n in services) == 2
    for t in range(2, SLICES + 1):
        tracker.step(float(t), (), store)
    assert all(store.level(n, "error_budget", 10.0) == pytest.approx(0.0) for n in services)


def test_metrics_export_each_objective() -> None:
    row = {
        "service": "web",
        "objective": "availability",
        "target": 0.999,
        "good": 990.0,
        "total": 1000.0,
        "budget_left": -9.0,
        "burn_rates": {"5m": 10.0, "1h": None},
    }
    text = render({"stack": "shop", "env": "dev", "slo": [row]})
    labels = 'stack="shop",env="dev",service="web",objective="availability"'
    assert f"sqlifier_slo_objective_ratio{{{labels}}} 0.999" in text
    assert f"sqlifier_slo_error_budget_remaining_ratio{{{labels}}} -9.0" in text
    assert f'sqlifier_slo_burn_rate{{{labels},window="5m"}} 10.0' in text
    assert 'window="1h"' not in text  # no value: no sample
    assert f'sqlifier_slo_window_requests{{{labels},kind="good"}} 990.0' in text
    assert "# TYPE sqlifier_slo_burn_rate gauge" in text
