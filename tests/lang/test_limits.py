"""Hostile input ends in a clear error, never a traceback, a hang or exit code 2.

These go through the real `sqlifier` executable, as a user would meet them.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_sqlifier


def check_json(path: Path) -> tuple[int, list[dict[str, object]], str]:
    result = run_sqlifier("check", "--json", str(path))
    return result.returncode, json.loads(result.stdout), result.stderr


def test_non_utf8_input_names_the_byte_and_its_position(tmp_path: Path) -> None:
    path = tmp_path / "bad.sql"
    path.write_bytes(b"ON cpu() > 80%\nDO NOTIFY 'caf\xe9';\n")
    code, found, stderr = check_json(path)
    assert code == 1
    assert found == [
        {
            "path": str(path),
            "line": 2,
            "col": 15,
            "severity": "error",
            "message": "the file is not valid UTF-8 (byte 0xe9 at line 2, column 15)",
            "hint": None,
        }
    ]
    assert "Traceback" not in stderr


def test_a_ten_megabyte_file_is_refused_with_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "huge.sql"
    rule = b"ON cpu() > 80% DO RESTART 'web';\n"
    path.write_bytes(rule * (10_000_000 // len(rule) + 1))
    code, found, _ = check_json(path)
    assert code == 1
    assert [d["message"] for d in found] == [
        "the file is larger than 4 MiB, the most a rule file may hold (split it into several files)"
    ]


def test_ten_thousand_nested_parentheses_are_an_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "deep.sql"
    depth = 10_000
    path.write_text(
        "ON cpu() > 80% DO SCALE 'web' TO " + "(" * depth + "1" + ")" * depth + ";\n"
        "ON " + "(" * depth + "cpu() > 1%" + ")" * depth + " DO RESTART 'web';\n"
        "ON cpu() > 1% IF " + "NOT " * depth + "time.hour = 1 DO RESTART 'web';\n"
    )
    code, found, stderr = check_json(path)
    assert code == 1
    assert [(d["line"], d["message"]) for d in found] == [
        (1, "expressions nest too deeply (more than 64 levels)"),
        (2, "expressions nest too deeply (more than 64 levels)"),
        (3, "expressions nest too deeply (more than 64 levels)"),
    ]
    assert "Traceback" not in stderr


def test_unterminated_string_and_comment_are_reported_where_they_start(tmp_path: Path) -> None:
    path = tmp_path / "open.sql"
    path.write_text("ON cpu() > 80% DO NOTIFY 'never closed;\nON cpu() > 1% /* never closed\n")
    code, found, _ = check_json(path)
    assert code == 1
    assert [(d["line"], d["col"], d["message"]) for d in found] == [
        (1, 26, "unterminated string: a string must close with ' on the same line"),
        (2, 15, "unterminated comment: '/*' is never closed by '*/'"),
    ]


def test_binary_garbage_is_reported_not_crashed_on(tmp_path: Path) -> None:
    path = tmp_path / "noise.sql"
    path.write_bytes(bytes(range(256)) * 4)
    result = run_sqlifier("check", str(path))
    assert result.returncode == 1
    assert "not valid UTF-8" in result.stderr


def test_nul_bytes_in_valid_utf8_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "nul.sql"
    path.write_bytes(b"ON cpu() > 1% DO RESTART 'web';\x00\n")
    code, found, _ = check_json(path)
    assert code == 1
    assert [(d["line"], d["col"], d["message"]) for d in found] == [
        (1, 32, "unexpected character U+0000")
    ]


def test_a_long_line_is_shown_around_the_error(tmp_path: Path) -> None:
    path = tmp_path / "long.sql"
    path.write_text("ON cpu() > 1% DO NOTIFY '" + "x" * 5000 + "' @;\n")
    result = run_sqlifier("check", str(path))
    assert result.returncode == 1
    shown, caret = result.stderr.splitlines()[1:3]
    assert len(shown) < 140
    assert shown[caret.index("^")] == "@"
