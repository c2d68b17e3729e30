"""Checking signal tests: is the signal known, are its arguments the right kind (a
quantile, a level, a regular expression, a cron schedule, a known service), does it take
its comparison where it should (`high_cpu(>80%)`, `cpu() > 80%`), and can the threshold
ever be crossed (`cpu() > 150%` is a warning). Signals called inside a SCALE expression
are checked here too.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from sqlifier.lang import ast
from sqlifier.lang.check_base import CheckerBase, base_of, literal_type, shown
from sqlifier.lang.errors import did_you_mean, quote
from sqlifier.lang.fields import (
    FUNCTIONS,
)
from sqlifier.lang.printer import format_expr, format_trigger
from sqlifier.lang.signals import LOG_LEVELS, SIGNALS, ArgSpec, SignalKind, SignalSpec
from sqlifier.lang.source import Span
from sqlifier.lang.units import Type, describe

if TYPE_CHECKING:
    from sqlifier.lang.cron import CronError, CronSchedule

__all__ = ["SignalChecks"]


class SignalChecks(CheckerBase):
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
        kind = literal_type(cmp.value)
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
                f"not {shown(cmp.value)}",
                hint,
            )
            return
        value = base_of(cmp.value)
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
        if expected.type is Type.DURATION:
            self.window_argument(spec, value)
            return
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
                f"{_label(spec, name)} takes {describe(expected.type)}, not {shown(value)}",
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
            elif (never := _parse_cron(text).never_fires()) is not None:
                self.warning(
                    value.span,
                    f"the schedule {quote(text)} can never fire: {never}",
                    "a day of month is at most 29 in February and 30 in April, June, "
                    "September and November",
                )
        elif name == "service":
            self.service(text, value.span)
        elif spec.positional is expected and not text.strip():
            self.error(value.span, f"{spec.name}() needs a query, not an empty string")

    def window_argument(self, spec: SignalSpec, value: ast.Expr) -> None:
        """burn_rate(1h): a duration over zero."""
        seconds = base_of(value) if literal_type(value) is Type.DURATION else None
        if seconds is None or seconds <= 0:
            self.error(
                value.span,
                f"{spec.name}() takes a window, a duration like 5m or 1h, not {shown(value)}",
            )

    def cron_error(self, text: str) -> CronError | None:
        """What is wrong with a schedule, or None."""
        from sqlifier.lang.cron import CronError  # noqa: PLC0415 (see _parse_cron)

        if text not in self.cron_errors:
            try:
                _parse_cron(text)
                self.cron_errors[text] = None
            except CronError as exc:
                self.cron_errors[text] = exc
        return self.cron_errors[text]


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
    if spec.name == "burn_rate":
        return "burn_rate() needs a window, like burn_rate(1h)"
    if spec.name == "prometheus":
        return "prometheus() needs a query, like prometheus('sum(rate(http_requests_total[1m]))')"
    return f"{spec.name}() needs a cron expression, like schedule('0 9 * * mon-fri')"


def _parse_cron(text: str) -> CronSchedule:
    """cron.py, imported by the first rule with a schedule(): most rule files have none,
    and every `check` would otherwise load it."""
    from sqlifier.lang.cron import parse_cron  # noqa: PLC0415

    return parse_cron(text)
