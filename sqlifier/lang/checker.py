"""The checker: what parses but means nothing, or can never do what it says.

Errors: unknown signals, fields, functions and services; wrong argument types; a SCALE
whose target is not a number of instances; LIMIT without SCALE; durations that are not
positive; duplicate rule names; empty RUN commands; unknown NOTIFY placeholders. Warnings
(exit code unchanged): a threshold a signal can never cross, a condition that can never be
true, an open-ended SCALE without LIMIT.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

from sqlifier.diagnostics import Diagnostic, Severity
from sqlifier.lang import ast
from sqlifier.lang.cron import CronError, parse_cron
from sqlifier.lang.errors import did_you_mean, quote
from sqlifier.lang.fields import (
    EXPRESSION_NAMES,
    FIELD_RANGES,
    FIELDS,
    FUNCTIONS,
    PLACEHOLDERS,
    WEEKDAYS,
    field_type,
)
from sqlifier.lang.parser import parse_trigger
from sqlifier.lang.printer import format_expr, format_trigger
from sqlifier.lang.signals import LOG_LEVELS, SIGNALS, ArgSpec, SignalKind, SignalSpec
from sqlifier.lang.source import Source, Span
from sqlifier.lang.units import Type, base_value, describe, unit_type

__all__ = ["check", "check_trigger", "rule_label"]

_ORDERED = (Type.NUMBER, Type.PERCENT, Type.DURATION, Type.BYTES)
_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def check_trigger(text: str) -> list[str]:
    """What is wrong with signal tests written on their own (a rollout analysis), as
    messages; empty when they are valid."""
    source = Source(text, "<analysis>")
    trigger, diagnostics = parse_trigger(source)
    if trigger is None:
        return [d.message for d in diagnostics]
    checker = _RuleChecker(source, None)
    for test in _signal_tests(trigger):
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


@dataclass
class _RuleChecker:
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

    # --- the rule -----------------------------------------------------------------------

    def rule(self, rule: ast.Rule) -> None:
        trigger = rule.trigger
        tests = [trigger] if isinstance(trigger, ast.SignalTest) else list(_signal_tests(trigger))
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
                if _is_relative(scale.to):
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

    # --- signals ------------------------------------------------------------------------

    def signal_test(self, test: ast.SignalTest) -> None:
        spec = self.signal(test.signal, test.args, test.name_span, in_trigger=True)
        if spec is None:
            return
        if test.inner is not None and test.outer is not None:
            self.error(
                test.outer.span,
                f"{test.signal}() has two comparisons, one inside the parentheses and one after",
                "keep one of them",
            )
            return
        comparison = test.comparison
        if spec.kind is SignalKind.EVENT:
            if comparison is not None:
                self.error(comparison.span, f"{test.signal}() is an event and takes no comparison")
            return
        if spec.direction:
            self.direction(test, spec)
        if comparison is None:
            if spec.kind is SignalKind.LEVEL and not spec.direction:
                self.error(
                    test.span,
                    f"{test.signal}() is a level and needs a comparison, "
                    f"like {test.signal}() > {_example(spec)}",
                )
            return
        self.threshold(test, spec, comparison)

    def direction(self, test: ast.SignalTest, spec: SignalSpec) -> None:
        if test.inner is None:
            if any(a.name is None for a in test.args):
                return  # reported with the argument: high_cpu(80%) needs its '>'
            base = test.signal.split("_", 1)[1]
            example = f"{test.signal}({spec.direction[0]}{'80' if base == 'cpu' else '20'}%)"
            self.error(
                test.outer.span if test.outer else test.span,
                f"{test.signal} takes its threshold inside the parentheses, like {example}",
                f"or write {base}() with a comparison after it",
            )
        elif test.inner.op not in spec.direction:
            other = "low_cpu(<20%)" if test.signal == "high_cpu" else "high_cpu(>80%)"
            self.error(
                test.inner.span,
                f"{test.signal} compares with {' or '.join(spec.direction)}, not {test.inner.op}",
                f"for the other direction use {other}",
            )

    def threshold(self, test: ast.SignalTest, spec: SignalSpec, cmp: ast.Comparison) -> None:
        kind = _literal_type(cmp.value)
        if kind not in spec.values:
            what = (
                "a count"
                if spec.kind is SignalKind.COUNT
                else " or ".join(t.value for t in spec.values)
            )
            hint = None
            if spec.values == (Type.PERCENT,) and kind is Type.NUMBER:
                hint = f"write {format_expr(cmp.value)}%"
            self.error(
                cmp.value.span,
                f"{test.signal}() is {what}; compare it with {describe(spec.values[0])}, "
                f"not {_shown(cmp.value)}",
                hint,
            )
            return
        value = _base(cmp.value)
        if value is None:
            return
        never = (
            (cmp.op == ">" and spec.high is not None and value >= spec.high)
            or (cmp.op == ">=" and spec.high is not None and value > spec.high)
            or (cmp.op == "<" and spec.low is not None and value <= spec.low)
            or (cmp.op == "<=" and spec.low is not None and value < spec.low)
            or (cmp.op == "=" and spec.low is not None and value < spec.low)
        )
        if never:
            self.warning(
                cmp.span,
                f"{format_trigger(test)} can never be true, so this rule never fires",
            )

    def signal(
        self, name: str, args: tuple[ast.Arg, ...], span: Span, in_trigger: bool
    ) -> SignalSpec | None:
        spec = SIGNALS.get(name)
        if spec is None:
            choices = list(SIGNALS) if in_trigger else [*SIGNALS, *FUNCTIONS]
            listing = "signals: " + ", ".join(f"{s}()" for s in SIGNALS)
            if not in_trigger:
                listing = "functions: " + ", ".join(FUNCTIONS) + "; " + listing
            hint = did_you_mean(name, choices) or listing
            what = "signal" if in_trigger else "function or signal"
            self.error(span, f"unknown {what} {quote(name)}", hint)
            return None
        if not args:
            if spec.positional is not None:
                self.error(span, _positional_missing(spec))
            return spec
        positional = [a for a in args if a.name is None]
        if spec.positional is not None:
            if not positional:
                self.error(span, _positional_missing(spec))
            else:
                self.argument(spec, None, spec.positional, positional[0])
            positional = positional[1:]
        for extra in positional:
            if spec.direction and isinstance(extra.value, (ast.Number, ast.Quantity)):
                self.error(
                    extra.span,
                    f"{name} needs a comparison before its threshold, "
                    f"like {name}({spec.direction[0]}{format_expr(extra.value)})",
                )
                continue
            self.error(
                extra.span,
                f"{name}() takes no further positional argument; name it, like service='x'",
            )
        seen: set[str] = set()
        for arg in args:
            if arg.name is None:
                continue
            if arg.name in seen:
                self.error(arg.span, f"{arg.name}= is given twice in {name}()")
                continue
            seen.add(arg.name)
            arg_spec = spec.named.get(arg.name)
            if arg_spec is None:
                valid = ", ".join(spec.named) or "none"
                self.error(
                    arg.span,
                    f"unknown argument {quote(arg.name)} for {name}(); valid: {valid}",
                    did_you_mean(arg.name, spec.named),
                )
                continue
            self.argument(spec, arg.name, arg_spec, arg)
        return spec

    def argument(self, spec: SignalSpec, name: str | None, expected: ArgSpec, arg: ast.Arg) -> None:
        value = arg.value
        if isinstance(value, ast.String):
            text = value.value
        elif isinstance(value, ast.Name):
            if not expected.word:
                self.error(
                    value.span,
                    f"{_label(spec, name)} takes text in quotes",
                    f"write {name + '=' if name else ''}'{value.dotted}'",
                )
                return
            text = value.dotted
        else:
            self.error(
                value.span,
                f"{_label(spec, name)} takes {describe(expected.type)}, not {_shown(value)}",
            )
            return
        if expected.choices and text.lower() not in expected.choices:
            hint = did_you_mean(text, expected.choices)
            if spec.name == "log_error" and text.lower() in LOG_LEVELS:
                hint = f"log_error() counts errors and worse; use log(level='{text}') for others"
            self.error(
                value.span,
                f"{quote(text)} is not a valid {name or 'argument'} for {spec.name}(); "
                f"valid: {', '.join(expected.choices)}",
                hint,
            )
        elif expected.check == "regex":
            try:
                re.compile(text)
            except re.error as exc:
                self.error(value.span, f"invalid regular expression in {_label(spec, name)}: {exc}")
            except (OverflowError, RecursionError, ValueError):
                self.error(
                    value.span, f"the regular expression in {_label(spec, name)} is too large"
                )
        elif expected.check == "cron":
            error = self.cron_error(text)
            if error is not None:
                self.error(value.span, f"invalid schedule: {error}", "like '0 9 * * mon-fri'")
        elif name == "service":
            self.service(text, value.span)
        elif spec.positional is expected and not text.strip():
            self.error(value.span, f"{spec.name}() needs a query, not an empty string")

    def cron_error(self, text: str) -> CronError | None:
        """What is wrong with a schedule, or None."""
        if text not in self.cron_errors:
            try:
                parse_cron(text)
                self.cron_errors[text] = None
            except CronError as exc:
                self.cron_errors[text] = exc
        return self.cron_errors[text]

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

    # --- condition ----------------------------------------------------------------------

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
            self.field_range(node.span, field_node.dotted, op, _base(value))

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
        return _literal_type(node)

    def same_type(self, field_node: ast.Expr, kind: Type, value: ast.Expr) -> None:
        value_kind = _literal_type(value) if not isinstance(value, ast.Name) else Type.ANY
        if Type.ANY in (kind, value_kind):
            return
        if value_kind is not kind:
            self.error(
                value.span,
                f"{format_expr(field_node)} is {kind.value}; compare it with {describe(kind)}, "
                f"not {_shown(value)}",
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

    # --- actions ------------------------------------------------------------------------

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
            constant = _constant(action.to)
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
            return _literal_type(node)
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
        if node.op == "/" and _constant(node.right) == 0:
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


# --- helpers ---------------------------------------------------------------------------


def _only_events(tests: list[ast.SignalTest]) -> bool:
    """Are these all event signals (schedule()), and at least one?"""
    for test in tests:
        spec = SIGNALS.get(test.signal)
        if spec is None or spec.kind is not SignalKind.EVENT:
            return False
    return bool(tests)


def _signal_tests(node: ast.Trigger) -> Iterable[ast.SignalTest]:
    if isinstance(node, ast.SignalTest):
        yield node
    else:
        for operand in node.operands:
            yield from _signal_tests(operand)  # type: ignore[arg-type]


def _literal_type(node: ast.Expr) -> Type:
    if isinstance(node, ast.Number):
        return Type.NUMBER
    if isinstance(node, ast.Quantity):
        return unit_type(node.unit) or Type.ANY
    if isinstance(node, ast.String):
        return Type.STRING
    return Type.ANY


def _base(node: ast.Expr) -> float | None:
    if isinstance(node, ast.Number):
        return float(node.value)
    if isinstance(node, ast.Quantity):
        return base_value(node.amount, node.unit)
    return None


def _constant(node: ast.Expr) -> float | None:
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


def _is_relative(node: ast.Expr) -> bool:
    """Can the expression grow with the current state (instances, a signal)?

    min(...) with a constant argument is bounded by it, so it is not open-ended.
    """
    if _constant(node) is not None:
        return False
    if isinstance(node, ast.Call) and node.name == "min":
        return all(_is_relative(arg.value) for arg in node.args)
    if isinstance(node, (ast.Name, ast.Call)):
        return True
    if isinstance(node, ast.Unary):
        return _is_relative(node.operand)
    if isinstance(node, ast.Binary):
        return _is_relative(node.left) or _is_relative(node.right)
    return False


def _label(spec: SignalSpec, name: str | None) -> str:
    """How a message names an argument: `service=`, or `the argument of latency()`."""
    return f"{name}=" if name else f"the argument of {spec.name}()"


def _example(spec: SignalSpec) -> str:
    return {
        Type.PERCENT: "80%",
        Type.DURATION: "300ms",
        Type.BYTES: "512MiB",
    }.get(spec.values[0] if spec.values else Type.NUMBER, "10")


def _positional_missing(spec: SignalSpec) -> str:
    if spec.name == "latency":
        return "latency() needs a quantile, like latency(p99); one of p50, p90, p95, p99"
    if spec.name == "prometheus":
        return "prometheus() needs a query, like prometheus('sum(rate(http_requests_total[1m]))')"
    return f"{spec.name}() needs a cron expression, like schedule('0 9 * * mon-fri')"


def _shown(node: ast.Expr) -> str:
    """A value for a message: strings with their own quotes, anything else quoted."""
    text = format_expr(node)
    return text if isinstance(node, ast.String) else quote(text)


def _field_hint(dotted: str) -> str:
    suffix = [f for f in FIELDS if f.endswith("." + dotted)]
    if suffix:
        return f"did you mean {quote(suffix[0])}?"
    return did_you_mean(dotted, FIELDS) or "fields: " + ", ".join([*FIELDS, "service.labels.<key>"])


def _inner_span(string: ast.String, start: int, end: int) -> Span:
    """The span of value[start:end] inside a string literal written on one line."""
    value = string.value
    col = string.span.col + 1 + start + value.count("'", 0, start)
    width = (end - start) + value.count("'", start, end)
    return Span(string.span.line, col, string.span.line, col + width)
