"""IF conditions, SCALE expressions and NOTIFY / RUN messages, interpreted over what the
engine knows of a service (`ServiceView`) at a time handed in.

Three-valued where a field has no value: a condition is then neither true nor false
(`None`), an expression raises `NoData` with what was missing, and a placeholder is left as
written. Times in rules are UTC, live and in replays alike.
"""

from __future__ import annotations

import math
import re
import time as _time
from collections.abc import Mapping

from sqlifier.engine.compiled import (
    COMPARISONS,
    CompiledRule,
    NoData,
    ServiceView,
    World,
    compile_test,
    constant_value,
    show_value,
)
from sqlifier.lang import ast
from sqlifier.lang.printer import format_expr
from sqlifier.lang.units import Type

__all__ = ["calendar", "condition_holds", "evaluate", "field_value", "render_message"]

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def calendar(now: float) -> _time.struct_time:
    """Times in rules are UTC, live and in replays alike."""
    return _time.gmtime(now)


def field_value(view: ServiceView, dotted: str, now: float) -> str | float | None:
    if dotted.startswith("service.labels."):
        return view.labels.get(dotted.removeprefix("service.labels."))
    when = calendar(now)
    values: dict[str, str | float | None] = {
        "service.name": view.name,
        "service.env": view.env,
        "service.instances": float(view.instances),
        "service.ready_instances": float(view.ready_instances),
        "instances": float(view.instances),
        "ready_instances": float(view.ready_instances),
        "release.version": view.release,
        "release.age": view.release_age,
        "time.hour": float(when.tm_hour),
        "time.minute": float(when.tm_min),
        "time.day": float(when.tm_mday),
        "time.weekday": _WEEKDAYS[when.tm_wday],
    }
    return values.get(dotted)


def condition_holds(node: ast.Condition, view: ServiceView, now: float) -> bool | None:
    """True, False, or None when a field it reads has no value."""
    if isinstance(node, ast.BoolOp):
        results = [condition_holds(c, view, now) for c in node.operands]  # type: ignore[arg-type]
        if node.op == "AND":
            if any(r is False for r in results):
                return False
            return None if any(r is None for r in results) else True
        if any(r is True for r in results):
            return True
        return None if any(r is None for r in results) else False
    if isinstance(node, ast.Not):
        inner = condition_holds(node.operand, view, now)
        return None if inner is None else not inner
    if isinstance(node, ast.Compare):
        left = _operand(node.left, view, now)
        right = _operand(node.right, view, now)
        if left is None or right is None:
            return None
        if isinstance(left, str) or isinstance(right, str):
            if node.op not in ("=", "!="):
                return None
            same = str(left).lower() == str(right).lower() if _is_weekday(node) else left == right
            return same if node.op == "=" else not same
        return COMPARISONS[node.op](left, right)
    if isinstance(node, ast.InList):
        value = _operand(node.operand, view, now)
        if value is None:
            return None
        found = value in [_operand(v, view, now) for v in node.values]
        return found != node.negated
    if isinstance(node, ast.Like):
        value = _operand(node.operand, view, now)
        if value is None:
            return None
        found = _like(node.pattern.value).fullmatch(str(value)) is not None
        return found != node.negated
    return None


def _is_weekday(node: ast.Compare) -> bool:
    return any(
        isinstance(n, ast.Name) and n.dotted == "time.weekday" for n in (node.left, node.right)
    )


def _operand(node: ast.Expr, view: ServiceView, now: float) -> str | float | None:
    if isinstance(node, ast.Name):
        return field_value(view, node.dotted, now)
    if isinstance(node, ast.String):
        return node.value
    return constant_value(node)


def _like(pattern: str) -> re.Pattern[str]:
    parts = []
    for char in pattern:
        parts.append(".*" if char == "%" else "." if char == "_" else re.escape(char))
    return re.compile("".join(parts), re.DOTALL)


def evaluate(
    node: ast.Expr, world: World, view: ServiceView, rule: CompiledRule, now: float
) -> float:
    """A SCALE expression's value; raises NoData when a value it reads is missing."""
    if isinstance(node, ast.Number | ast.Quantity | ast.Unary) and constant_value(node) is not None:
        value = constant_value(node)
        assert value is not None
        return value
    if isinstance(node, ast.Unary):
        inner = evaluate(node.operand, world, view, rule, now)
        return -inner if node.op == "-" else inner
    if isinstance(node, ast.Name):
        found = field_value(view, node.dotted, now)
        if not isinstance(found, float):
            raise NoData(f"{node.dotted} has no value")
        return found
    if isinstance(node, ast.Binary):
        left = evaluate(node.left, world, view, rule, now)
        right = evaluate(node.right, world, view, rule, now)
        if node.op == "+":
            return left + right
        if node.op == "-":
            return left - right
        if node.op == "*":
            return left * right
        if right == 0:
            raise NoData(f"division by zero in {_shown(node)}")
        return left / right
    if isinstance(node, ast.Call):
        args = [a.value for a in node.args]
        if node.name in ("ceil", "floor"):
            value = evaluate(args[0], world, view, rule, now)
            if not math.isfinite(value):  # infinite or NaN: the action says so and skips
                return value
            return float(math.ceil(value) if node.name == "ceil" else math.floor(value))
        if node.name in ("min", "max"):
            values = [evaluate(a, world, view, rule, now) for a in args]
            return min(values) if node.name == "min" else max(values)
        test = compile_test(ast.SignalTest(node.name, node.args), 0, rule.for_)
        value = test.read(world, view.name, now, -math.inf)
        if value is None:
            raise NoData(f"{_shown(node)} has no data")
        return value
    raise NoData(f"cannot compute {_shown(node)}")


def _shown(node: ast.Expr) -> str:
    return format_expr(node)


_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_.\-]*)\}", re.IGNORECASE)


def render_message(template: str, view: ServiceView, now: float, extra: Mapping[str, str]) -> str:
    """NOTIFY and RUN text with `{service.name}`, `{value}`, `{rule}` ... filled in."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in extra:
            return extra[name]
        value = field_value(view, name, now)
        if value is None:
            return match.group(0)
        if isinstance(value, float):
            return show_value(value, Type.DURATION if name == "release.age" else Type.NUMBER)
        return value

    return _PLACEHOLDER.sub(fill, template)
