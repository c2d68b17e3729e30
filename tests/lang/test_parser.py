"""The parser: what each construct becomes, with positions on tokens and nodes."""

from __future__ import annotations

import pytest

from sqlifier.lang import Source, parse_source
from sqlifier.lang import ast as a
from sqlifier.lang.tokens import Kind, tokenize

SEED_SCALE = """\
ON high_cpu(>80%) FOR 3m
IF service.name = 'image-processor-svc'
DO SCALE service.name TO instances + 2
LIMIT 20;"""

SEED_ROLLBACK = """\
ON log_error(level='critical', service='payment-gateway') > 10 FOR 1m
DO ROLLBACK service 'payment-gateway' TO previous_stable;"""


def rule(text: str) -> a.Rule:
    rules, diagnostics = parse_source(Source(text, "t.sql"))
    assert diagnostics == []
    assert len(rules.rules) == 1
    return rules.rules[0]


def test_first_seed_rule_parses_verbatim() -> None:
    assert rule(SEED_SCALE) == a.Rule(
        trigger=a.SignalTest("high_cpu", (), inner=a.Comparison(">", a.Quantity(80, "%"))),
        for_=a.Quantity(3, "m"),
        condition=a.Compare("=", a.Name(("service", "name")), a.String("image-processor-svc")),
        actions=(a.Scale(a.Target(None), a.Binary("+", a.Name(("instances",)), a.Number(2))),),
        limit=a.Number(20),
    )


def test_second_seed_rule_parses_verbatim() -> None:
    assert rule(SEED_ROLLBACK) == a.Rule(
        trigger=a.SignalTest(
            "log_error",
            (
                a.Arg("level", a.String("critical")),
                a.Arg("service", a.String("payment-gateway")),
            ),
            outer=a.Comparison(">", a.Number(10)),
        ),
        for_=a.Quantity(1, "m"),
        actions=(
            a.Rollback(
                a.Target("payment-gateway", service_word=True), a.RollbackTo.PREVIOUS_STABLE
            ),
        ),
    )


def test_nodes_carry_their_source_positions() -> None:
    parsed = rule(SEED_SCALE)
    assert parsed.span.start == (1, 1)
    assert parsed.span.end == (4, 10)
    assert parsed.for_ is not None and parsed.for_.span.start == (1, 23)
    assert parsed.condition is not None and parsed.condition.span.start == (2, 4)
    assert parsed.clause_span("limit").start == (4, 1)


def test_tokens_carry_line_and_column_from_one() -> None:
    tokens, comments = tokenize("-- c\nON  cpu() > 80%\n")
    assert [(t.kind, t.text, t.line, t.col) for t in tokens[:3]] == [
        (Kind.IDENT, "ON", 2, 1),
        (Kind.IDENT, "cpu", 2, 5),
        (Kind.OP, "(", 2, 8),
    ]
    assert (tokens[-1].kind, tokens[-1].line) == (Kind.EOF, 3)
    assert comments[0].text == "-- c" and comments[0].own_line


def test_keywords_are_case_insensitive() -> None:
    assert rule(
        SEED_SCALE.lower().replace("'image-processor-svc'", "'image-processor-svc'")
    ) == rule(SEED_SCALE)


def test_and_binds_tighter_than_or() -> None:
    trigger = rule("ON a() > 1 OR b() > 2 AND c() > 3 DO RESTART 'x'").trigger
    assert isinstance(trigger, a.BoolOp) and trigger.op == "OR"
    assert isinstance(trigger.operands[1], a.BoolOp) and trigger.operands[1].op == "AND"


def test_parentheses_group_a_trigger() -> None:
    trigger = rule("ON (a() > 1 OR b() > 2) AND c() > 3 DO RESTART 'x'").trigger
    assert isinstance(trigger, a.BoolOp) and trigger.op == "AND"
    assert isinstance(trigger.operands[0], a.BoolOp) and trigger.operands[0].op == "OR"


def test_arithmetic_has_the_usual_precedence() -> None:
    action = rule("ON a() > 1 DO SCALE 'x' TO 1 + 2 * instances - 3").actions[0]
    assert isinstance(action, a.Scale)
    assert action.to == a.Binary(
        "-",
        a.Binary("+", a.Number(1), a.Binary("*", a.Number(2), a.Name(("instances",)))),
        a.Number(3),
    )


