"""burn_rate(W) and error_budget() in the rule language: checked, compiled to their series,
printed back unchanged."""

from __future__ import annotations

import pytest

from sqlifier.cli import scaffold
from sqlifier.engine.replay import compile_rules
from sqlifier.lang import Source, check, parse_source
from sqlifier.lang.printer import format_file


def diagnose(text: str) -> list[str]:
    source = Source(text, "r.sql")
    parsed, diagnostics = parse_source(source)
    found = [*diagnostics, *check([(source, parsed)], None)]
    return [f"{d.line}:{d.col}: {d.message}" for d in found if d.is_error]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            "ON burn_rate('1h') > 1 DO NOTIFY 'x';",
            "1:14: burn_rate() takes a window, a duration like 5m or 1h, not '1h'",
        ),
        (
            "ON burn_rate() > 1 DO NOTIFY 'x';",
            "1:4: burn_rate() needs a window, like burn_rate(1h)",
        ),
        (
            "ON burn_rate(0s) > 1 DO NOTIFY 'x';",
            "1:14: burn_rate() takes a window, a duration like 5m or 1h, not '0s'",
        ),
        (
            "ON burn_rate(1h, objective='speed') > 1 DO NOTIFY 'x';",
            "1:28: 'speed' is not a valid objective for burn_rate(); valid: availability, latency",
        ),
        (
            "ON error_budget() < 10 DO NOTIFY 'x';",
            "1:21: error_budget() is a percentage; compare it with a percentage like 80%, not '10'",
        ),
    ],
)
def test_mistakes_are_errors_at_their_position(rule: str, expected: str) -> None:
    assert diagnose(rule) == [expected]


def test_the_signals_read_their_series() -> None:
    source = Source(
        "ON burn_rate(1h) > 14.4 AND burn_rate(5m, objective='latency') > 14.4 "
        "AND error_budget(objective='availability') < 10% AND error_budget() < 0% "
        "DO NOTIFY 'x';",
        "r.sql",
    )
    parsed, _ = parse_source(source)
    (rule,) = compile_rules([parsed])
    assert [t.key for t in rule.tests] == [
        "burn_rate:3600",
        "burn_rate:300.latency",
        "error_budget.availability",
        "error_budget",
    ]
    assert [t.threshold for t in rule.tests] == [14.4, 14.4, 0.1, 0.0]


def test_the_rules_init_ships_are_clean_and_canonical() -> None:
    text = scaffold.files("shop")["rules/slo.sql"]
    assert diagnose(text) == []
    parsed, _ = parse_source(Source(text, "slo.sql"))
    assert format_file(parsed) == text
