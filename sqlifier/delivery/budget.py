"""Budget-aware delivery: how boldly a service may be deployed, given its error budget.

While a service's error budget is left, the usual approval rules of its environment hold.
Once it is spent (no budget left on one of its objectives), its policy decides:

- `approve` (the default): the deploy needs `--approve` from one of the environment's
  approvers (in an environment that lists none, `--approve` acknowledges the spent budget);
- `freeze`: only a release marked as a fix (`deploy --fix`) may go out, with the
  environment's usual approval;
- `none`: the usual rules, the budget only shown.

Whatever the policy, a deploy while the budget is spent walks its canary more slowly:
each step's pause is multiplied by the service's `slow_canary` (2 by default).

The policy is the service's `slo.spent`, else its environment's `budget`, else `approve`.
Everything here is a pure function of the stack and a `Budget`; the agent measures the
budget (signals/slo.py), `plan` reads it from the SLO history (`read_budget`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from sqlifier.delivery.approvals import Decision
from sqlifier.engine.slo import SloCounts
from sqlifier.stack.model import BudgetPolicy, Environment, Service, Stack
from sqlifier.store.slo import SloStore

__all__ = ["Budget", "budget_gate", "policy_for", "read_budget", "slowed"]


@dataclass(frozen=True, slots=True)
class Budget:
    """A service's error budget now: the least left over its objectives (None: no
    requests counted yet), which objective that is, and the policy that applies."""

    service: str
    left: float | None
    objective: str | None
    policy: BudgetPolicy
    slow_canary: float = 2.0
    target: float | None = None
    window: float | None = None

    @property
    def spent(self) -> bool:
        return self.left is not None and self.left <= 0

    def text(self) -> str:
        """One line for the plan: the budget and which policy applies."""
        if self.left is None:
            return f"no requests counted yet; when spent: {self.policy.value}"
        what = f"{self.objective} {_percent(self.target)} over {_days(self.window)}"
        left = f"{self.left * 100:.1f}% left of {what}"
        if not self.spent:
            return f"{left}; the usual approval applies (when spent: {self.policy.value})"
        consequence = {
            BudgetPolicy.APPROVE: "the deploy needs an approver",
            BudgetPolicy.FREEZE: "frozen: only a release marked as a fix (--fix) may go out",
            BudgetPolicy.NONE: "the usual approval applies",
        }[self.policy]
        return f"SPENT ({left}): {consequence}; canary pauses x{self.slow_canary:g}"

    def to_json(self) -> dict[str, object]:
        return {
            "service": self.service,
            "left": self.left,
            "objective": self.objective,
            "spent": self.spent,
            "policy": self.policy.value,
            "slow_canary": self.slow_canary,
            "target": self.target,
            "window": self.window,
        }


def policy_for(stack: Stack, env: str, service: str) -> BudgetPolicy:
    spec = stack.services_for(env).get(service)
    if spec is not None and spec.slo is not None and spec.slo.spent is not None:
        return spec.slo.spent
    return stack.environment(env).budget or BudgetPolicy.APPROVE


def make_budget(
    stack: Stack, env: str, service: str, lefts: list[tuple[str, float, float | None]]
) -> Budget | None:
    """The budget from each objective's (name, target, left); None without an `slo`."""
    spec = stack.services_for(env).get(service)
    if spec is None or spec.slo is None:
        return None
    known = [(left, name, target) for name, target, left in lefts if left is not None]
    policy = policy_for(stack, env, service)
    if not known:
        return Budget(service, None, None, policy, spec.slo.slow_canary, None, spec.slo.window)
    left, name, target = min(known)
    return Budget(service, left, name, policy, spec.slo.slow_canary, target, spec.slo.window)


def read_budget(stack: Stack, env: str, state_dir: Path, service: str, now: float) -> Budget | None:
    """The budget as the SLO history records it (up to the agent's last flush)."""
    spec = stack.services_for(env).get(service)
    if spec is None or spec.slo is None:
        return None
    path = state_dir / "slo.db"
    lefts: list[tuple[str, float, float | None]] = []
    store = SloStore(path) if path.exists() else None
    try:
        for objective in spec.slo.objectives:
            counts = SloCounts(objective.target, spec.slo.window)
            if store is not None:
                store.load(service, objective.name, counts, now)
            lefts.append((objective.name, objective.target, counts.budget_left(now)))
    finally:
        if store is not None:
            store.close()
    return make_budget(stack, env, service, lefts)


def budget_gate(
    budget: Budget | None, environment: Environment, caller: str, approve: bool, fix: bool
) -> Decision | None:
    """What a spent budget asks of a deploy: None when nothing more than the usual
    approval; otherwise allowed (with why, for the audit) or refused (saying what to do)."""
    if budget is None or not budget.spent or budget.policy is BudgetPolicy.NONE:
        return None
    where = f"{budget.service} in {environment.name}"
    left = (budget.left or 0.0) * 100
    spent = f"the error budget of {where} is spent ({left:.1f}% left of {budget.objective})"
    if budget.policy is BudgetPolicy.FREEZE:
        if fix:
            return Decision(True, False, f"{spent}: deploys are frozen, this release is a fix")
        return Decision(
            False,
            False,
            f"{spent}: deploys are frozen except fixes; deploy a release that fixes it with --fix",
        )
    names = ", ".join(environment.approvers)
    if not approve:
        who = f" as one of its approvers ({names})" if names else ""
        return Decision(
            False, False, f"{spent}: the deploy needs an approver; run again with --approve{who}"
        )
    if environment.approvers and caller not in environment.approvers:
        return Decision(
            False,
            False,
            f"{spent}: {caller} is not an approver of {environment.name}; approvers: {names}",
        )
    return Decision(True, False, f"{spent}: approved by {caller}")


def slowed(spec: Service, budget: Budget | None) -> Service:
    """The service with its canary's pauses multiplied while its budget is spent."""
    if budget is None or not budget.spent or budget.slow_canary == 1:
        return spec
    rollout = dataclasses.replace(spec.rollout, pause=spec.rollout.pause * budget.slow_canary)
    return dataclasses.replace(spec, rollout=rollout)


def _percent(target: float | None) -> str:
    return "?" if target is None else f"{target * 100:g}%"


def _days(window: float | None) -> str:
    if window is None:
        return "?"
    if window % 86400 == 0:
        return f"{window / 86400:g}d"
    return f"{window / 3600:g}h"