def test_functions_and_signal_values_in_scale_expressions() -> None:
    action = rule("ON a() > 1 DO SCALE 'x' TO max(ceil(instances * cpu() / 60%), 2)").actions[0]
    assert isinstance(action, a.Scale)
    assert action.to == a.Call(
        "max",
        (
            a.Arg(
                None,
                a.Call(
                    "ceil",
                    (
                        a.Arg(
                            None,
                            a.Binary(
                                "/",
                                a.Binary("*", a.Name(("instances",)), a.Call("cpu", ())),
                                a.Quantity(60, "%"),
                            ),
                        ),
                    ),
                ),
            ),
            a.Arg(None, a.Number(2)),
        ),
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("RESTART 'web'", a.Restart(a.Target("web"))),
        ("RESTART service.name", a.Restart(a.Target(None))),
        ("RESTART service 'web'", a.Restart(a.Target("web", service_word=True))),
        ("ABORT ROLLOUT service.name", a.Rollout("ABORT", a.Target(None))),
        ("pause rollout 'web'", a.Rollout("PAUSE", a.Target("web"))),
        ("Resume Rollout 'web'", a.Rollout("RESUME", a.Target("web"))),
        ("NOTIFY 'hi {value}'", a.Notify(a.String("hi {value}"))),
        ("RUN 'echo ''hi'''", a.Run(a.String("echo 'hi'"))),
        ("ROLLBACK 'web' TO previous", a.Rollback(a.Target("web"), a.RollbackTo.PREVIOUS)),
        (
            "ROLLBACK service.name TO 'v1.2'",
            a.Rollback(a.Target(None), a.RollbackTo.VERSION, a.String("v1.2")),
        ),
        ("SCALE 'web' TO 3", a.Scale(a.Target("web"), a.Number(3))),
    ],
)
def test_actions(text: str, expected: a.Action) -> None:
    assert rule(f"ON a() > 1 DO {text};").actions == (expected,)


def test_several_actions_and_every_tail_clause() -> None:
    parsed = rule(
        "RULE scale-up-2 ON a() > 1 DO SCALE 'x' TO 2, NOTIFY 'n', RUN 'r' "
        "LIMIT 5 COOLDOWN 10m DRY RUN"
    )
    assert parsed.name == "scale-up-2"
    assert [type(x).__name__ for x in parsed.actions] == ["Scale", "Notify", "Run"]
    assert parsed.limit == a.Number(5)
    assert parsed.cooldown == a.Quantity(10, "m")
    assert parsed.dry_run


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "service.name IN ('a', 'b')",
            a.InList(a.Name(("service", "name")), (a.String("a"), a.String("b"))),
        ),
        (
            "service.name NOT IN ('a')",
            a.InList(a.Name(("service", "name")), (a.String("a"),), negated=True),
        ),
        ("service.name LIKE 'img-%'", a.Like(a.Name(("service", "name")), a.String("img-%"))),
        (
            "NOT time.hour < 9",
            a.Not(a.Compare("<", a.Name(("time", "hour")), a.Number(9))),
        ),
        (
            "service.labels.Tier = 'web'",
            a.Compare("=", a.Name(("service", "labels", "Tier")), a.String("web")),
        ),
    ],
)
def test_conditions(text: str, expected: a.Condition) -> None:
    assert rule(f"ON a() > 1 IF {text} DO RESTART 'x'").condition == expected


@pytest.mark.parametrize(
    ("text", "amount", "unit"),
    [
        ("300ms", 300, "ms"),
        ("1.5h", 1.5, "h"),
        ("512MiB", 512, "MiB"),
        ("2GB", 2, "GB"),
        ("80%", 80, "%"),
    ],
)
def test_quantities_keep_their_unit(text: str, amount: float, unit: str) -> None:
    trigger = rule(f"ON a() > {text} DO RESTART 'x'").trigger
    assert isinstance(trigger, a.SignalTest) and trigger.outer is not None
    assert trigger.outer.value == a.Quantity(amount, unit)


def test_last_rule_may_omit_its_semicolon() -> None:
    rules, diagnostics = parse_source(
        Source("ON a() > 1 DO RESTART 'x'; ON b() > 1 DO RESTART 'y'", "t")
    )
    assert diagnostics == [] and len(rules.rules) == 2


def test_a_bad_rule_does_not_hide_the_good_ones_around_it() -> None:
    text = "ON a() > 1 DO RESTART 'x';\nON b( DO;\nON c() > 1 DO RESTART 'z';"
    rules, diagnostics = parse_source(Source(text, "t"))
    assert [r.span.line for r in rules.rules] == [1, 3]
    assert [d.line for d in diagnostics] == [2]


def test_recovery_resumes_at_a_line_starting_with_on() -> None:
    text = "ON a() > 1 DO RESTART\nON c() > 1 DO RESTART 'z';"
    rules, diagnostics = parse_source(Source(text, "t"))
    assert len(rules.rules) == 1 and rules.rules[0].span.line == 2
    assert len(diagnostics) == 1


def test_trailing_blanks_at_the_end_of_the_file_are_not_tokens() -> None:
    tokens, _ = tokenize("ON a() > 1 DO RESTART 'x'; /* c */   ")
    assert [t.kind for t in tokens][-2:] == [Kind.OP, Kind.EOF]
    rules, diagnostics = parse_source(Source("ON a() > 1 DO RESTART 'x';  \t", "t"))
    assert diagnostics == [] and len(rules.rules) == 1
