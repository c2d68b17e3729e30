"""Checking an IF condition: known fields, values of the field's type (`time.hour` is a
number, `time.weekday` one of mon..sun, `service.name` a service of the stack), orderings
only between numbers, percentages, durations and sizes, and warnings for what can never be
true (`time.hour > 24`, `a = 'x' AND a = 'y'`, two constants compared).
"""

from __future__ import annotations

from sqlifier.lang import ast
from sqlifier.lang.check_base import CheckerBase, base_of, literal_type, shown
from sqlifier.lang.errors import did_you_mean, quote
from sqlifier.lang.fields import (
    FIELD_RANGES,
    FIELDS,
    WEEKDAYS,
    field_type,
)
from sqlifier.lang.printer import format_expr
from sqlifier.lang.source import Span
from sqlifier.lang.units import Type, describe

__all__ = ["ConditionChecks"]

_ORDERED = (Type.NUMBER, Type.PERCENT, Type.DURATION, Type.BYTES)
_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}


class ConditionChecks(CheckerBase):
    def condition(self, node: ast.Condition) -> None:
        if isinstance(node, ast.BoolOp):
            for operand in node.operands:
                self.condition(operand)  # type: ignore[arg-type]
        elif isinstance(node, ast.Not):
            self.condition(node.operand)
        elif isinstance(node, ast.Compare):
            self.compare(node)
        elif isinstance(node, ast.InList):
            kind = self.operand(node.operand)
            for value in node.values:
                self.same_type(node.operand, kind, value)
                if isinstance(node.operand, ast.Name) and isinstance(value, ast.Number):
                    bounds = FIELD_RANGES.get(node.operand.dotted)
                    if bounds and not bounds[0] <= value.value <= bounds[1]:
                        self.warning(
                            value.span,
                            f"{node.operand.dotted} is never {format_expr(value)}",
                        )
        else:
            kind = self.operand(node.operand)
            if kind not in (Type.STRING, Type.ANY):
                self.error(
                    node.span,
                    f"LIKE matches text, and {format_expr(node.operand)} is {kind.value}",
                )

    def compare(self, node: ast.Compare) -> None:
        left = self.operand(node.left)
        right = self.operand(node.right, bare_text=isinstance(node.left, ast.Name))
        if isinstance(node.left, ast.Name) and isinstance(node.right, ast.Name):
            if Type.ANY not in (left, right) and left is not right:
                self.error(
                    node.span,
                    f"{node.left.dotted} is {left.value} and {node.right.dotted} is "
                    f"{right.value}; they cannot be compared",
                )
            return
        if not isinstance(node.left, ast.Name) and not isinstance(node.right, ast.Name):
            self.warning(
                node.span,
                "this compares two constants, so it is always true or always false",
                "compare a field, like service.name = 'web'",
            )
            return
        if isinstance(node.left, ast.Name) or not isinstance(node.right, ast.Name):
            self.same_type(node.left, left, node.right)
        else:
            self.same_type(node.right, right, node.left)
        kind = left if left is not Type.ANY else right
        if node.op in ("<", "<=", ">", ">=") and kind not in (*_ORDERED, Type.ANY):
            self.error(
                node.span,
                f"{node.op} compares numbers, percentages, durations or sizes, not {kind.value}",
                "use =, !=, IN or LIKE for text",
            )
            return
        field_node, value, op = node.left, node.right, node.op
        if isinstance(value, ast.Name) and not isinstance(field_node, ast.Name):
            field_node, value, op = value, field_node, _FLIPPED.get(op, op)
        if isinstance(field_node, ast.Name) and isinstance(value, (ast.Number, ast.Quantity)):
            self.field_range(node.span, field_node.dotted, op, base_of(value))

    def field_range(self, span: Span, dotted: str, op: str, value: float | None) -> None:
        bounds = FIELD_RANGES.get(dotted)
        if bounds is None or value is None:
            return
        low, high = bounds
        never = (
            (op == "=" and not low <= value <= high)
            or (op == ">" and value >= high)
            or (op == ">=" and value > high)
            or (op == "<" and value <= low)
            or (op == "<=" and value < low)
        )
        if never:
            where = (
                f"is never below {low:g}"
                if high == float("inf")
                else f"is between {low:g} and {high:g}"
            )
            self.warning(span, f"{dotted} {where}, so this condition is never true")

    def operand(self, node: ast.Expr, bare_text: bool = False) -> Type:
        if isinstance(node, ast.Name):
            kind = field_type(node.dotted)
            if kind is None:
                hint = _field_hint(node.dotted)
                if bare_text and len(node.parts) == 1:
                    hint = f"text goes in quotes: '{node.dotted}'"
                self.error(node.span, f"unknown field {quote(node.dotted)}", hint)
                return Type.ANY
            return kind
        return literal_type(node)

    def same_type(self, field_node: ast.Expr, kind: Type, value: ast.Expr) -> None:
        value_kind = literal_type(value) if not isinstance(value, ast.Name) else Type.ANY
        if Type.ANY in (kind, value_kind):
            return
        if value_kind is not kind:
            self.error(
                value.span,
                f"{format_expr(field_node)} is {kind.value}; compare it with {describe(kind)}, "
                f"not {shown(value)}",
            )
            return
        if not isinstance(field_node, ast.Name) or not isinstance(value, ast.String):
            return
        dotted = field_node.dotted
        if dotted == "time.weekday" and value.value.lower() not in WEEKDAYS:
            self.error(
                value.span,
                f"{quote(value.value)} is not a weekday; use {', '.join(WEEKDAYS)}",
                did_you_mean(value.value[:3], WEEKDAYS),
            )
        elif dotted == "service.name":
            self.service(value.value, value.span)

    def contradictions(self, node: ast.Condition) -> None:
        """`a = 'x' AND a = 'y'`: a condition that can never be true."""
        if not isinstance(node, ast.BoolOp) or node.op != "AND":
            return
        seen: dict[str, ast.Expr] = {}
        for operand in node.operands:
            if (
                isinstance(operand, ast.Compare)
                and operand.op == "="
                and isinstance(operand.left, ast.Name)
                and not isinstance(operand.right, ast.Name)
            ):
                field_name = operand.left.dotted
                earlier = seen.setdefault(field_name, operand.right)
                if earlier != operand.right:
                    self.warning(
                        operand.span,
                        f"{field_name} cannot be both {format_expr(earlier)} and "
                        f"{format_expr(operand.right)}, so this condition is never true",
                        "did you mean OR, or IN (...)?",
                    )


def _field_hint(dotted: str) -> str:
    suffix = [f for f in FIELDS if f.endswith("." + dotted)]
    if suffix:
        return f"did you mean {quote(suffix[0])}?"
    return did_you_mean(dotted, FIELDS) or "fields: " + ", ".join([*FIELDS, "service.labels.<key>"])
