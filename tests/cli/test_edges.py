"""The CLI at the edges: odd files, odd paths, odd combinations — never exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.conftest import BIN, run_sqlifier

RULE = "ON cpu() > 80% DO RESTART 'web';\n"


def test_a_device_or_fifo_is_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.sql"
    os.mkfifo(fifo)
    for name in ("/dev/zero", str(fifo)):
        result = run_sqlifier("check", name, cwd=tmp_path)
        assert result.returncode == 1
        assert result.stderr.startswith(f"{name}:1:1: error: is not a regular file")


def test_lone_carriage_returns_end_lines(tmp_path: Path) -> None:
    path = tmp_path / "mac.sql"
    path.write_bytes(b"-- header\rON cpu() > 80% DO RESTART 'web';\rON bad\r")
    result = run_sqlifier("check", "--json", str(path))
    assert result.returncode == 1
    assert [(d["line"], d["col"]) for d in json.loads(result.stdout)] == [(3, 7)]


def test_check_json_is_json_even_without_a_stack(tmp_path: Path) -> None:
    result = run_sqlifier("check", "--json", cwd=tmp_path)
    assert result.returncode == 1
    (found,) = json.loads(result.stdout)
    assert found["severity"] == "error" and "no sqlifier.toml" in found["message"]


def test_the_same_file_twice_is_checked_once(stack_dir: Path) -> None:
    (stack_dir / "rules" / "r.sql").write_text("RULE r ON cpu() > 80% DO RESTART 'wbe';\n")
    result = run_sqlifier("check", "--json", "rules/r.sql", "./rules/r.sql", cwd=stack_dir)
    assert [d["message"] for d in json.loads(result.stdout)] == [
        "unknown service 'wbe'; the stack file defines: api, image-processor-svc, "
        "payment-gateway, web"
    ]


def test_fmt_stdin_cannot_be_mixed_with_files(tmp_path: Path) -> None:
    result = run_sqlifier("fmt", "-", "a.sql", cwd=tmp_path, stdin=RULE)
    assert result.returncode == 1
    assert "cannot be combined" in result.stderr


def test_fmt_check_on_stdin_exits_1_when_it_would_change() -> None:
    result = run_sqlifier("fmt", "--check", "-", stdin="on cpu() > 80% do restart 'web'")
    assert (result.returncode, result.stdout) == (1, "would reformat -\n")
    tidy = run_sqlifier("fmt", "--check", "-", stdin="ON cpu() > 80%\nDO RESTART 'web';\n")
    assert tidy.returncode == 0


def test_fmt_through_a_symbolic_link_rewrites_the_target(stack_dir: Path) -> None:
    target = stack_dir / "real.sql"
    target.write_text("on cpu() > 80% do restart 'web'")
    (stack_dir / "rules" / "link.sql").symlink_to(target)
    assert run_sqlifier("fmt", cwd=stack_dir).returncode == 0
    assert (stack_dir / "rules" / "link.sql").is_symlink()
    assert target.read_text() == "ON cpu() > 80%\nDO RESTART 'web';\n"


def test_fmt_with_no_rule_files_is_not_a_failure(stack_dir: Path) -> None:
    result = run_sqlifier("fmt", cwd=stack_dir)
    assert result.returncode == 0
    assert "match no file" in result.stderr


def test_rule_patterns_outside_the_stack_are_errors(stack_dir: Path) -> None:
    for pattern in ('"/etc/*.conf"', '""', '"../*.sql"'):
        (stack_dir / "sqlifier.toml").write_text(f'[stack]\nname = "x"\nrules = [{pattern}]\n')
        result = run_sqlifier("check", cwd=stack_dir)
        assert result.returncode == 1, pattern
        assert "must be a path inside the stack's folder" in result.stderr


def test_init_refuses_bad_names_and_unwritable_places(tmp_path: Path) -> None:
    bad = run_sqlifier("init", "x", "--name", 'Bad Name"x', cwd=tmp_path)
    assert bad.returncode == 1 and "invalid stack name" in bad.stderr
    proc = run_sqlifier("init", "/proc/sqlifier-test", cwd=tmp_path)
    assert proc.returncode == 1 and "cannot create" in proc.stderr


def test_names_with_a_trailing_newline_are_invalid(stack_dir: Path) -> None:
    (stack_dir / "sqlifier.toml").write_text(
        '[stack]\nname = "x"\n[services."web\\n"]\nrun = "a"\n'
    )
    result = run_sqlifier("check", cwd=stack_dir)
    assert result.returncode == 1
    assert "invalid service name" in result.stderr


def test_a_rule_file_that_is_a_symbolic_link_loop_is_an_error(stack_dir: Path) -> None:
    (stack_dir / "rules" / "loop.sql").symlink_to("loop.sql")
    for command in ("check", "fmt"):
        result = run_sqlifier(command, "rules/loop.sql", cwd=stack_dir)
        assert result.returncode == 1, result.stderr
        assert "rules/loop.sql:1:1: error: cannot read the file: Too many levels of symbolic" in (
            result.stdout + result.stderr
        )


def test_an_environment_is_a_name_not_a_path(stack_dir: Path) -> None:
    for args, env in (
        (("ps", "--env", "../outside"), None),
        (("plan",), "a/b"),
        (("secret", "set", "x", "--env", "/tmp/elsewhere"), None),
    ):
        result = subprocess.run(
            [str(BIN / "sqlifier"), *args],
            cwd=stack_dir,
            input="value",
            capture_output=True,
            text=True,
            env={**os.environ, **({"SQLIFIER_ENV": env} if env else {})},
            timeout=60,
            check=False,
        )
        assert result.returncode == 1, result.stderr
        assert "(from --env or SQLIFIER_ENV): an environment is lower-case letters" in (
            result.stderr
        )
    assert not (stack_dir.parent / "outside").exists()
    assert not (stack_dir / ".sqlifier").exists()


def test_a_stack_file_nested_hundreds_deep_is_an_error(stack_dir: Path) -> None:
    deep = "[" * 500 + "]" * 500
    (stack_dir / "sqlifier.toml").write_text(
        f'[stack]\nname = "x"\n[services.web]\nrun = "a"\nlabels = {{ a = {deep} }}\n'
    )
    result = run_sqlifier("check", cwd=stack_dir)
    assert result.returncode == 1, result.stderr
    assert "sqlifier.toml:1:1: error: tables or lists nest too deeply" in result.stderr


def test_a_samples_field_too_long_to_read_names_its_line(stack_dir: Path) -> None:
    (stack_dir / "rules" / "r.sql").write_text(RULE)
    (stack_dir / "s.csv").write_text(
        "t,service,signal,value,message\n0,web,cpu,0.5,\n1,web,log,critical," + "x" * 200_000
    )
    result = run_sqlifier("rules", "test", "rules/r.sql", "--samples", "s.csv", cwd=stack_dir)
    assert result.returncode == 1, result.stderr
    assert "s.csv:3: a field is longer than 131072 characters" in result.stderr


def test_a_duration_option_past_ten_years_is_refused(stack_dir: Path) -> None:
    result = run_sqlifier("audit", "--since", "36500d", cwd=stack_dir)
    assert result.returncode == 1, result.stderr
    assert "--since 36500d: at most 3650d (ten years), like 30m, 24h or 7d" in result.stderr


def test_a_reason_is_one_line_of_plain_text(stack_dir: Path) -> None:
    for command in (
        ("deploy", "-s", "web"),
        ("rollback", "-s", "web"),
        ("rollout", "abort", "web"),
    ):
        result = run_sqlifier(*command, "--reason", "ok\n\x1b[31mforged", cwd=stack_dir)
        assert result.returncode == 1, result.stderr
        assert "--reason holds a control character" in result.stderr


def test_scale_to_a_negative_count_names_the_service_and_the_valid_counts(
    stack_dir: Path,
) -> None:
    valid = "the count is a whole number from 0 to 1000 (0 stops every instance of web)"
    for args in (["web", "-1"], ["web", "-1", "--env", "dev"], ["web", "--", "-1"]):
        result = run_sqlifier("scale", *args, cwd=stack_dir)
        assert (result.returncode, result.stderr) == (
            1,
            f"sqlifier: error: cannot scale web to -1 instances: {valid}\n",
        )
    too_many = run_sqlifier("scale", "web", "1001", cwd=stack_dir)
    assert too_many.stderr == f"sqlifier: error: cannot scale web to 1001 instances: {valid}\n"


def test_scale_with_a_valid_count_still_reads_its_options(stack_dir: Path) -> None:
    result = run_sqlifier("scale", "web", "2", "--env", "staging", cwd=stack_dir)
    assert result.returncode == 1
    assert "staging" in result.stderr and "cannot scale" not in result.stderr
