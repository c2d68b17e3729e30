"""Units of measure in rule values: durations, sizes and percentages."""

from __future__ import annotations

import enum

__all__ = ["UNITS", "UNIT_WORDS", "Type", "base_value", "describe", "unit_type"]


class Type(enum.Enum):
    """The type of a value or expression, as the checker infers it."""

    NUMBER = "a number"
    PERCENT = "a percentage"
    DURATION = "a duration"
    BYTES = "a size"
    STRING = "text"
    ANY = "a value"  # unknown, after an error has been reported: suppresses follow-ups


# unit -> (type, multiplier to the base unit: seconds, bytes, or a fraction for %)
UNITS: dict[str, tuple[Type, float]] = {
    "ms": (Type.DURATION, 0.001),
    "s": (Type.DURATION, 1),
    "m": (Type.DURATION, 60),
    "h": (Type.DURATION, 3600),
    "d": (Type.DURATION, 86400),
    "%": (Type.PERCENT, 0.01),
    "B": (Type.BYTES, 1),
    "KB": (Type.BYTES, 1000),
    "MB": (Type.BYTES, 1000**2),
    "GB": (Type.BYTES, 1000**3),
    "TB": (Type.BYTES, 1000**4),
    "KiB": (Type.BYTES, 1024),
    "MiB": (Type.BYTES, 1024**2),
    "GiB": (Type.BYTES, 1024**3),
    "TiB": (Type.BYTES, 1024**4),
}

# Words people write for a unit, for "write 3m" hints.
UNIT_WORDS: dict[str, str] = {
    "millisecond": "ms",
    "milliseconds": "ms",
    "msec": "ms",
    "second": "s",
    "seconds": "s",
    "sec": "s",
    "secs": "s",
    "minute": "m",
    "minutes": "m",
    "min": "m",
    "mins": "m",
    "hour": "h",
    "hours": "h",
    "hr": "h",
    "hrs": "h",
    "day": "d",
    "days": "d",
    "percent": "%",
    "pct": "%",
    "bytes": "B",
}


def unit_type(unit: str) -> Type | None:
    entry = UNITS.get(unit)
    return entry[0] if entry else None


def base_value(amount: float, unit: str) -> float:
    """The amount in seconds, bytes, or as a fraction (80% -> 0.8)."""
    return amount * UNITS[unit][1]


def describe(kind: Type) -> str:
    examples = {
        Type.NUMBER: "a number like 10",
        Type.PERCENT: "a percentage like 80%",
        Type.DURATION: "a duration like 300ms or 3m",
        Type.BYTES: "a size like 512MiB",
        Type.STRING: "text in quotes like 'x'",
    }
    return examples.get(kind, kind.value)
