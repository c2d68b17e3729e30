"""Checking the actions: the service each one names, SCALE to a whole, non-negative
number of instances (the arithmetic typed with units: a percentage divided by a percentage
is a number), ROLLBACK TO a version, NOTIFY placeholders and RUN commands that split into
arguments.
"""

from __future__ import annotations

import math
import re
import shlex

from sqlifier.lang import ast
from sqlifier.lang.check_base import literal_type
from sqlifier.lang.check_signals import SignalChecks
from sqlifier.lang.errors import did_you_mean, quote
from sqlifier.lang.fields import (
    EXPRESSION_NAMES,
    FUNCTIONS,
    PLACEHOLDERS,
    field_type,
)
from sqlifier.lang.printer import format_expr
from sqlifier.lang.signals import SignalKind
from sqlifier.lang.source import Span
from sqlifier.lang.units import Type

__all__ = ["ActionChecks", "constant_value", "is_relative"]

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


class ActionChecks(SignalChecks):
    def action(self, action: ast.Action) -> None:
        target = getattr(action, "target", None)
        if isinstance(target, ast.Target) and target.literal is not None:
            if not target.literal.strip():
                self.error(target.span, "the service name is empty")
            else:
                self.service(target.literal, target.span)
        if isinstance(action, ast.Scale):
            self.scale(action)
        elif isinstance(action, ast.Rollback):
            if action.version is not None and not action.version.value.strip():
                self.error(action.version.span, "ROLLBACK TO needs a version, not an empty string")
        elif isinstance(action, ast.Notify):
            self.notify(action.message)
        elif isinstance(action, ast.Run):
            self.run(action.command)

    def scale(self, action: ast.Scale) -> None:
        kind = self.expr(action.to)
        if kind in (Type.ANY, Type.NUMBER):
            if isinstance(action.to, ast.Unary) and isinstance(action.to.operand, ast.Name):
                self.error(
                    action.to.span,
                    "SCALE to a negative number of instances",
                    "did you mean instances - 1?",
                )
                return
            constant = constant_value(action.to)
            if constant is not None and (constant < 0 or not float(constant).is_integer()):
                self.error(
                    action.to.span,
                    f"SCALE needs a whole, non-negative number of instances, "
                    f"found {format_expr(action.to)}",
                    "use ceil(), floor() or a whole number",
                )
            return
        hint = None
        if kind is not Type.STRING:
            hint = (
                "divide by a value of the same unit to get a number, like "
                "ceil(instances * cpu() / 60%)"
            )
        self.error(
            action.to.span,
            f"SCALE needs a number of instances, but this expression is {kind.value}",
            hint,
        )

    def expr(self, node: ast.Expr) -> Type:
        """The type of an arithmetic expression; reports what is wrong inside it."""
        if isinstance(node, (ast.Number, ast.Quantity, ast.String)):
            return literal_type(node)
        if isinstance(node, ast.Name):
            kind = EXPRESSION_NAMES.get(node.dotted)
            if kind is None:
                hint = did_you_mean(node.dotted, EXPRESSION_NAMES) or (
                    "expressions use numbers, instances, ready_instances and signals like cpu()"
                )
                self.error(node.span, f"unknown name {quote(node.dotted)} in the expression", hint)
                return Type.ANY
            return kind
        if isinstance(node, ast.Unary):
            return self.expr(node.operand)
        if isinstance(node, ast.Call):
            return self.call(node)
        return self.binary(node)

    def call(self, node: ast.Call) -> Type:
        arity = FUNCTIONS.get(node.name)
        if arity is None:
            name_span = Span(
                node.span.line, node.span.col, node.span.line, node.span.col + len(node.name)
            )
            spec = self.signal(node.name, node.args, name_span, in_trigger=False)
            if spec is None:
                return Type.ANY
            if spec.kind is SignalKind.EVENT:
                self.error(node.span, f"{node.name}() is an event and has no value to compute with")
                return Type.ANY
            return spec.values[0] if spec.values else Type.NUMBER
        least, most = arity
        if not least <= len(node.args) <= most:
            count = str(least) if least == most else f"{least} to {most}"
            self.error(
                node.span,
                f"{node.name}() takes {count} argument{'s' * (count != '1')}, "
                f"found {len(node.args)}",
            )
            return Type.ANY
        kinds = []
        for arg in node.args:
            if arg.name is not None:
                self.error(arg.span, f"{node.name}() takes no named arguments")
                return Type.ANY
            kinds.append(self.expr(arg.value))
        known = [k for k in kinds if k is not Type.ANY]
        if len(set(known)) > 1:
            self.error(
                node.span,
                f"{node.name}() mixes {' and '.join(sorted({k.value for k in known}))}",
            )
            return Type.ANY
        return known[0] if known else Type.ANY

    def binary(self, node: ast.Binary) -> Type:
        left = self.expr(node.left)
        right = self.expr(node.right)
        if Type.ANY in (left, right):
            return Type.ANY
        if Type.STRING in (left, right):
            self.error(node.span, f"text cannot take part in arithmetic ({node.op})")
            return Type.ANY
        if node.op == "/" and constant_value(node.right) == 0:
            self.error(node.right.span, "division by zero")
            return Type.ANY
        if node.op in ("+", "-"):
            if left is not right:
                self.error(
                    node.span,
                    f"cannot {'add' if node.op == '+' else 'subtract'} "
                    f"{right.value} {'to' if node.op == '+' else 'from'} {left.value}",
                )
                return Type.ANY
            return left
        if node.op == "*":
            if Type.NUMBER not in (left, right):
                self.error(node.span, f"cannot multiply {left.value} by {right.value}")
                return Type.ANY
            return right if left is Type.NUMBER else left
        if left is right:
            return Type.NUMBER
        if right is Type.NUMBER:
            return left
        self.error(node.span, f"cannot divide {left.value} by {right.value}")
        return Type.ANY

    def notify(self, message: ast.String) -> None:
        if not message.value.strip():
            self.error(message.span, "NOTIFY needs a message, not an empty string")
            return
        for match in _PLACEHOLDER.finditer(message.value):
            text = match.group()
            if text in ("{{", "}}"):
                continue
            name = match.group(1)
            if name is None:
                self.error(
                    _inner_span(message, match.start(), match.end()),
                    f"unmatched {quote(text)} in the NOTIFY message",
                    "write {{ or }} for a literal brace",
                )
            elif name.strip() not in PLACEHOLDERS and field_type(name.strip()) is None:
                self.error(
                    _inner_span(message, match.start(), match.end()),
                    f"unknown placeholder {{{name}}} in the NOTIFY message",
                    did_you_mean(name.strip(), PLACEHOLDERS)
                    or "placeholders: " + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS),
                )

    def run(self, command: ast.String) -> None:
        try:
            argv = shlex.split(command.value)
        except ValueError as exc:
            self.error(command.span, f"the RUN command cannot be split into arguments: {exc}")
            return
        if not argv:
            self.error(command.span, "RUN needs a command, not an empty string")


