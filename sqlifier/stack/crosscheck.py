"""Checks that need the rules and the stack file together: a SCALE that a service's fixed
port cannot hold.

A service with a fixed `port` runs instance N on port + N. A SCALE rule can run as many
instances as its LIMIT allows (or the number it scales to; without either, the most the
agent runs of a service, 1000): the ports from `port` up to that many must be free of
other services' instances, the router and /metrics, and below 65536. Found here as
warnings, positioned at the SCALE action; `sqlifier check` reports them with the rest.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlifier.diagnostics import Diagnostic, Severity
from sqlifier.lang import ast
from sqlifier.lang.fields import pinned_services
from sqlifier.lang.source import Source
from sqlifier.stack.model import Service, Stack

__all__ = ["MAX_INSTANCES", "scale_port_warnings"]

MAX_INSTANCES = 1000  # the most instances the agent runs of one service
_HIGHEST_PORT = 65535


def scale_port_warnings(
    stack: Stack, files: Iterable[tuple[Source, ast.RuleFile]]
) -> list[Diagnostic]:
    """A warning for each SCALE whose ceiling the service's fixed port cannot hold."""
    found: dict[tuple[str, int, int, str], Diagnostic] = {}
    views = [stack.services, *(stack.services_for(env) for env in stack.environments)]
    for source, rules in files:
        for rule in rules.rules:
            ceiling = _ceiling(rule)
            for action in rule.actions:
                if not isinstance(action, ast.Scale):
                    continue
                for services in views:
                    for name in _scaled(rule, action, services):
                        problem = _clash(stack, services, services[name], ceiling)
                        if problem is not None:
                            key = (source.path, action.span.line, action.span.col, problem[0])
                            found.setdefault(
                                key,
                                Diagnostic.at(
                                    source,
                                    action.span,
                                    problem[0],
                                    hint=problem[1],
                                    severity=Severity.WARNING,
                                ),
                            )
    return list(found.values())


def _ceiling(rule: ast.Rule) -> int:
    """The most instances a rule's SCALE can ask for."""
    ceiling = MAX_INSTANCES
    if rule.limit is not None:
        ceiling = min(ceiling, int(rule.limit.value))
    for action in rule.actions:
        if isinstance(action, ast.Scale) and isinstance(action.to, ast.Number):
            ceiling = min(ceiling, int(action.to.value))
    return max(ceiling, 1)


def _scaled(rule: ast.Rule, action: ast.Scale, services: dict[str, Service]) -> list[str]:
    """The services a SCALE can act on that have a fixed port."""
    if action.target.literal is not None:
        names = {action.target.literal}
    else:
        names = _rule_services(rule) or set(services)
    return sorted(n for n in names if n in services and services[n].port is not None)


def _rule_services(rule: ast.Rule) -> set[str] | None:
    """The services a rule applies to when its trigger names them (`service='web'`) or its
    IF pins them (`IF service.name = 'web'`); None when it applies to every service."""
    named = {
        arg.value.value
        for test in _tests(rule.trigger)
        for arg in test.args
        if arg.name == "service" and isinstance(arg.value, ast.String)
    }
    pinned = pinned_services(rule.condition)
    if named and pinned is not None:
        return named & pinned
    return named or pinned


def _tests(trigger: ast.Trigger) -> list[ast.SignalTest]:
    if isinstance(trigger, ast.SignalTest):
        return [trigger]
    return [t for operand in trigger.operands for t in _tests(operand)]  # type: ignore[arg-type]


def _clash(
    stack: Stack, services: dict[str, Service], service: Service, ceiling: int
) -> tuple[str, str] | None:
    """The message and hint when `ceiling` instances of `service` do not fit, or None."""
    assert service.port is not None
    taken = {stack.router.port: "the router"}
    if stack.metrics is not None:
        taken.setdefault(stack.metrics[1], "/metrics")
    for other in services.values():
        if other.port is not None and other.name != service.name:
            for port in range(other.port, other.port + max(other.instances, 1)):
                taken.setdefault(port, f"{other.name}-{port - other.port}")
    last = service.port + ceiling - 1
    first_taken = min((p for p in taken if service.port <= p <= last), default=None)
    if first_taken is None and last <= _HIGHEST_PORT:
        return None
    fit = (first_taken if first_taken is not None else _HIGHEST_PORT + 1) - service.port
    why = (
        f"port {first_taken} is taken by {taken[first_taken]}"
        if first_taken is not None
        else "ports end at 65535"
    )
    message = (
        f"this SCALE can run up to {ceiling} instances of {service.name}, on ports "
        f"{service.port} to {last} from its fixed port, but {why}"
    )
    hint = (
        f"add LIMIT {fit} (the most that fit from port {service.port}), or move a port"
        if fit > 0
        else "move a port"
    )
    return message, hint
