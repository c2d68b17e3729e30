"""The checker: what parses but means nothing, or can never do what it says.

Errors: unknown signals, fields, functions and services; wrong argument types; a SCALE
whose target is not a number of instances; LIMIT without SCALE; durations that are not
positive; duplicate rule names; empty RUN commands; unknown NOTIFY placeholders. Warnings
(exit code unchanged): a threshold a signal can never cross, a condition that can never be
true, an open-ended SCALE without LIMIT.

The parts, each in its own module: `check_signals.py`, `check_conditions.py`,
`check_actions.py`, on `check_base.py`; this module checks a rule's own clauses and the
names of rules across files.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from sqlifier.diagnostics import Diagnostic
from sqlifier.lang import ast
from sqlifier.lang.check_actions import ActionChecks, is_relative
from sqlifier.lang.check_conditions import ConditionChecks
from sqlifier.lang.errors import quote
from sqlifier.lang.parser import parse_trigger
from sqlifier.lang.printer import format_expr
from sqlifier.lang.signals import SIGNALS, SignalKind
from sqlifier.lang.source import Source, Span

__all__ = ["check", "check_trigger", "rule_label", "signal_tests"]


def check_trigger(text: str) -> list[str]:
    """What is wrong with signal tests written on their own (a rollout analysis), as
    messages; empty when they are valid."""
    source = Source(text, "<analysis>")
    trigger, diagnostics = parse_trigger(source)
    if trigger is None:
        return [d.message for d in diagnostics]
    checker = _RuleChecker(source, None)
    for test in signal_tests(trigger):
        checker.signal_test(test)
    return [d.message for d in checker.diagnostics if d.is_error]


def rule_label(rule: ast.Rule, path: str) -> str:
    """How a rule is named: its RULE name, or FILE:LINE."""
    return rule.name if rule.name is not None else f"{path}:{rule.span.line}"


def check(
    files: Sequence[tuple[Source, ast.RuleFile]],
    services: Collection[str] | None = None,
) -> list[Diagnostic]:
    """Check parsed rule files together (rule names are unique across them).

    With `services` (the stack file's service names), every service a rule names must be
    one of them.
    """
    names: dict[str, tuple[str, Span]] = {}
    diagnostics: list[Diagnostic] = []
    for source, file in files:
        checker = _RuleChecker(source, services)
        for rule in file.rules:
            checker.rule(rule)
            if rule.name is not None:
                key = rule.name.lower()
                span = rule.clause_span("rule")
                if key in names:
                    first_path, first = names[key]
                    checker.error(
                        span,
                        f"duplicate rule name {quote(rule.name)} "
                        f"(first defined at {first_path}:{first.line}:{first.col})",
                        "rule names must be unique across the stack's rule files",
                    )
                else:
                    names[key] = (source.path, span)
        diagnostics.extend(sorted(checker.diagnostics, key=lambda d: (d.line, d.col)))
    return diagnostics


class _RuleChecker(ActionChecks, ConditionChecks):
    """Every part of the checker, and the rule's own clauses."""

    # --- the rule -----------------------------------------------------------------------

    def rule(self, rule: ast.Rule) -> None:
        trigger = rule.trigger
        tests = [trigger] if isinstance(trigger, ast.SignalTest) else list(signal_tests(trigger))
        for test in tests:
            self.signal_test(test)
        if rule.for_ is not None:
            self.positive(rule.for_, "FOR")
            if _only_events(tests):
                self.error(
                    rule.for_.span,
                    "FOR has no meaning for schedule(), which is true at single moments",
                    "remove FOR, or combine schedule() with a level signal",
                )
        if rule.cooldown is not None:
            self.positive(rule.cooldown, "COOLDOWN")
        if rule.condition is not None:
            self.condition(rule.condition)
            self.contradictions(rule.condition)
        for action in rule.actions:
            self.action(action)
        self.limit(rule)

    def positive(self, duration: ast.Quantity, keyword: str) -> None:
        if duration.amount <= 0:
            self.error(
                duration.span,
                f"{keyword} needs a duration longer than zero, "
                f"found {quote(format_expr(duration))}",
            )

    def limit(self, rule: ast.Rule) -> None:
        scales = [a for a in rule.actions if isinstance(a, ast.Scale)]
        if rule.limit is None:
            for scale in scales:
                if is_relative(scale.to):
                    self.warning(
                        scale.span,
                        "SCALE without LIMIT: the service can grow until the action budget "
                        "stops it",
                        "add LIMIT n to bound the number of instances",
                    )
            return
        if not scales:
            self.error(
                rule.clause_span("limit"),
                "LIMIT bounds a SCALE action, and this rule has no SCALE",
                "remove LIMIT, or use COOLDOWN to space out repeated actions",
            )
        value = rule.limit.value
        if isinstance(value, float) and not value.is_integer():
            self.error(rule.limit.span, f"LIMIT needs a whole number of instances, found {value}")


# --- helpers ---------------------------------------------------------------------------


def _only_events(tests: list[ast.SignalTest]) -> bool:
    """Are these all event signals (schedule()), and at least one?"""
    for test in tests:
        spec = SIGNALS.get(test.signal)
        if spec is None or spec.kind is not SignalKind.EVENT:
            return False
    return bool(tests)


def signal_tests(node: ast.Trigger) -> Iterable[ast.SignalTest]:
    """The trigger's signal tests, left to right (the order the engine compiles them in)."""
    if isinstance(node, ast.SignalTest):
        yield node
    else:
        for operand in node.operands:
            yield from signal_tests(operand)  # type: ignore[arg-type]
