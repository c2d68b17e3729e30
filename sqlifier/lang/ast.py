"""The syntax tree of rule files: immutable values that carry their source positions.

Positions (`span`) do not take part in equality, so two parses of the same rule written
differently (other spacing, case, comments) compare equal. AND/OR chains are flat
(`BoolOp` with several operands): `a OR (b OR c)` and `a OR b OR c` mean, and are, the same.

The nodes are plain classes with `__slots__`, immutable by typing (every attribute is
`Final`: mypy refuses an assignment after `__init__`), on one base that compares, hashes
and shows them by their `_compared` attributes. Frozen dataclasses did the same, but made
each class at import time by compiling its methods (some 20 ms of every `sqlifier check`)
and built each node through `object.__setattr__`; here the methods are ordinary code.
"""

from __future__ import annotations

import enum
from typing import ClassVar, Final

from sqlifier.lang.source import Span
from sqlifier.lang.tokens import Comment

__all__ = [
    "Action",
    "Arg",
    "Binary",
    "BoolOp",
    "Call",
    "Compare",
    "Comparison",
    "Condition",
    "Expr",
    "InList",
    "Like",
    "Name",
    "Not",
    "Notify",
    "Number",
    "Quantity",
    "Restart",
    "Rollback",
    "RollbackTo",
    "Rollout",
    "Rule",
    "RuleFile",
    "Run",
    "Scale",
    "SignalTest",
    "String",
    "Target",
    "Trigger",
    "Unary",
]

_NOWHERE = Span(0, 0, 0, 0)


class _Node:
    """A node: equal to another of its class with equal `_compared` attributes (its
    position, comments and clause positions do not count), hashable, shown by them."""

    __slots__ = ()
    _compared: ClassVar[tuple[str, ...]] = ()

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self._compared)

    def __hash__(self) -> int:
        return hash((self.__class__, *[getattr(self, n) for n in self._compared]))

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._compared)
        return f"{self.__class__.__name__}({shown})"


# --- values and arithmetic -------------------------------------------------------------


class Number(_Node):
    __slots__ = ("span", "value")
    _compared = ("value",)
    value: Final[int | float]
    span: Final[Span]

    def __init__(self, value: int | float, span: Span = _NOWHERE) -> None:
        self.value = value
        self.span = span


class Quantity(_Node):
    """A number with a unit as written: `80%`, `3m`, `300ms`, `512MiB`."""

    __slots__ = ("amount", "span", "unit")
    _compared = ("amount", "unit")
    amount: Final[int | float]
    unit: Final[str]
    span: Final[Span]

    def __init__(self, amount: int | float, unit: str, span: Span = _NOWHERE) -> None:
        self.amount = amount
        self.unit = unit
        self.span = span


class String(_Node):
    __slots__ = ("span", "value")
    _compared = ("value",)
    value: Final[str]
    span: Final[Span]

    def __init__(self, value: str, span: Span = _NOWHERE) -> None:
        self.value = value
        self.span = span


class Name(_Node):
    """A field or variable: `service.name`, `instances`, `p99` (stored lower case)."""

    __slots__ = ("parts", "span")
    _compared = ("parts",)
    parts: Final[tuple[str, ...]]
    span: Final[Span]

    def __init__(self, parts: tuple[str, ...], span: Span = _NOWHERE) -> None:
        self.parts = parts
        self.span = span

    @property
    def dotted(self) -> str:
        return ".".join(self.parts)


class Arg(_Node):
    """A call argument: positional (`p99`) or named (`level='critical'`)."""

    __slots__ = ("name", "span", "value")
    _compared = ("name", "value")
    name: Final[str | None]
    value: Final[Expr]
    span: Final[Span]

    def __init__(self, name: str | None, value: Expr, span: Span = _NOWHERE) -> None:
        self.name = name
        self.value = value
        self.span = span


class Call(_Node):
    """A function (`ceil(x)`) or a signal's current value (`cpu()`) in an expression."""

    __slots__ = ("args", "name", "span")
    _compared = ("name", "args")
    name: Final[str]
    args: Final[tuple[Arg, ...]]
    span: Final[Span]

    def __init__(self, name: str, args: tuple[Arg, ...], span: Span = _NOWHERE) -> None:
        self.name = name
        self.args = args
        self.span = span


class Unary(_Node):
    __slots__ = ("op", "operand", "span")
    _compared = ("op", "operand")
    op: Final[str]
    operand: Final[Expr]
    span: Final[Span]

    def __init__(self, op: str, operand: Expr, span: Span = _NOWHERE) -> None:
        self.op = op
        self.operand = operand
        self.span = span


