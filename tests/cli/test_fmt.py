"""`sqlifier fmt`: rewrites to canonical form, --check, stdin, and never loses a file."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_sqlifier

MESSY = "on high_cpu( >80% ) for 3m  -- hot\nif service.name='web' do scale service.name to instances+2 limit 20\n"
CANONICAL = (
    "ON high_cpu(>80%) FOR 3m -- hot\nIF service.name = 'web'\n"
    "DO SCALE service.name TO instances + 2\nLIMIT 20;\n"
)


def test_fmt_rewrites_the_stack_rule_files(stack_dir: Path) -> None:
    path = stack_dir / "rules" / "r.sql"
    path.write_text(MESSY)
    path.chmod(0o640)
    result = run_sqlifier("fmt", cwd=stack_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "reformatted rules/r.sql\n"
    assert path.read_text() == CANONICAL
    assert path.stat().st_mode & 0o777 == 0o640


def test_fmt_twice_changes_nothing(stack_dir: Path) -> None:
    path = stack_dir / "rules" / "r.sql"
    path.write_text(MESSY)
    run_sqlifier("fmt", cwd=stack_dir)
    again = run_sqlifier("fmt", cwd=stack_dir)
    assert again.returncode == 0
    assert again.stdout == ""
    assert path.read_text() == CANONICAL


def test_check_lists_files_that_would_change_and_exits_1(stack_dir: Path) -> None:
    messy = stack_dir / "rules" / "messy.sql"
    messy.write_text(MESSY)
    (stack_dir / "rules" / "tidy.sql").write_text(CANONICAL)
    result = run_sqlifier("fmt", "--check", cwd=stack_dir)
    assert result.returncode == 1
    assert result.stdout == "would reformat rules/messy.sql\n"
    assert messy.read_text() == MESSY


def test_check_passes_on_canonical_files(stack_dir: Path) -> None:
    (stack_dir / "rules" / "tidy.sql").write_text(CANONICAL)
    assert run_sqlifier("fmt", "--check", cwd=stack_dir).returncode == 0


def test_a_file_with_syntax_errors_is_reported_and_left_alone(stack_dir: Path) -> None:
    broken = stack_dir / "rules" / "broken.sql"
    broken.write_text("ON cpu() > 80% FOR 3 minutes DO RESTART 'web'\n")
    result = run_sqlifier("fmt", "rules/broken.sql", cwd=stack_dir)
    assert result.returncode == 1
    assert result.stderr.startswith("rules/broken.sql:1:20: error: expected a duration")
    assert broken.read_text() == "ON cpu() > 80% FOR 3 minutes DO RESTART 'web'\n"


BROKEN = "ON cpu() > 80% FOR 3 minutes DO RESTART 'web'\n"


def test_check_exits_3_for_syntax_errors_even_beside_files_to_reformat(stack_dir: Path) -> None:
    (stack_dir / "rules" / "broken.sql").write_text(BROKEN)
    (stack_dir / "rules" / "messy.sql").write_text(MESSY)
    result = run_sqlifier("fmt", "--check", cwd=stack_dir)
    assert result.returncode == 3
    assert result.stdout == "would reformat rules/messy.sql\n"
    assert result.stderr.startswith("rules/broken.sql:1:20: error: expected a duration")
    assert result.stderr.endswith(
        "1 file would be reformatted, 0 unchanged, 1 with errors (left unchanged)\n"
    )


def test_check_of_stdin_exits_3_for_syntax_errors_and_1_for_reformatting() -> None:
    assert run_sqlifier("fmt", "--check", "-", stdin=BROKEN).returncode == 3
    assert run_sqlifier("fmt", "--check", "-", stdin=MESSY).returncode == 1
    assert run_sqlifier("fmt", "--check", "-", stdin=CANONICAL).returncode == 0


def test_fmt_reads_stdin_and_writes_stdout() -> None:
    result = run_sqlifier("fmt", "-", stdin=MESSY)
    assert result.returncode == 0
    assert result.stdout == CANONICAL


def test_crlf_files_come_back_with_lf(stack_dir: Path) -> None:
    path = stack_dir / "rules" / "r.sql"
    path.write_bytes(CANONICAL.replace("\n", "\r\n").encode())
    assert run_sqlifier("fmt", cwd=stack_dir).returncode == 0
    assert path.read_bytes() == CANONICAL.encode()
