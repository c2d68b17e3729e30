"""Rules made ready to evaluate: signal tests with their series keys and thresholds in base
units, the trigger as a tree of them, and the values the engine shows (`show_value`).

Everything here is pure: values come from a `SeriesStore` and a `World` (what the engine
knows about each service), time is a number handed in. IF conditions, SCALE expressions and
message placeholders are interpreted in `expressions.py`.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlifier.engine.series import LOG, RESTART, SeriesStore
from sqlifier.engine.slo import budget_key, burn_key
from sqlifier.lang import ast
from sqlifier.lang.checker import rule_label
from sqlifier.lang.cron import CronError, CronSchedule, parse_cron
from sqlifier.lang.fields import pinned_services
from sqlifier.lang.printer import format_rule, format_trigger
from sqlifier.lang.signals import LOG_LEVELS, SIGNALS, SignalKind
from sqlifier.lang.units import UNITS, Type, base_value

__all__ = [
    "COMPARISONS",
    "DEFAULT_COUNT_WINDOW",
    "CompiledRule",
    "NoData",
    "ServiceView",
    "Test",
    "World",
    "compile_rule",
    "compile_test",
    "constant_value",
    "show_value",
    "signal_unit",
]

DEFAULT_COUNT_WINDOW = 60.0
COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "=": operator.eq,
    "!=": operator.ne,
}


class NoData(Exception):
    """A value the rule needs is missing; the message says which and why."""


@dataclass(frozen=True, slots=True)
class ServiceView:
    """What the engine knows about one service at a tick."""

    name: str
    instances: int = 1
    ready_instances: int = 1
    env: str = "dev"
    labels: Mapping[str, str] = field(default_factory=dict)
    release: str = "current"
    release_age: float | None = None
    rolled_back_from: str | None = None  # this release is the result of rolling back from X


class World(Protocol):
    """The engine's window on the running stack (live) or on a replay (tests, backtests)."""

    store: SeriesStore

    def service(self, name: str) -> ServiceView | None: ...


@dataclass(frozen=True, slots=True)
class Test:
    """One signal test of a trigger, ready to read from the store."""

    index: int
    signal: str
    kind: SignalKind
    key: str  # the series: "cpu", "latency_p99", "rps.canary", "prometheus:<q>", "log"
    service: str | None  # a service named in the arguments
    op: str | None
    threshold: float | None  # base units
    window: float  # count window, or how long a level must hold
    unit: Type = Type.NUMBER
    min_rank: int = 0
    rank: int | None = None
    match: re.Pattern[str] | None = None
    cron: CronSchedule | None = None
    memory_percent: bool = False
    text: str = ""
    compare: Callable[[Any, Any], bool] = field(default=operator.gt, repr=False)

    def read(self, world: World, service: str, now: float, since: float) -> float | None:
        """The value the test compares: a level now, or a count over the window (events
        after `since`, the window's restart)."""
        name = self.service or service
        if self.kind is SignalKind.COUNT:
            start = max(now - self.window, since)
            return float(
                world.store.count(name, self.key, start, now, self.min_rank, self.rank, self.match)
            )
        return world.store.level(name, self.key, now)

    def holds(self, value: float) -> bool:
        assert self.op is not None and self.threshold is not None
        return COMPARISONS[self.op](value, self.threshold)


# Trigger trees: a test index, or ("AND" | "OR", children).
Tree = int | tuple[str, tuple["Tree", ...]]


@dataclass(frozen=True, slots=True)
class CompiledRule:
    id: str  # RULE name, or FILE:LINE
    path: str
    line: int
    rule: ast.Rule
    text: str  # canonical text: a changed rule starts with fresh state
    tests: tuple[Test, ...]
    tree: Tree
    for_: float  # 0 without FOR
    cooldown: float
    limit: float | None
    dry_run: bool
    services: frozenset[str] | None  # None: every service of the stack
    has_level: bool
    simple: Test | None = None  # the one level test of a rule without IF (a fast path)
    # A rule without IF whose tests are all plain level tests, combined with AND / OR:
    # the fast path evaluates its tree and hands on only the services whose state changes.
    levels_only: bool = False

    def candidates(self, all_services: Collection[str]) -> list[str]:
        if self.services is None:
            return list(all_services)
        return sorted(self.services)


def compile_rule(rule: ast.Rule, path: str) -> CompiledRule:
    for_ = _seconds(rule.for_) if rule.for_ is not None else 0.0
    tests: list[Test] = []
    tree = _tree(rule.trigger, tests, for_)
    named = {t.service for t in tests if t.service is not None}
    services: set[str] | None = set(named) if named else None
    pinned = pinned_services(rule.condition)
    if pinned is not None:
        services = pinned if services is None else services & pinned
    return CompiledRule(
        id=rule_label(rule, path),
        path=path,
        line=rule.span.line,
        rule=rule,
        text=format_rule(rule),
        tests=tuple(tests),
        tree=tree,
        for_=for_,
        cooldown=_seconds(rule.cooldown) if rule.cooldown is not None else 0.0,
        limit=float(rule.limit.value) if rule.limit is not None else None,
        dry_run=rule.dry_run,
        services=frozenset(services) if services is not None else None,
        has_level=any(t.kind is SignalKind.LEVEL for t in tests),
        simple=_simple(tests, tree, rule.condition),
        levels_only=rule.condition is None and all(_plain_level(t) for t in tests),
    )


def _simple(tests: list[Test], tree: Tree, condition: ast.Condition | None) -> Test | None:
    if condition is not None or not isinstance(tree, int):
        return None
    test = tests[tree]
    return test if _plain_level(test) else None