class Binary(_Node):
    __slots__ = ("left", "op", "right", "span")
    _compared = ("op", "left", "right")
    op: Final[str]
    left: Final[Expr]
    right: Final[Expr]
    span: Final[Span]

    def __init__(self, op: str, left: Expr, right: Expr, span: Span = _NOWHERE) -> None:
        self.op = op
        self.left = left
        self.right = right
        self.span = span


Expr = Number | Quantity | String | Name | Call | Unary | Binary


# --- the trigger (ON) ------------------------------------------------------------------


class Comparison(_Node):
    """`> 80%`: an operator and the value it compares against."""

    __slots__ = ("op", "span", "value")
    _compared = ("op", "value")
    op: Final[str]
    value: Final[Expr]
    span: Final[Span]

    def __init__(self, op: str, value: Expr, span: Span = _NOWHERE) -> None:
        self.op = op
        self.value = value
        self.span = span


class SignalTest(_Node):
    """`high_cpu(>80%)` or `log_error(level='critical') > 10`."""

    __slots__ = ("args", "inner", "name_span", "outer", "signal", "span")
    _compared = ("signal", "args", "inner", "outer")
    signal: Final[str]
    args: Final[tuple[Arg, ...]]
    inner: Final[Comparison | None]
    outer: Final[Comparison | None]
    span: Final[Span]
    name_span: Final[Span]

    def __init__(
        self,
        signal: str,
        args: tuple[Arg, ...],
        inner: Comparison | None = None,
        outer: Comparison | None = None,
        span: Span = _NOWHERE,
        name_span: Span = _NOWHERE,
    ) -> None:
        self.signal = signal
        self.args = args
        self.inner = inner
        self.outer = outer
        self.span = span
        self.name_span = name_span

    @property
    def comparison(self) -> Comparison | None:
        return self.inner or self.outer


class BoolOp(_Node):
    """`a AND b AND c` or `a OR b`, in the trigger or in the condition."""

    __slots__ = ("op", "operands", "span")
    _compared = ("op", "operands")
    op: Final[str]
    operands: Final[tuple[Trigger, ...] | tuple[Condition, ...]]
    span: Final[Span]

    def __init__(
        self,
        op: str,
        operands: tuple[Trigger, ...] | tuple[Condition, ...],
        span: Span = _NOWHERE,
    ) -> None:
        self.op = op
        self.operands = operands
        self.span = span


Trigger = SignalTest | BoolOp


# --- the condition (IF) ----------------------------------------------------------------


class Compare(_Node):
    __slots__ = ("left", "op", "right", "span")
    _compared = ("op", "left", "right")
    op: Final[str]
    left: Final[Expr]
    right: Final[Expr]
    span: Final[Span]

    def __init__(self, op: str, left: Expr, right: Expr, span: Span = _NOWHERE) -> None:
        self.op = op
        self.left = left
        self.right = right
        self.span = span


class InList(_Node):
    __slots__ = ("negated", "operand", "span", "values")
    _compared = ("operand", "values", "negated")
    operand: Final[Expr]
    values: Final[tuple[Expr, ...]]
    negated: Final[bool]
    span: Final[Span]

    def __init__(
        self,
        operand: Expr,
        values: tuple[Expr, ...],
        negated: bool = False,
        span: Span = _NOWHERE,
    ) -> None:
        self.operand = operand
        self.values = values
        self.negated = negated
        self.span = span


class Like(_Node):
    __slots__ = ("negated", "operand", "pattern", "span")
    _compared = ("operand", "pattern", "negated")
    operand: Final[Expr]
    pattern: Final[String]
    negated: Final[bool]
    span: Final[Span]

    def __init__(
        self,
        operand: Expr,
        pattern: String,
        negated: bool = False,
        span: Span = _NOWHERE,
    ) -> None:
        self.operand = operand
        self.pattern = pattern
        self.negated = negated
        self.span = span


class Not(_Node):
    __slots__ = ("operand", "span")
    _compared = ("operand",)
    operand: Final[Condition]
    span: Final[Span]

    def __init__(self, operand: Condition, span: Span = _NOWHERE) -> None:
        self.operand = operand
        self.span = span


Condition = Compare | InList | Like | Not | BoolOp


# --- actions (DO) ----------------------------------------------------------------------


class Target(_Node):
    """The service an action applies to: `service.name` (the rule's) or a literal name."""

    __slots__ = ("literal", "service_word", "span")
    _compared = ("literal", "service_word")
    literal: Final[str | None]
    service_word: Final[bool]
    span: Final[Span]

    def __init__(
        self,
        literal: str | None,
        service_word: bool = False,
        span: Span = _NOWHERE,
    ) -> None:
        self.literal = literal
        self.service_word = service_word
        self.span = span


