"""The `slo` key: read into the model, overridden per environment, refused with a position."""

from __future__ import annotations

from pathlib import Path

import pytest

from sqlifier.errors import DiagnosticsError
from sqlifier.stack import load_stack
from sqlifier.stack import model as m

HEAD = '[stack]\nname = "shop"\n\n'


def load(tmp_path: Path, text: str) -> m.Stack:
    path = tmp_path / "sqlifier.toml"
    path.write_text(HEAD + text)
    stack, _ = load_stack(path, "sqlifier.toml")
    return stack


def errors(tmp_path: Path, text: str) -> list[tuple[int, int, str]]:
    path = tmp_path / "sqlifier.toml"
    path.write_text(HEAD + text)
    with pytest.raises(DiagnosticsError) as caught:
        load_stack(path, "sqlifier.toml")
    return [(d.line, d.col, d.message) for d in caught.value.diagnostics if d.is_error]


def test_the_issue_example_reads_into_the_model(tmp_path: Path) -> None:
    stack = load(
        tmp_path,
        '[services.web]\nrun = "x"\nslo = { availability = "99.9%", '
        'latency = { p = "300ms", target = "99%" }, window = "30d" }\n',
    )
    slo = stack.services["web"].slo
    assert slo == m.Slo(
        (m.Objective("availability", 0.999), m.Objective("latency", 0.99, 0.3)), 30 * 86400.0
    )


def test_an_environment_overrides_the_policy_and_keeps_the_objectives(tmp_path: Path) -> None:
    stack = load(
        tmp_path,
        '[environments.production]\nbudget = "freeze"\n\n'
        '[environments.production.services.web]\nslo = { spent = "none" }\n\n'
        '[services.web]\nrun = "x"\nslo = { availability = "99.5%", window = "7d" }\n',
    )
    production = stack.services_for("production")["web"].slo
    assert production == m.Slo(
        (m.Objective("availability", 0.995),), 7 * 86400.0, m.BudgetPolicy.NONE
    )
    assert stack.environment("production").budget is m.BudgetPolicy.FREEZE
    assert stack.services["web"].slo is not None
    assert stack.services["web"].slo.spent is None


def test_a_target_of_100_percent_is_refused_with_why(tmp_path: Path) -> None:
    found = errors(tmp_path, '[services.web]\nrun = "x"\nslo = { availability = "100%" }\n')
    assert found == [
        (
            6,
            24,
            "services.web.slo.availability cannot be 100%: it leaves no error budget, so one "
            "failed request breaks the objective, every burn rate is infinite and no deploy "
            "could ever be judged against it",
        )
    ]


@pytest.mark.parametrize(
    ("slo", "col", "message"),
    [
        (
            '"99.9%"',  # not a table: refused, not carried on as a broken value
            7,
            'services.web.slo must be a table, like { availability = "99.9%", window = "30d" }',
        ),
        (
            '{ availability = "99.9" }',
            24,
            "services.web.slo.availability must be a percentage above 0 and below 100, "
            "like \"99.9%\", found '99.9'",
        ),
        (
            '{ latency = { p = "300ms" } }',
            19,
            "services.web.slo.latency needs target: the share of requests that must be "
            'answered within p, like { p = "300ms", target = "99%" }',
        ),
        (
            '{ availability = "99%", window = "30m" }',
            40,
            'services.web.slo.window must be at least 1h (an objective is judged over days, like "30d" or "28d")',
        ),
        (
            '{ window = "30d" }',
            1,
            'services.web.slo needs an objective: availability = "99.9%" or '
            'latency = { p = "300ms", target = "99%" }',
        ),
        (
            '{ availabilty = "99%" }',
            9,
            "unknown key 'availabilty' in services.web.slo; valid: availability, latency, "
            "window, spent, slow_canary",
        ),
        (
            '{ availability = "99%", slow_canary = 0 }',
            45,
            "services.web.slo.slow_canary must be a number from 1 to 100 (the canary's pauses "
            "are multiplied by it while the budget is spent), found 0",
        ),
    ],
)
def test_mistakes_are_refused_at_their_position(
    tmp_path: Path, slo: str, col: int, message: str
) -> None:
    found = errors(tmp_path, f'[services.web]\nrun = "x"\nslo = {slo}\n')
    assert found == [(6, col, message)]