def _plain_level(test: Test) -> bool:
    return test.kind is SignalKind.LEVEL and not test.memory_percent and test.op is not None


def _seconds(q: ast.Quantity) -> float:
    return base_value(q.amount, q.unit)


def _tree(node: ast.Trigger, tests: list[Test], for_: float) -> Tree:
    if isinstance(node, ast.BoolOp):
        children = tuple(_tree(child, tests, for_) for child in node.operands)  # type: ignore[arg-type]
        return (node.op, children)
    tests.append(compile_test(node, len(tests), for_))
    return len(tests) - 1


def compile_test(node: ast.SignalTest, index: int, for_: float) -> Test:
    """One signal test ready to read (also a signal called in a SCALE expression)."""
    spec = SIGNALS[node.signal]
    named: dict[str, ast.Expr] = {a.name: a.value for a in node.args if a.name is not None}
    positional = [a.value for a in node.args if a.name is None]
    service = _text(named.get("service"))
    track = _text(named.get("track"))
    cmp = node.comparison
    op = cmp.op if cmp is not None else None
    threshold = constant_value(cmp.value) if cmp is not None else None
    unit = _unit(cmp.value) if cmp is not None else Type.NUMBER
    kind = spec.kind
    window = for_ if for_ > 0 else (DEFAULT_COUNT_WINDOW if kind is SignalKind.COUNT else 0.0)
    text = _shown_test(node)
    signal = node.signal
    key = signal
    cron = None
    min_rank, rank, match = 0, None, None
    memory_percent = False
    if signal in ("cpu", "high_cpu", "low_cpu"):
        key = "cpu_share" if _text(named.get("of")) == "limit" else "cpu"
    elif signal == "latency":
        key = f"latency_{_word(positional[0]) if positional else 'p99'}"
    elif signal == "prometheus":
        key = f"prometheus:{_text(positional[0]) if positional else ''}"
    elif signal == "schedule":
        try:
            cron = parse_cron(_text(positional[0]) or "")
        except CronError:  # the checker refuses these; never true if one slips through
            cron = CronSchedule(frozenset(), frozenset(), frozenset(), frozenset(), frozenset())
    elif signal in ("log", "log_error"):
        key = LOG
        level = _text(named.get("level"))
        if signal == "log_error":
            min_rank = LOG_LEVELS["error"]
        if level is not None:
            rank = LOG_LEVELS.get(level.lower())
            if signal == "log_error" and level.lower() == "error":
                rank, min_rank = None, LOG_LEVELS["error"]
        pattern = _text(named.get("match"))
        if pattern is not None:
            match = re.compile(pattern)
    elif signal in ("restarts", "burn_rate", "error_budget"):
        key = RESTART if signal == "restarts" else slo_key(signal, positional, named)
    elif signal == "memory" and unit is Type.PERCENT:
        key = "memory_share"  # of resources.memory: no data without a limit
    if track is not None and signal in ("rps", "error_rate", "latency"):
        key = f"{key}.{track}"
    if kind is SignalKind.COUNT and op is None:  # `log()` alone: at least one line
        op, threshold = ">", 0.0
    return Test(
        index,
        signal,
        kind,
        key,
        service,
        op,
        threshold,
        window,
        unit,
        min_rank,
        rank,
        match,
        cron,
        memory_percent,
        text,
        COMPARISONS.get(op or "", operator.gt),
    )


def slo_key(signal: str, positional: list[ast.Expr], named: Mapping[str, ast.Expr]) -> str:
    """`burn_rate:3600`, `burn_rate:300.latency`, `error_budget`, `error_budget.latency`."""
    objective = _text(named.get("objective"))
    if signal == "error_budget":
        return budget_key(objective)
    seconds = constant_value(positional[0]) if positional else None
    return burn_key(seconds if seconds is not None and seconds > 0 else 3600.0, objective)


def _text(node: ast.Expr | None) -> str | None:
    if isinstance(node, ast.String):
        return node.value
    if isinstance(node, ast.Name):
        return node.dotted
    return None


def _word(node: ast.Expr) -> str:
    return _text(node) or "p99"


def constant_value(node: ast.Expr) -> float | None:
    """A number or quantity written in a rule, in base units; None for anything else."""
    if isinstance(node, ast.Number):
        return float(node.value)
    if isinstance(node, ast.Quantity):
        return base_value(node.amount, node.unit)
    if isinstance(node, ast.Unary) and node.op == "-":
        inner = constant_value(node.operand)
        return -inner if inner is not None else None
    return None


def _unit(node: ast.Expr) -> Type:
    if isinstance(node, ast.Quantity):
        return UNITS[node.unit][0]
    return Type.NUMBER


def _shown_test(node: ast.SignalTest) -> str:
    return format_trigger(node)


def show_value(value: float, unit: Type) -> str:
    """A value the way a rule writes it: 91%, 312ms, 512MiB, 4."""
    if unit is Type.PERCENT:
        return f"{_trim(value * 100)}%"
    if unit is Type.DURATION:
        if value < 1:
            return f"{_trim(value * 1000)}ms"
        if value < 120:
            return f"{_trim(value)}s"
        return f"{_trim(value / 60)}m"
    if unit is Type.BYTES:
        for name, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
            if value >= size:
                return f"{_trim(value / size)}{name}"
        return f"{_trim(value)}B"
    return _trim(value)


def _trim(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.1f}"


def signal_unit(signal: str) -> Type:
    """The unit a signal's values are shown in."""
    if signal in ("cpu", "high_cpu", "low_cpu", "error_rate", "error_budget"):
        return Type.PERCENT
    if signal == "latency":
        return Type.DURATION
    if signal == "memory":
        return Type.BYTES
    return Type.NUMBER
