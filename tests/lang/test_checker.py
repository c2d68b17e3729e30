"""The checker: meaning errors across files, warnings, and checks against the stack."""

from __future__ import annotations

from sqlifier.lang import Severity, Source, check, parse_source
from sqlifier.lang.errors import Diagnostic


def diagnose(*texts: str, services: tuple[str, ...] | None = None) -> list[Diagnostic]:
    parsed = []
    for index, text in enumerate(texts):
        source = Source(text, f"r{index}.sql")
        rules, diagnostics = parse_source(source)
        assert diagnostics == []
        parsed.append((source, rules))
    return check(parsed, services)


def messages(diagnostics: list[Diagnostic]) -> list[tuple[str, str]]:
    return [(d.severity.value, d.message) for d in diagnostics]


def test_seed_rules_are_clean_against_their_stack() -> None:
    text = (
        "ON high_cpu(>80%) FOR 3m IF service.name = 'image-processor-svc' "
        "DO SCALE service.name TO instances + 2 LIMIT 20;\n"
        "ON log_error(level='critical', service='payment-gateway') > 10 FOR 1m "
        "DO ROLLBACK service 'payment-gateway' TO previous_stable;"
    )
    assert diagnose(text, services=("image-processor-svc", "payment-gateway")) == []


def test_without_a_stack_any_service_name_is_accepted() -> None:
    assert diagnose("ON cpu() > 1% DO RESTART 'anything';") == []


def test_duplicate_rule_names_are_found_across_files() -> None:
    found = diagnose(
        "RULE same ON cpu() > 1% DO RESTART 'x';",
        "RULE same ON cpu() > 2% DO RESTART 'x';",
    )
    assert [(d.path, d.line, d.message) for d in found] == [
        ("r1.sql", 1, "duplicate rule name 'same' (first defined at r0.sql:1:1)")
    ]


def test_threshold_a_signal_can_never_cross_is_a_warning() -> None:
    assert messages(diagnose("ON error_rate() > 100% DO RESTART 'x';")) == [
        ("warning", "error_rate() > 100% can never be true, so this rule never fires")
    ]
    assert messages(diagnose("ON low_cpu(<0%) DO RESTART 'x';")) == [
        ("warning", "low_cpu(<0%) can never be true, so this rule never fires")
    ]


def test_contradictory_condition_is_a_warning() -> None:
    found = diagnose("ON cpu() > 1% IF service.name = 'a' AND service.name = 'b' DO RESTART 'a';")
    assert messages(found) == [
        ("warning", "service.name cannot be both 'a' and 'b', so this condition is never true")
    ]
    assert found[0].hint == "did you mean OR, or IN (...)?"


def test_field_out_of_range_is_a_warning() -> None:
    assert messages(diagnose("ON cpu() > 1% IF time.hour > 23 DO RESTART 'a';")) == [
        ("warning", "time.hour is between 0 and 23, so this condition is never true")
    ]


def test_open_ended_scale_without_limit_is_a_warning() -> None:
    assert messages(diagnose("ON cpu() > 1% DO SCALE 'a' TO instances + 1;")) == [
        ("warning", "SCALE without LIMIT: the service can grow until the action budget stops it")
    ]


def test_bounded_scale_needs_no_limit() -> None:
    assert diagnose("ON cpu() > 1% DO SCALE 'a' TO 3;") == []
    assert diagnose("ON cpu() > 1% DO SCALE 'a' TO min(instances + 1, 6);") == []


def test_warnings_are_not_errors() -> None:
    found = diagnose("ON error_rate() > 100% DO RESTART 'x';")
    assert [d.severity for d in found] == [Severity.WARNING]
    assert not found[0].is_error


def test_percent_over_percent_is_a_number_of_instances() -> None:
    assert diagnose("ON cpu() > 70% DO SCALE 'a' TO ceil(instances * cpu() / 60%) LIMIT 9;") == []


def test_duration_over_duration_is_a_number_of_instances() -> None:
    text = "ON latency(p99) > 1s DO SCALE 'a' TO ceil(instances * latency(p99) / 300ms) LIMIT 9;"
    assert diagnose(text) == []


def test_every_error_of_a_rule_is_reported() -> None:
    found = diagnose("ON hig_cpu(>80%) IF service.nme = 'a' DO NOTIFY '{x}' LIMIT 3;")
    assert [d.col for d in found] == [4, 21, 50, 55]


def test_a_schedule_that_can_never_fire_is_a_warning_at_the_expression() -> None:
    found = diagnose("ON schedule('0 0 31 2 *') DO RESTART 'web';\n")
    assert [(d.severity, d.line, d.col, d.message) for d in found] == [
        (
            Severity.WARNING,
            1,
            13,
            "the schedule '0 0 31 2 *' can never fire: February has no day 31",
        )
    ]
