"""Masking values in text, and reading env files."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from sqlifier.errors import UserError
from sqlifier.secrets.redact import MASK, Redactor
from sqlifier.stack.envfile import read_env_file


def test_values_and_their_base64_forms_are_masked() -> None:
    redactor = Redactor()
    assert redactor.redact("nothing to hide") == "nothing to hide" and not redactor
    value = "s3cr3t/with+chars?"
    redactor.add([value])
    encoded = base64.b64encode(value.encode()).decode()
    urlsafe = base64.urlsafe_b64encode(value.encode()).decode()
    line = f"pw={value} b64={encoded} url={urlsafe} bare={encoded.rstrip('=')}"
    assert redactor.redact(line) == f"pw={MASK} b64={MASK} url={MASK} bare={MASK}"


def test_the_longest_value_wins_and_short_values_are_not_masked() -> None:
    redactor = Redactor()
    redactor.add(["abcd", "abcdefgh", "xy"])
    assert redactor.redact("abcdefgh abcd xy") == f"{MASK} {MASK} xy"


def test_env_file(tmp_path: Path) -> None:
    path = tmp_path / "production.env"
    path.write_text(
        "# comment\n\nexport LOG_LEVEL=debug\nGREETING=\"hello world\"\nQUOTED='a # b'\n"
        "TRAILING=value # a comment\nEMPTY=\n"
    )
    assert read_env_file(path, "production.env") == {
        "LOG_LEVEL": "debug",
        "GREETING": "hello world",
        "QUOTED": "a # b",
        "TRAILING": "value",
        "EMPTY": "",
    }


def test_env_file_errors_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.env"
    path.write_text("OK=1\nnot a line\n")
    with pytest.raises(UserError, match=r"bad\.env:2: expected KEY=value"):
        read_env_file(path, "bad.env")
    with pytest.raises(UserError, match=r"missing\.env: env_file not found"):
        read_env_file(tmp_path / "missing.env", "missing.env")
