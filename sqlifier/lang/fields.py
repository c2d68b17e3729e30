"""The fields a rule can read: in IF conditions, SCALE expressions and NOTIFY messages."""

from __future__ import annotations

from sqlifier.lang.units import Type

__all__ = [
    "EXPRESSION_NAMES",
    "FIELDS",
    "FIELD_RANGES",
    "FUNCTIONS",
    "PLACEHOLDERS",
    "WEEKDAYS",
    "field_type",
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
