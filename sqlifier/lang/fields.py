"""The fields a rule can read: in IF conditions, SCALE expressions and NOTIFY messages."""

from __future__ import annotations

from sqlifier.lang import ast
from sqlifier.lang.units import Type

__all__ = [
    "EXPRESSION_NAMES",
    "FIELDS",
    "FIELD_RANGES",
    "FUNCTIONS",
    "PLACEHOLDERS",
    "WEEKDAYS",
    "field_type",
    "pinned_services",
]

# Fields of IF conditions. `service.labels.<key>` is any label of the service.
FIELDS: dict[str, Type] = {
    "service.name": Type.STRING,
    "service.env": Type.STRING,
    "service.instances": Type.NUMBER,
    "service.ready_instances": Type.NUMBER,
    "release.version": Type.STRING,
    "release.age": Type.DURATION,
    "time.hour": Type.NUMBER,
    "time.minute": Type.NUMBER,
    "time.day": Type.NUMBER,
    "time.weekday": Type.STRING,
}

# The values a numeric field can take (inclusive), for "can never be true" warnings.
FIELD_RANGES: dict[str, tuple[float, float]] = {
    "time.hour": (0, 23),
    "time.minute": (0, 59),
    "time.day": (1, 31),
    "service.instances": (0, float("inf")),
    "service.ready_instances": (0, float("inf")),
}

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# Bare names in SCALE expressions, besides the fields above.
EXPRESSION_NAMES: dict[str, Type] = {
    "instances": Type.NUMBER,
    "ready_instances": Type.NUMBER,
    "service.instances": Type.NUMBER,
    "service.ready_instances": Type.NUMBER,
}

# Functions of SCALE expressions: name -> (least, most) arguments.
FUNCTIONS: dict[str, tuple[int, int]] = {
    "ceil": (1, 1),
    "floor": (1, 1),
    "min": (2, 16),
    "max": (2, 16),
}

# Placeholders of NOTIFY messages: every field, plus these.
PLACEHOLDERS = (*FIELDS, "instances", "value", "rule", "signal")


def field_type(dotted: str) -> Type | None:
    """The type of a condition field, or None when there is no such field."""
    if dotted.startswith("service.labels.") and dotted.count(".") == 2 and len(dotted) > 15:
        return Type.STRING
    return FIELDS.get(dotted)


def pinned_services(node: ast.Condition | None) -> set[str] | None:
    """The services an IF restricts its rule to, when it says so at its top level:
    `service.name = 'x'`, `service.name IN (...)` (of strings only), maybe under AND;
    None when it does not."""
    if node is None:
        return None
    if isinstance(node, ast.Compare) and node.op == "=":
        if _is_service_name(node.left) and isinstance(node.right, ast.String):
            return {node.right.value}
        if _is_service_name(node.right) and isinstance(node.left, ast.String):
            return {node.left.value}
    if isinstance(node, ast.InList) and not node.negated and _is_service_name(node.operand):
        values = {v.value for v in node.values if isinstance(v, ast.String)}
        if len(values) == len(node.values):
            return values
    if isinstance(node, ast.BoolOp) and node.op == "AND":
        found: set[str] | None = None
        for child in node.operands:
            pinned = pinned_services(child)  # type: ignore[arg-type]
            if pinned is not None:
                found = pinned if found is None else found & pinned
        return found
    return None


def _is_service_name(node: ast.Expr) -> bool:
    return isinstance(node, ast.Name) and node.parts == ("service", "name")
