"""A firing's actions, planned before anything runs: the verb and target of each, the new
instance count of a SCALE within its LIMIT and the scale-down delay, the release a ROLLBACK
leaves (never a rollback of a rollback), NOTIFY and RUN texts with their placeholders
filled in, and which of two rules scaling one service in one tick wins.

Functions of the engine's memory handed in (what was rolled back, when each service last
scaled up), so that planning stays a pure step between evaluating and firing.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from sqlifier.engine.compiled import (
    CompiledRule,
    NoData,
    ServiceView,
    World,
    show_value,
)
from sqlifier.engine.expressions import evaluate, render_message
from sqlifier.engine.state import Command
from sqlifier.engine.wording import clock
from sqlifier.lang import ast
from sqlifier.lang.printer import format_action
from sqlifier.lang.units import Type

__all__ = [
    "ACTING",
    "Firing",
    "Planned",
    "command_for",
    "plan_action",
    "settle_scales",
    "target_of",
    "verb_of",
    "world_lock",
]

ACTING = frozenset(
    {"SCALE", "RESTART", "ROLLBACK", "ABORT ROLLOUT", "PAUSE ROLLOUT", "RESUME ROLLOUT", "RUN"}
)
_DURATION = Type.DURATION
_NUMBER = Type.NUMBER


@dataclass(slots=True)
class Planned:
    """One action of a firing, before scale conflicts are settled."""

    action: ast.Action
    verb: str
    target: str
    detail: str
    count: int | None = None
    previous: int | None = None
    to: str | None = None
    text: str | None = None
    skipped: str | None = None
    settled: bool = False  # skipped, yet it took part in this tick's decision (a lost race)


@dataclass(slots=True)
class Firing:
    rule: CompiledRule
    service: str
    key: tuple[str, str]
    reason: str
    values: dict[str, str]
    planned: list[Planned]
    view: ServiceView


def verb_of(action: ast.Action) -> str:
    if isinstance(action, ast.Scale):
        return "SCALE"
    if isinstance(action, ast.Rollback):
        return "ROLLBACK"
    if isinstance(action, ast.Restart):
        return "RESTART"
    if isinstance(action, ast.Rollout):
        return f"{action.verb} ROLLOUT"
    if isinstance(action, ast.Notify):
        return "NOTIFY"
    return "RUN"


def target_of(action: ast.Action, service: str) -> str:
    """The service an action acts on: the one it names, or the one evaluated."""
    named = getattr(action, "target", None)
    if isinstance(named, ast.Target) and named.literal is not None:
        return named.literal
    return service


def world_lock(world: World, service: str) -> str | None:
    """A lock the world holds on a service (a deploy in progress), if it knows of locks."""
    locks = getattr(world, "locks", None)
    if isinstance(locks, Mapping):
        holder = locks.get(service)
        return str(holder) if holder is not None else None
    return None


def command_for(firing_id: int, now: float, firing: Firing, p: Planned, world: World) -> Command:
    """The command that carries out a planned action; RUN's has the event in its env."""
    env = {
        "SQLIFIER_RULE": firing.rule.id,
        "SQLIFIER_SERVICE": firing.service,
        "SQLIFIER_TARGET": p.target,
        "SQLIFIER_REASON": firing.reason,
        "SQLIFIER_VALUE": next(iter(firing.values.values()), ""),
        "SQLIFIER_TIME": str(now),
    }
    release = (world.service(p.target) or firing.view).release if p.verb == "ROLLBACK" else None
    return Command(
        firing_id, now, firing.rule.id, firing.service, p.target, p.verb, p.detail, firing.reason,
        p.count, p.previous, p.to, p.text, env if p.verb == "RUN" else {}, release,
    )  # fmt: skip


def plan_action(
    action: ast.Action,
    rule: CompiledRule,
    service: str,
    view: ServiceView,
    now: float,
    world: World,
    extra: Mapping[str, str],
    rolled_back: Collection[tuple[str, str]],
    last_scale_up: float | None,
    scale_down_delay: float,
) -> Planned:
    """One action made concrete; `skipped` says why it will not run, if it will not.

    `rolled_back` holds the (service, release) pairs already rolled back from;
    `last_scale_up` is when the action's target last scaled up."""
    name = verb_of(action)
    acted_on = target_of(action, service)
    if isinstance(action, ast.Scale):
        return _plan_scale(
            action, rule, acted_on, view, now, world, last_scale_up, scale_down_delay
        )
    if isinstance(action, ast.Rollback):
        to = action.version.value if action.version is not None else action.to.value
        target_view = world.service(acted_on) or view
        planned = Planned(action, name, acted_on, f"{target_view.release} -> {to}", to=to)
        if target_view.rolled_back_from is not None:
            planned.skipped = (
                f"release {target_view.release} of {acted_on} is itself a rollback from "
                f"{target_view.rolled_back_from}; a rollback is never rolled back"
            )
        elif (acted_on, target_view.release) in rolled_back:
            planned.skipped = f"{acted_on} was already rolled back from {target_view.release}"
        return planned
    if isinstance(action, ast.Notify):
        text = render_message(action.message.value, view, now, extra)
        return Planned(action, name, acted_on, text, text=text)
    if isinstance(action, ast.Run):
        text = render_message(action.command.value, view, now, extra)
        return Planned(action, name, acted_on, text, text=text)
    return Planned(action, name, acted_on, format_action(action))


def _plan_scale(
    action: ast.Scale,
    rule: CompiledRule,
    acted_on: str,
    view: ServiceView,
    now: float,
    world: World,
    last_scale_up: float | None,
    delay: float,
) -> Planned:
    current = (world.service(acted_on) or view).instances
    planned = Planned(action, "SCALE", acted_on, f"{current} -> ?", previous=current)
    try:
        raw = evaluate(action.to, world, view, rule, now)
    except NoData as exc:
        planned.skipped = f"cannot compute the new count: {exc}"
        return planned
    if not math.isfinite(raw):
        planned.skipped = f"the new count is not a number ({raw})"
        return planned
    desired = max(0, math.ceil(round(raw, 6)))
    limit = rule.limit
    if limit is not None and desired != current:
        if (desired > current >= limit) or (desired < current <= limit):
            planned.skipped = f"LIMIT {show_value(limit, _NUMBER)} reached ({current} instances)"
            return planned
        desired = min(desired, int(limit)) if desired > current else max(desired, math.ceil(limit))
    planned.count = desired
    planned.detail = f"{current} -> {desired}"
    if desired == current:
        planned.skipped = f"{acted_on} already runs {current} instances"
    elif desired < current and last_scale_up is not None and now < last_scale_up + delay:
        planned.skipped = (
            f"a scale-down waits {show_value(delay, _DURATION)} after the scale-up "
            f"at {clock(last_scale_up)}: not before {clock(last_scale_up + delay)}"
        )
    return planned


def settle_scales(firings: list[Firing]) -> None:
    """Two rules scaling one service in the same tick: the larger count wins."""
    best: dict[str, tuple[int, str]] = {}
    for firing in firings:
        for p in firing.planned:
            if (
                p.verb == "SCALE"
                and p.skipped is None
                and p.count is not None
                and (p.target not in best or p.count > best[p.target][0])
            ):
                best[p.target] = (p.count, firing.rule.id)
    for firing in firings:
        for p in firing.planned:
            if p.verb == "SCALE" and p.skipped is None and p.count is not None:
                count, winner = best[p.target]
                if winner != firing.rule.id:
                    p.skipped = f"rule {winner} keeps more capacity ({count} instances)"
                    p.settled = True
