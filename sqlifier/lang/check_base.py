"""What the parts of the checker share: reporting a diagnostic, knowing the stack's
services, and the type and value of a literal (`80%` is a percentage of 0.8).

The checker is one class made of three parts, each in its own module and each named after
what it checks: `check_signals.py` (a trigger's signal tests and a signal's arguments),
`check_conditions.py` (IF) and `check_actions.py` (DO, with SCALE's arithmetic);
`checker.py` puts them together with the rule's own clauses (FOR, COOLDOWN, LIMIT).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlifier.diagnostics import Diagnostic, Severity
from sqlifier.lang import ast
from sqlifier.lang.errors import did_you_mean, quote
from sqlifier.lang.printer import format_expr
from sqlifier.lang.source import Source, Span

if TYPE_CHECKING:  # cron.py is imported by a rule with a schedule() only
    from sqlifier.lang.cron import CronError
from sqlifier.lang.units import Type, base_value, unit_type

__all__ = ["CheckerBase", "base_of", "literal_type", "shown"]


@dataclass
class CheckerBase:
    """What every part of the checker shares: the file, the services the stack defines, and
    the diagnostics found so far."""

    source: Source
    services: Collection[str] | None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    # The services again, as a set: `services` may be a list, and is asked once per rule.
    known_services: frozenset[str] | None = field(init=False)
    # Schedules repeat across rules ('0 9 * * mon-fri'): each text's verdict, once.
    cron_errors: dict[str, CronError | None] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.known_services = None if self.services is None else frozenset(self.services)

    def error(self, span: Span, message: str, hint: str | None = None) -> None:
        self.diagnostics.append(Diagnostic.at(self.source, span, message, hint=hint))

    def warning(self, span: Span, message: str, hint: str | None = None) -> None:
        self.diagnostics.append(
            Diagnostic.at(self.source, span, message, hint=hint, severity=Severity.WARNING)
        )

    def service(self, name: str, span: Span) -> None:
        if self.known_services is None or name in self.known_services:
            return
        assert self.services is not None
        known = ", ".join(sorted(self.services)) or "none"
        self.error(
            span,
            f"unknown service {quote(name)}; the stack file defines: {known}",
            did_you_mean(name, self.services),
        )


def literal_type(node: ast.Expr) -> Type:
    """The type of a literal; ANY for names and expressions."""
    if isinstance(node, ast.Number):
        return Type.NUMBER
    if isinstance(node, ast.Quantity):
        return unit_type(node.unit) or Type.ANY
    if isinstance(node, ast.String):
        return Type.STRING
    return Type.ANY


def base_of(node: ast.Expr) -> float | None:
    """A number or quantity in base units (80% is 0.8, 2m is 120); None for anything else."""
    if isinstance(node, ast.Number):
        return float(node.value)
    if isinstance(node, ast.Quantity):
        return base_value(node.amount, node.unit)
    return None


def shown(node: ast.Expr) -> str:
    """A value for a message: strings with their own quotes, anything else quoted."""
    text = format_expr(node)
    return text if isinstance(node, ast.String) else quote(text)
