"""The API's requests as typed values, made from a body checked against its schema.

A body is parsed once, at the edge: `parse` checks it against the route's schema in
`openapi.py` and makes the route's request class of it, so an endpoint never looks at raw
JSON. What does not match is refused with `BadBody`, whose message names the field and
says what it must be — the API answers it with 400.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "BadBody",
    "ById",
    "Deploy",
    "Empty",
    "Explain",
    "Rollback",
    "Rollout",
    "Rotate",
    "RuleSwitch",
    "Scale",
    "Service",
    "Traffic",
    "as_body",
    "check",
    "parse",
]

_KINDS = {
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
    "null": (type(None),),
}
_NAMES = {
    "string": "a string",
    "boolean": "true or false",
    "integer": "a whole number",
    "number": "a number",
}


class BadBody(ValueError):
    """A request body that does not match its schema; the message names the field."""


@dataclass(frozen=True, slots=True)
class Empty:
    """A route that reads nothing of its body."""


@dataclass(frozen=True, slots=True)
class Service:
    service: str


@dataclass(frozen=True, slots=True)
class Scale:
    service: str
    instances: int


@dataclass(frozen=True, slots=True)
class Traffic:
    service: str
    canary_percent: float


@dataclass(frozen=True, slots=True)
class Explain:
    rule: str
    service: str | None = None


@dataclass(frozen=True, slots=True)
class RuleSwitch:
    rule: str | None = None  # None: every rule


@dataclass(frozen=True, slots=True)
class Rotate:
    name: str


@dataclass(frozen=True, slots=True)
class ById:
    id: str


@dataclass(frozen=True, slots=True)
class Deploy:
    service: str
    version: str
    reason: str | None = None
    approve: bool | None = None
    lock_wait: float | None = None
    approval_timeout: float | None = None
    fix: bool | None = None


@dataclass(frozen=True, slots=True)
class Rollout:
    service: str
    action: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Rollback:
    service: str
    to: str | None = None
    force: bool | None = None
    approve: bool | None = None
    reason: str | None = None
    lock_wait: float | None = None


Request = TypeVar("Request")


def parse(kind: type[Request], schema: Mapping[str, Any] | None, body: object) -> Request:
    """`body` checked against `schema` and made a `kind`; BadBody when it does not match."""
    if schema is not None:
        check(schema, body)
    values = body if isinstance(body, dict) else {}
    known = {f.name for f in dataclasses.fields(kind)}  # type: ignore[arg-type]
    return kind(**{name: value for name, value in values.items() if name in known})


def as_body(request: object) -> dict[str, Any]:
    """A request's given fields as the dictionary the deployer reads."""
    fields = dataclasses.asdict(request)  # type: ignore[call-overload]
    return {name: value for name, value in fields.items() if value is not None}


def check(schema: Mapping[str, Any], body: object) -> None:
    """Raise BadBody naming the first field of `body` that does not match `schema`."""
    if not isinstance(body, dict):
        raise BadBody("the body must be a JSON object")
    for name in schema.get("required", []):
        if body.get(name) is None:
            raise BadBody(f"{name} is required")
    for name, rule in schema.get("properties", {}).items():
        if name in body:
            _check_value(name, rule, body[name])


def _check_value(name: str, rule: Mapping[str, Any], value: object) -> None:
    kinds = rule["type"] if isinstance(rule["type"], list) else [rule["type"]]
    if value is None and "null" in kinds:
        return
    fits = any(
        isinstance(value, _KINDS[kind]) and (kind == "boolean" or not isinstance(value, bool))
        for kind in kinds
    )
    low, high = rule.get("minimum"), rule.get("maximum")
    if fits and isinstance(value, int | float):
        fits = (low is None or value >= low) and (high is None or value <= high)
    if fits and "enum" in rule:
        fits = value in rule["enum"]
    if not fits:
        raise BadBody(f"{name} must be {_expected(kinds, rule)}")
    if isinstance(value, str) and len(value) < rule.get("minLength", 0):
        raise BadBody(f"{name} must not be empty")


def _expected(kinds: list[str], rule: Mapping[str, Any]) -> str:
    if "enum" in rule:
        return "one of " + ", ".join(map(str, rule["enum"]))
    what = " or ".join(_NAMES[kind] for kind in kinds if kind != "null")
    low, high = rule.get("minimum"), rule.get("maximum")
    if low is not None and high is not None:
        return f"{what} from {low:g} to {high:g}"
    if low is not None:
        return f"{what} of at least {low:g}"
    return what
