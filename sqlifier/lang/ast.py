"""The syntax tree of rule files: frozen values that carry their source positions.

Positions (`span`) do not take part in equality, so two parses of the same rule written
differently (other spacing, case, comments) compare equal. AND/OR chains are flat
(`BoolOp` with several operands): `a OR (b OR c)` and `a OR b OR c` mean, and are, the same.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

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


def _span() -> Span:
    return field(default=_NOWHERE, compare=False, repr=False)


# --- values and arithmetic -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Number:
    value: int | float
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Quantity:
    """A number with a unit as written: `80%`, `3m`, `300ms`, `512MiB`."""

    amount: int | float
    unit: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class String:
    value: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Name:
    """A field or variable: `service.name`, `instances`, `p99` (stored lower case)."""

    parts: tuple[str, ...]
    span: Span = _span()

    @property
    def dotted(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True, slots=True)
class Arg:
    """A call argument: positional (`p99`) or named (`level='critical'`)."""

    name: str | None
    value: Expr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Call:
    """A function (`ceil(x)`) or a signal's current value (`cpu()`) in an expression."""

    name: str
    args: tuple[Arg, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Unary:
    op: str
    operand: Expr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Binary:
    op: str
    left: Expr
    right: Expr
    span: Span = _span()


Expr = Number | Quantity | String | Name | Call | Unary | Binary


# --- the trigger (ON) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Comparison:
    """`> 80%`: an operator and the value it compares against."""

    op: str
    value: Expr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class SignalTest:
    """`high_cpu(>80%)` or `log_error(level='critical') > 10`."""

    signal: str
    args: tuple[Arg, ...]
    inner: Comparison | None = None
    outer: Comparison | None = None
    span: Span = _span()
    name_span: Span = _span()

    @property
    def comparison(self) -> Comparison | None:
        return self.inner or self.outer


@dataclass(frozen=True, slots=True)
class BoolOp:
    """`a AND b AND c` or `a OR b`, in the trigger or in the condition."""

    op: str
    operands: tuple[Trigger, ...] | tuple[Condition, ...]
    span: Span = _span()


Trigger = SignalTest | BoolOp


# --- the condition (IF) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Compare:
    op: str
    left: Expr
    right: Expr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class InList:
    operand: Expr
    values: tuple[Expr, ...]
    negated: bool = False
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Like:
    operand: Expr
    pattern: String
    negated: bool = False
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Not:
    operand: Condition
    span: Span = _span()


Condition = Compare | InList | Like | Not | BoolOp


# --- actions (DO) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """The service an action applies to: `service.name` (the rule's) or a literal name."""

    literal: str | None
    service_word: bool = False
    span: Span = _span()


class RollbackTo(enum.Enum):
    PREVIOUS_STABLE = "previous_stable"
    PREVIOUS = "previous"
    VERSION = "version"


@dataclass(frozen=True, slots=True)
class Scale:
    target: Target
    to: Expr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Rollback:
    target: Target
    to: RollbackTo
    version: String | None = None
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Restart:
    target: Target
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Rollout:
    """ABORT ROLLOUT, PAUSE ROLLOUT or RESUME ROLLOUT."""

    verb: str
    target: Target
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Notify:
    message: String
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Run:
    command: String
    span: Span = _span()


Action = Scale | Rollback | Restart | Rollout | Notify | Run


# --- rules and files -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """One statement: `[RULE name] ON ... [FOR d] [IF ...] DO ... [LIMIT n] ...;`."""

    trigger: Trigger
    actions: tuple[Action, ...]
    name: str | None = None
    for_: Quantity | None = None
    condition: Condition | None = None
    limit: Number | None = None
    cooldown: Quantity | None = None
    dry_run: bool = False
    span: Span = _span()
    # Where each clause starts, for error messages and for keeping comments in place:
    # ("rule" | "on" | "if" | "do0", "do1", ... | "limit" | "cooldown" | "dry_run", span).
    clauses: tuple[tuple[str, Span], ...] = field(default=(), compare=False, repr=False)

    def clause_span(self, key: str) -> Span:
        for name, span in self.clauses:
            if name == key:
                return span
        return self.span


@dataclass(frozen=True, slots=True)
class RuleFile:
    """A parsed file: its rules in order, and its comments for the printer."""

    path: str
    rules: tuple[Rule, ...]
    comments: tuple[Comment, ...] = field(default=(), compare=False, repr=False)