class RollbackTo(enum.Enum):
    PREVIOUS_STABLE = "previous_stable"
    PREVIOUS = "previous"
    VERSION = "version"


class Scale(_Node):
    __slots__ = ("span", "target", "to")
    _compared = ("target", "to")
    target: Final[Target]
    to: Final[Expr]
    span: Final[Span]

    def __init__(self, target: Target, to: Expr, span: Span = _NOWHERE) -> None:
        self.target = target
        self.to = to
        self.span = span


class Rollback(_Node):
    __slots__ = ("span", "target", "to", "version")
    _compared = ("target", "to", "version")
    target: Final[Target]
    to: Final[RollbackTo]
    version: Final[String | None]
    span: Final[Span]

    def __init__(
        self,
        target: Target,
        to: RollbackTo,
        version: String | None = None,
        span: Span = _NOWHERE,
    ) -> None:
        self.target = target
        self.to = to
        self.version = version
        self.span = span


class Restart(_Node):
    __slots__ = ("span", "target")
    _compared = ("target",)
    target: Final[Target]
    span: Final[Span]

    def __init__(self, target: Target, span: Span = _NOWHERE) -> None:
        self.target = target
        self.span = span


class Rollout(_Node):
    """ABORT ROLLOUT, PAUSE ROLLOUT or RESUME ROLLOUT."""

    __slots__ = ("span", "target", "verb")
    _compared = ("verb", "target")
    verb: Final[str]
    target: Final[Target]
    span: Final[Span]

    def __init__(self, verb: str, target: Target, span: Span = _NOWHERE) -> None:
        self.verb = verb
        self.target = target
        self.span = span


class Notify(_Node):
    __slots__ = ("message", "span")
    _compared = ("message",)
    message: Final[String]
    span: Final[Span]

    def __init__(self, message: String, span: Span = _NOWHERE) -> None:
        self.message = message
        self.span = span


class Run(_Node):
    __slots__ = ("command", "span")
    _compared = ("command",)
    command: Final[String]
    span: Final[Span]

    def __init__(self, command: String, span: Span = _NOWHERE) -> None:
        self.command = command
        self.span = span


Action = Scale | Rollback | Restart | Rollout | Notify | Run


# --- rules and files -------------------------------------------------------------------


class Rule(_Node):
    """One statement: `[RULE name] ON ... [FOR d] [IF ...] DO ... [LIMIT n] ...;`."""

    __slots__ = (
        "actions",
        "clauses",
        "condition",
        "cooldown",
        "dry_run",
        "for_",
        "limit",
        "name",
        "span",
        "trigger",
    )
    _compared = ("trigger", "actions", "name", "for_", "condition", "limit", "cooldown", "dry_run")
    trigger: Final[Trigger]
    actions: Final[tuple[Action, ...]]
    name: Final[str | None]
    for_: Final[Quantity | None]
    condition: Final[Condition | None]
    limit: Final[Number | None]
    cooldown: Final[Quantity | None]
    dry_run: Final[bool]
    span: Final[Span]
    # Where each clause starts, for error messages and for keeping comments in place:
    # ("rule" | "on" | "if" | "do0", "do1", ... | "limit" | "cooldown" | "dry_run", span).
    clauses: Final[tuple[tuple[str, Span], ...]]

    def __init__(
        self,
        trigger: Trigger,
        actions: tuple[Action, ...],
        name: str | None = None,
        for_: Quantity | None = None,
        condition: Condition | None = None,
        limit: Number | None = None,
        cooldown: Quantity | None = None,
        dry_run: bool = False,
        span: Span = _NOWHERE,
        clauses: tuple[tuple[str, Span], ...] = (),
    ) -> None:
        self.trigger = trigger
        self.actions = actions
        self.name = name
        self.for_ = for_
        self.condition = condition
        self.limit = limit
        self.cooldown = cooldown
        self.dry_run = dry_run
        self.span = span
        self.clauses = clauses

    def clause_span(self, key: str) -> Span:
        for name, span in self.clauses:
            if name == key:
                return span
        return self.span


class RuleFile(_Node):
    """A parsed file: its rules in order, and its comments for the printer."""

    __slots__ = ("comments", "path", "rules")
    _compared = ("path", "rules")
    path: Final[str]
    rules: Final[tuple[Rule, ...]]
    comments: Final[tuple[Comment, ...]]

    def __init__(
        self,
        path: str,
        rules: tuple[Rule, ...],
        comments: tuple[Comment, ...] = (),
    ) -> None:
        self.path = path
        self.rules = rules
        self.comments = comments
