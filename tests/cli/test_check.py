"""`sqlifier check` as a user runs it: exit codes, compiler-style output, JSON."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import ROOT, run_sqlifier

SEED = ROOT / "examples" / "shop"


def test_the_seed_rules_check_clean_in_the_example_shop() -> None:
    result = run_sqlifier("check", cwd=SEED)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("no problems in 2 rule files, 6 rules, stack 'shop'")


def test_error_is_one_compiler_line_then_the_source_and_a_caret(stack_dir: Path) -> None:
    (stack_dir / "rules" / "scale.sql").write_text(
        "-- scale up\nON high_cpu(>80%) FOR 3 minutes\nDO SCALE 'web' TO 4;\n"
    )
    result = run_sqlifier("check", cwd=stack_dir)
    assert result.returncode == 1
    assert result.stderr.splitlines()[:4] == [
        "rules/scale.sql:2:23: error: expected a duration after FOR (like 3m or 30s), "
        "found '3 minutes'",
        "  ON high_cpu(>80%) FOR 3 minutes",
        "                        ^~~~~~~~~",
        "hint: write the number and the unit together: 3m",
    ]
    assert (
        result.stderr.splitlines()[-1]
        == "1 error in 1 rule file, 0 rules, stack 'test' (4 services)"
    )


def test_all_errors_of_all_files_are_reported_in_one_run(stack_dir: Path) -> None:
    (stack_dir / "rules" / "a.sql").write_text(
        "ON cpu() > 80% FOR 3 minutes DO RESTART 'web';\nON hig_cpu(>1%) DO RESTART 'web';\n"
    )
    (stack_dir / "rules" / "b.sql").write_text("ON cpu() > 80% DO RESTART 'wbe';\n")
    result = run_sqlifier("check", "--json", cwd=stack_dir)
    assert result.returncode == 1
    found = json.loads(result.stdout)
    assert [(d["path"], d["line"], d["col"]) for d in found] == [
        ("rules/a.sql", 1, 20),
        ("rules/a.sql", 2, 4),
        ("rules/b.sql", 1, 27),
    ]
    assert found[2]["hint"] == "did you mean 'web'?"
    assert set(found[0]) == {"path", "line", "col", "severity", "message", "hint"}


def test_warnings_do_not_change_the_exit_code(stack_dir: Path) -> None:
    (stack_dir / "rules" / "w.sql").write_text("ON error_rate() > 100% DO RESTART 'web';\n")
    result = run_sqlifier("check", cwd=stack_dir)
    assert result.returncode == 0
    assert result.stderr.startswith(
        "rules/w.sql:1:17: warning: error_rate() > 100% can never be true"
    )


def test_rule_files_are_checked_against_the_stack_found_above(stack_dir: Path) -> None:
    (stack_dir / "rules" / "r.sql").write_text("ON cpu() > 80% DO RESTART 'checkout';\n")
    result = run_sqlifier("check", "r.sql", cwd=stack_dir / "rules")
    assert result.returncode == 1
    assert "unknown service 'checkout'" in result.stderr


def test_without_stack_or_files_says_what_to_do(tmp_path: Path) -> None:
    result = run_sqlifier("check", cwd=tmp_path)
    assert result.returncode == 1
    assert "no sqlifier.toml in" in result.stderr
    assert "sqlifier init" in result.stderr


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    result = run_sqlifier("check", "nope.sql", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("nope.sql:1:1: error: cannot read the file: No such file")


def test_stack_file_errors_are_reported_with_position(stack_dir: Path) -> None:
    (stack_dir / "sqlifier.toml").write_text('[stack]\nname = "x"\n\n[servics.web]\nrun = "a"\n')
    result = run_sqlifier("check", cwd=stack_dir)
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == (
        "sqlifier.toml:4:2: error: unknown top-level table 'servics'; valid: stack, "
        "environments, services, router, engine, notify, prometheus, metrics, dashboard"
    )
    assert "hint: did you mean 'services'?" in result.stderr


def test_unknown_option_is_a_usage_error_with_exit_1(tmp_path: Path) -> None:
    result = run_sqlifier("check", "--bogus", cwd=tmp_path)
    assert result.returncode == 1
    assert "No such option '--bogus'" in result.stderr


WARNED = """\
[stack]
name = "w"

[environments.production]
approval = "required"

[services.web]
run = "python3 app.py"
port = 9000

[services.api]
run = "python3 app.py"
port = 9004
"""


def test_stack_and_rule_warnings_are_positioned_and_exit_0(tmp_path: Path) -> None:
    (tmp_path / "sqlifier.toml").write_text(WARNED)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.sql").write_text(
        "ON cpu(service='web') > 80% DO SCALE 'web' TO instances + 1 LIMIT 10;\n"
        "ON schedule('0 0 31 2 *') DO RESTART 'web';\n"
    )
    result = run_sqlifier("check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    headlines = [line for line in result.stderr.splitlines() if ": warning: " in line]
    assert headlines == [
        "sqlifier.toml:5:12: warning: environment production requires approval but names no "
        "approvers: every deploy to it will be refused",
        "rules/r.sql:1:32: warning: this SCALE can run up to 10 instances of web, on ports "
        "9000 to 9009 from its fixed port, but port 9004 is taken by api-0",
        "rules/r.sql:2:13: warning: the schedule '0 0 31 2 *' can never fire: February has "
        "no day 31",
    ]
    assert "hint: add LIMIT 4 (the most that fit from port 9000), or move a port" in result.stderr
    assert result.stdout.startswith("3 warnings in 1 rule file, 2 rules, stack 'w'")


def test_strict_makes_warnings_fail_and_says_why(tmp_path: Path) -> None:
    (tmp_path / "sqlifier.toml").write_text(WARNED)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.sql").write_text("ON cpu() > 80% DO RESTART 'web';\n")
    result = run_sqlifier("check", "--strict", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "1 warning in 1 rule file, 1 rule, stack 'w' (2 services) (--strict: warnings fail)"
    )
    as_json = run_sqlifier("check", "--strict", "--json", cwd=tmp_path)
    assert as_json.returncode == 1
    assert [d["severity"] for d in json.loads(as_json.stdout)] == ["warning"]
    clean = WARNED.replace('approval = "required"', 'approval = "required"\napprovers = ["a"]')
    (tmp_path / "sqlifier.toml").write_text(clean)
    assert run_sqlifier("check", "--strict", cwd=tmp_path).returncode == 0


def test_init_names_the_user_who_ran_it_as_approver_so_strict_check_passes(
    tmp_path: Path,
) -> None:
    import os
    import subprocess

    from tests.conftest import BIN

    env = {**os.environ, "SQLIFIER_USER": 'al"ice'}
    subprocess.run(
        [str(BIN / "sqlifier"), "init", "shop"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
    )
    assert 'approvers = ["al\\"ice"]' in (tmp_path / "shop" / "sqlifier.toml").read_text()
    assert run_sqlifier("check", "--strict", cwd=tmp_path / "shop").returncode == 0
