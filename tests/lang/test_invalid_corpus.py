"""Every case of the invalid corpus gives exactly its expected diagnostics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sqlifier.cli.main import run
from tests.lang.corpus import Case, describe, diagnose, read_cases

CASES = read_cases()


def test_the_corpus_has_at_least_sixty_cases() -> None:
    assert len(CASES) >= 60
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_case_gives_its_expected_diagnostics(case: Case) -> None:
    assert describe(diagnose(case.text)) == case.expected


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_check_exits_1_at_the_expected_line_and_column(
    case: Case, stack_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(stack_dir)
    Path("rules/case.sql").write_text(case.text, encoding="utf-8")

    assert run(["check", "--json", "rules/case.sql"]) == 1

    reported = json.loads(capsys.readouterr().out)
    expected_errors = [line for line in case.expected if ": error: " in line]
    first_line, first_col, _ = expected_errors[0].split(":", 2)
    errors = [d for d in reported if d["severity"] == "error"]
    assert (errors[0]["line"], errors[0]["col"]) == (int(first_line), int(first_col))
    assert all(d["path"] == "rules/case.sql" for d in reported)
