"""The printer: canonical text, comments kept in place, idempotent, meaning preserved."""

from __future__ import annotations

from pathlib import Path

import pytest

from sqlifier.lang import Source, check, format_file, format_rule, parse_source
from sqlifier.lang.ast import RuleFile

IDENTITY = Path(__file__).parent / "fixtures" / "identity.sql"
SERVICES = ("web", "api", "payment-gateway", "image-processor-svc")


def parsed(text: str) -> RuleFile:
    rules, diagnostics = parse_source(Source(text, "t.sql"))
    assert diagnostics == []
    return rules


def fmt(text: str) -> str:
    return format_file(parsed(text))


def test_identity_fixture_prints_back_unchanged() -> None:
    text = IDENTITY.read_text()
    assert fmt(text) == text


def test_identity_fixture_is_clean_for_the_checker() -> None:
    source = Source(IDENTITY.read_text(), "identity.sql")
    rules, _ = parse_source(source)
    assert len(rules.rules) >= 20
    assert check([(source, rules)], SERVICES) == []


def test_each_identity_rule_prints_back_alone() -> None:
    for rule in parsed(IDENTITY.read_text()).rules:
        text = format_rule(rule)
        assert format_rule(parsed(text).rules[0]) == text


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        (
            "on high_cpu( > 80% ) for 3m if service.name='x' do scale service.name to instances+2 limit 20",
            "ON high_cpu(>80%) FOR 3m\nIF service.name = 'x'\nDO SCALE service.name TO instances + 2\n"
            "LIMIT 20;\n",
        ),
        ("ON CPU() > 80.0% DO RESTART 'x';", "ON cpu() > 80%\nDO RESTART 'x';\n"),
        ("ON rps() <> 3 DO RESTART 'x';", "ON rps() != 3\nDO RESTART 'x';\n"),
        ("ON rps() > 0.50 DO RESTART 'x';", "ON rps() > 0.5\nDO RESTART 'x';\n"),
        ("ON rps() > 0.0000001 DO RESTART 'x';", "ON rps() > 0.0000001\nDO RESTART 'x';\n"),
        (
            "ON a() > 1 OR (b() > 2 OR c() > 3) DO RESTART 'x';",
            "ON a() > 1 OR b() > 2 OR c() > 3\nDO RESTART 'x';\n",
        ),
        (
            "ON (a() > 1 AND b() > 2) OR c() > 3 DO RESTART 'x';",
            "ON a() > 1 AND b() > 2 OR c() > 3\nDO RESTART 'x';\n",
        ),
        (
            "ON a() > 1 DO SCALE 'x' TO ((instances + 1)) * 2;",
            "ON a() > 1\nDO SCALE 'x' TO (instances + 1) * 2;\n",
        ),
        (
            "ON a() > 1 DO SCALE 'x' TO instances - (1 + 2);",
            "ON a() > 1\nDO SCALE 'x' TO instances - (1 + 2);\n",
        ),
        (
            "ON a() > 1 DO SCALE 'x' TO 2 DRY RUN COOLDOWN 5m LIMIT 3;",
            "ON a() > 1\nDO SCALE 'x' TO 2\nLIMIT 3\nCOOLDOWN 5m\nDRY RUN;\n",
        ),
        (
            "rule Scale_Up on a() > 1 do restart 'x';;;",
            "RULE Scale_Up\nON a() > 1\nDO RESTART 'x';\n",
        ),
        ("ON a() > 1 DO RESTART 'x'", "ON a() > 1\nDO RESTART 'x';\n"),
        (
            "ON a() > 1 DO NOTIFY 'it''s {value}', RUN 'true'",
            "ON a() > 1\nDO NOTIFY 'it''s {value}',\n   RUN 'true';\n",
        ),
        ("", ""),
        ("\n\n  \n", ""),
    ],
)
def test_formats_to_canonical_form(written: str, canonical: str) -> None:
    assert fmt(written) == canonical
    assert fmt(canonical) == canonical
    assert parsed(canonical) == parsed(written)


def test_rules_are_separated_by_one_blank_line() -> None:
    text = "ON a() > 1 DO RESTART 'x';\n\n\n\nON b() > 1 DO RESTART 'y'; ON c() > 1 DO RESTART 'z';"
    assert fmt(text) == (
        "ON a() > 1\nDO RESTART 'x';\n\nON b() > 1\nDO RESTART 'y';\n\nON c() > 1\nDO RESTART 'z';\n"
    )


def test_comment_on_its_own_line_stays_above_its_clause() -> None:
    text = "ON a() > 1\n  -- only on weekdays\nIF time.weekday = 'mon'\nDO RESTART 'x';\n"
    assert (
        fmt(text) == "ON a() > 1\n-- only on weekdays\nIF time.weekday = 'mon'\nDO RESTART 'x';\n"
    )


def test_comment_after_code_stays_at_the_end_of_its_line() -> None:
    text = "ON a() > 1   -- hot\nDO SCALE 'x' TO 3 ,   -- more\n NOTIFY 'n'  LIMIT 3;  -- cap\n"
    assert fmt(text) == (
        "ON a() > 1 -- hot\nDO SCALE 'x' TO 3, -- more\n   NOTIFY 'n'\nLIMIT 3; -- cap\n"
    )


def test_comments_between_rules_stay_between_them() -> None:
    text = (
        "-- header\n\n\n-- first\nON a() > 1 DO RESTART 'x';\n"
        "-- second, part one\n\n-- part two\nON b() > 1 DO RESTART 'y';\n\n-- the end\n"
    )
    assert fmt(text) == (
        "-- header\n\n-- first\nON a() > 1\nDO RESTART 'x';\n\n"
        "-- second, part one\n\n-- part two\nON b() > 1\nDO RESTART 'y';\n\n-- the end\n"
    )


def test_block_comments_are_kept_verbatim() -> None:
    text = "/* a\n   block */\nON a(/* inline */) > 1 DO RESTART 'x';\n"
    assert fmt(text) == "/* a\n   block */\nON a() > 1 /* inline */\nDO RESTART 'x';\n"


def test_comment_before_a_lone_semicolon_moves_above_the_last_clause() -> None:
    text = "ON a() > 1 DO RESTART 'x'\n-- note\n;\n"
    assert fmt(text) == "ON a() > 1\n-- note\nDO RESTART 'x';\n"


def test_file_of_only_comments_is_kept() -> None:
    text = "-- nothing yet\n\n/* later */\n"
    assert fmt(text) == text


def test_tail_clauses_keep_their_comments_when_reordered() -> None:
    text = "ON a() > 1 DO SCALE 'x' TO 2\nCOOLDOWN 5m -- calm\nLIMIT 3 -- cap\n;"
    assert fmt(text) == "ON a() > 1\nDO SCALE 'x' TO 2\nLIMIT 3 -- cap\nCOOLDOWN 5m; -- calm\n"


def test_formatting_twice_changes_nothing_on_every_fixture() -> None:
    fixtures = Path(__file__).parent / "fixtures"
    for path in [IDENTITY, *sorted((fixtures.parent.parent.parent / "examples").rglob("*.sql"))]:
        once = fmt(path.read_text())
        assert fmt(once) == once, path


def test_comment_between_do_and_its_action_stays_above_the_action() -> None:
    text = "ON a() > 1 DO\n  -- first\n  RESTART 'x', NOTIFY 'y';\n"
    assert fmt(text) == "ON a() > 1\n-- first\nDO RESTART 'x',\n   NOTIFY 'y';\n"
