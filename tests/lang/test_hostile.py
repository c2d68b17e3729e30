"""Inputs found by review and fuzzing that once crashed, hung, or let fmt change meaning."""

from __future__ import annotations

import pytest

from sqlifier.lang import Source, check, format_file, parse_source
from sqlifier.lang.tokens import tokenize


def diagnose(text: str) -> list[str]:
    source = Source(text, "t.sql")
    rules, diagnostics = parse_source(source)
    return [d.message for d in [*diagnostics, *check([(source, rules)])]]


def test_fmt_never_turns_a_commented_out_rule_into_code() -> None:
    text = "ON cpu() > 1% DO RESTART 'x' /* a */ -- b\n; /*\nON cpu() > 1% DO RESTART 'y'; --*/\n"
    rules, _ = parse_source(Source(text, "t.sql"))
    once = format_file(rules)
    again, diagnostics = parse_source(Source(once, "t.sql"))
    assert diagnostics == [] and again == rules and len(again.rules) == 1
    assert format_file(again) == once


def test_a_multi_line_block_comment_never_follows_a_line_comment() -> None:
    text = "ON cpu() > 1% /* a */ -- b\nAND rps() > 1 /* c\nd */\nDO RESTART 'x';"
    rules, _ = parse_source(Source(text, "t.sql"))
    once = format_file(rules)
    again, diagnostics = parse_source(Source(once, "t.sql"))
    assert diagnostics == [] and again == rules


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ON cpu() > 80% DO SCALE 'x' TO " + "1" * 5000 + ";", "is too large"),
        ("ON schedule('² * * * *') DO RESTART 'x';", "is not a valid minute"),
        (
            "ON schedule('*/" + "9" * 5000 + " * * * *') DO RESTART 'x';",
            "must be a positive number",
        ),
        ("ON log(match='a{4294967296}') > 1 DO RESTART 'x';", "too large"),
        ("ON log(match='" + "(" * 3000 + "') > 1 DO RESTART 'x';", "too large"),
        (
            "ON cpu() > 80% DO SCALE 'x' TO " + "+".join(["instances"] * 900) + ";",
            "nest too deeply",
        ),
        (
            "ON cpu() > 80% DO SCALE 'x' TO " + "*".join(["2"] * 3000) + " LIMIT 3;",
            "nest too deeply",
        ),
    ],
)
def test_extreme_values_are_errors_not_crashes(text: str, message: str) -> None:
    assert any(message in found for found in diagnose(text))


def test_constant_arithmetic_that_overflows_is_not_a_crash() -> None:
    big = "*".join(["1000000000000000"] * 21)
    diagnose(f"ON cpu() > 1% DO SCALE 'x' TO ceil({big}) LIMIT 3;")
    diagnose(f"ON cpu() > 1% DO SCALE 'x' TO floor(({big}) - ({big})) LIMIT 3;")


def test_an_unterminated_block_comment_ends_tokenizing_at_once() -> None:
    # Each later '/*' used to rescan the rest of the file: quadratic, a minute for 120 KB.
    tokens, _ = tokenize("/* " * 40_000)
    assert [t.kind.name for t in tokens] == ["ERROR", "EOF"]
    assert tokens[0].value[0] == "unterminated comment: '/*' is never closed by '*/'"


def test_many_comments_on_one_line_are_one_comment() -> None:
    _, comments = tokenize("/**/" * 200_000)
    assert len(comments) == 1 and comments[0].text.count("/**/") == 200_000


def test_end_of_file_errors_point_after_the_last_token() -> None:
    source = Source("ON cpu() > 1% DO\n", "t.sql")
    _, diagnostics = parse_source(source)
    assert (diagnostics[0].line, diagnostics[0].col) == (1, 17)
    assert diagnostics[0].render().splitlines()[1:] == ["  ON cpu() > 1% DO", "                  ^"]


def test_a_negative_looking_but_positive_expression_is_accepted() -> None:
    assert diagnose("ON cpu() > 1% DO SCALE 'x' TO -(instances - 10) LIMIT 3;") == []
