"""Checks that need the rules and the stack file together: a share of a limit that no
service declares.

`memory() > 90%` reads memory as a share of `resources.memory`, and `cpu(of = 'limit')` CPU
as a share of `resources.cpu`; a service without that limit has no data for them, and a
rule waiting on them never fires. When none of the services a rule applies to (those its
IF pins, or else every service, in any environment) declares the limit, `sqlifier check`
says so at the signal, as a warning.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sqlifier.diagnostics import Diagnostic, Severity
from sqlifier.lang import ast
from sqlifier.lang.fields import pinned_services
from sqlifier.lang.source import Source
from sqlifier.lang.units import UNITS, Type
from sqlifier.stack.model import Stack

__all__ = ["limit_share_warnings"]


def limit_share_warnings(
    stack: Stack, files: Iterable[tuple[Source, ast.RuleFile]]
) -> list[Diagnostic]:
    """A warning for each share of a limit that no service the rule applies to declares."""
    views = [stack.services, *(stack.services_for(env) for env in stack.environments)]
    found = []
    for source, rules in files:
        for rule in rules.rules:
            pinned = pinned_services(rule.condition)
            for test, limit in _shares(rule.trigger):
                named = next((a.value for a in test.args if a.name == "service"), None)
                names = {named.value} if isinstance(named, ast.String) else pinned
                declared = any(
                    getattr(service.resources, limit, None) is not None
                    for services in views
                    for name, service in services.items()
                    if names is None or name in names
                )
                if not declared:
                    found.append(
                        Diagnostic.at(
                            source,
                            test.span,
                            f"{test.signal}() reads a share of resources.{limit}, which no "
                            "service this rule applies to declares: it has no data",
                            hint=f"set resources = {{ {limit} = ... }} on the service"
                            + (", or compare with a size like 512MiB" if limit == "memory" else ""),
                            severity=Severity.WARNING,
                        )
                    )
    return found


def _shares(trigger: ast.Trigger) -> Iterator[tuple[ast.SignalTest, str]]:
    """The tests of a trigger that read a share of a limit, with the limit's name."""
    if isinstance(trigger, ast.BoolOp):
        for operand in trigger.operands:
            yield from _shares(operand)  # type: ignore[arg-type]
        return
    comparison = trigger.comparison
    value = comparison.value if comparison is not None else None
    percent = isinstance(value, ast.Quantity) and UNITS[value.unit][0] is Type.PERCENT
    if trigger.signal == "memory" and percent:
        yield trigger, "memory"
    of = next((a.value for a in trigger.args if a.name == "of"), None)
    if isinstance(of, ast.String) and of.value == "limit":
        yield trigger, "cpu"
