"""Analysis expressions: the signal tests a rollout may be judged by, as the language sees them."""

from __future__ import annotations

import pytest

from sqlifier.errors import UserError
from sqlifier.lang import ast
from sqlifier.lang.analysis import AnalysisError, analysis_problems, parse_analysis


def test_an_expression_parses_to_its_trigger() -> None:
    trigger = parse_analysis("error_rate() < 1% OR latency(p95, track='stable') <= 300ms")
    assert isinstance(trigger, ast.BoolOp)
    assert trigger.op == "OR"
    assert [t.signal for t in trigger.operands if isinstance(t, ast.SignalTest)] == [
        "error_rate",
        "latency",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "rps() > 1 AND cpu() < 80%",
            "invalid analysis 'rps() > 1 AND cpu() < 80%': cpu() is not measured on a canary; "
            "analysis can use error_rate(), latency(p50|p90|p95|p99) and rps()",
        ),
        (
            "latency(p99, service='api') < 1s",
            "invalid analysis 'latency(p99, service='api') < 1s': analysis reads the service "
            "being deployed; remove service=",
        ),
    ],
    ids=["a signal no canary has, after one it has", "another service"],
)
def test_what_a_canary_cannot_measure_is_refused(text: str, message: str) -> None:
    with pytest.raises(AnalysisError) as caught:
        parse_analysis(text)
    assert str(caught.value) == message
    assert isinstance(caught.value, UserError)
    assert isinstance(caught.value, ValueError)


def test_the_first_test_past_a_limit_is_the_one_named() -> None:
    with pytest.raises(AnalysisError, match=r"log\(\) is not measured"):
        parse_analysis("log() > 1 OR cpu() > 10%")


def test_problems_are_one_message_per_checker_error() -> None:
    assert analysis_problems("error_rate() < 1 AND latency(p42) < 1s") == [
        "invalid analysis 'error_rate() < 1 AND latency(p42) < 1s': error_rate() is a "
        "percentage; compare it with a percentage like 80%, not '1'",
        "invalid analysis 'error_rate() < 1 AND latency(p42) < 1s': 'p42' is not a valid "
        "argument for latency(); valid: p50, p90, p95, p99",
    ]


def test_a_valid_expression_has_no_problems() -> None:
    assert analysis_problems("error_rate() < 1% AND rps() > 2") == []


def test_checker_errors_come_joined_when_parsed() -> None:
    with pytest.raises(AnalysisError) as caught:
        parse_analysis("error_rate() < 1 AND latency(p42) < 1s")
    assert str(caught.value) == (
        "invalid analysis 'error_rate() < 1 AND latency(p42) < 1s': error_rate() is a "
        "percentage; compare it with a percentage like 80%, not '1'; 'p42' is not a valid "
        "argument for latency(); valid: p50, p90, p95, p99"
    )
