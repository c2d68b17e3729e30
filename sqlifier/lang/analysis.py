"""Analysis expressions: the signal tests a rollout judges each step by.

A canary's `analysis` in the stack file (`error_rate() < 1% AND latency(p95) <= 300ms`) is
written like a rule's trigger and checked like one, then limited to what the router
measures on one track of the service being deployed: `error_rate()`, `latency(pNN)` and
`rps()`, without `service=`. The stack file reader refuses any other expression where it is
written; `sqlifier.delivery.analysis` judges the expressions against the tracks' counters.

This is the language's side only: what an expression may say. It reads no counters and
knows nothing of deploys, so the stack file builds on it without reaching into delivery.
"""

from __future__ import annotations

from sqlifier.errors import UserError
from sqlifier.lang import ast
from sqlifier.lang.checker import check_trigger, signal_tests
from sqlifier.lang.errors import quote
from sqlifier.lang.parser import parse_trigger
from sqlifier.lang.source import Source

__all__ = ["SUPPORTED_SIGNALS", "AnalysisError", "analysis_problems", "parse_analysis"]

SUPPORTED_SIGNALS = ("error_rate", "latency", "rps")


class AnalysisError(UserError, ValueError):
    """An analysis expression that cannot be judged on a canary; the message names it."""


def parse_analysis(text: str) -> ast.Trigger:
    """An analysis expression's syntax tree, checked like a rule's trigger and limited to
    the signals a canary track has; AnalysisError says what is wrong."""
    problems = check_trigger(text)
    if problems:
        raise AnalysisError(f"invalid analysis {quote(text)}: {'; '.join(problems)}")
    trigger, _ = parse_trigger(Source(text, "<analysis>"))
    assert trigger is not None  # check_trigger parsed the same text
    for test in signal_tests(trigger):
        if test.signal not in SUPPORTED_SIGNALS:
            raise AnalysisError(
                f"invalid analysis {quote(text)}: {test.signal}() is not measured on a canary; "
                "analysis can use error_rate(), latency(p50|p90|p95|p99) and rps()"
            )
        if _names_a_service(test):
            raise AnalysisError(
                f"invalid analysis {quote(text)}: analysis reads the service being deployed; "
                "remove service="
            )
    return trigger


def analysis_problems(text: str) -> list[str]:
    """Every message about an analysis expression, one per problem found (empty when it
    can be judged): each of the checker's errors, or the one limit it goes past."""
    problems = check_trigger(text)
    if problems:
        return [f"invalid analysis {quote(text)}: {message}" for message in problems]
    try:
        parse_analysis(text)
    except AnalysisError as exc:
        return [str(exc)]
    return []


def _names_a_service(test: ast.SignalTest) -> bool:
    """Does the test read another service (`service='api'` or `service=api`)?"""
    return any(
        arg.name == "service" and isinstance(arg.value, ast.String | ast.Name) for arg in test.args
    )