def constant_value(node: ast.Expr) -> float | None:
    """The value of an expression made only of numbers, or None (also when it overflows)."""
    try:
        value = _fold(node)
    except (OverflowError, ValueError, ZeroDivisionError):
        return None
    return value if value is None or math.isfinite(value) else None


def _fold(node: ast.Expr) -> float | None:
    if isinstance(node, ast.Number):
        return float(node.value)
    if isinstance(node, ast.Unary):
        inner = _fold(node.operand)
        return None if inner is None else -inner
    if isinstance(node, ast.Binary):
        left, right = _fold(node.left), _fold(node.right)
        if left is None or right is None:
            return None
        if node.op == "+":
            return left + right
        if node.op == "-":
            return left - right
        if node.op == "*":
            return left * right
        return None if right == 0 else left / right
    if isinstance(node, ast.Call) and node.name in FUNCTIONS:
        values = [_fold(arg.value) for arg in node.args]
        if not values or any(v is None for v in values):
            return None
        numbers = [v for v in values if v is not None]
        if node.name == "min":
            return min(numbers)
        if node.name == "max":
            return max(numbers)
        return float(math.ceil(numbers[0]) if node.name == "ceil" else math.floor(numbers[0]))
    return None


def is_relative(node: ast.Expr) -> bool:
    """Can the expression grow with the current state (instances, a signal)?

    min(...) with a constant argument is bounded by it, so it is not open-ended.
    """
    if constant_value(node) is not None:
        return False
    if isinstance(node, ast.Call) and node.name == "min":
        return all(is_relative(arg.value) for arg in node.args)
    if isinstance(node, (ast.Name, ast.Call)):
        return True
    if isinstance(node, ast.Unary):
        return is_relative(node.operand)
    if isinstance(node, ast.Binary):
        return is_relative(node.left) or is_relative(node.right)
    return False


def _inner_span(string: ast.String, start: int, end: int) -> Span:
    """The span of value[start:end] inside a string literal written on one line."""
    value = string.value
    col = string.span.col + 1 + start + value.count("'", 0, start)
    width = (end - start) + value.count("'", start, end)
    return Span(string.span.line, col, string.span.line, col + width)
