"""`sqlifier --help`, `-h` and `--version` answered without click: the same bytes as the
full CLI prints, at every terminal width, and only while the stored answers are current."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sqlifier.cli import fasthelp, helptext
from sqlifier.cli.main import COMMANDS
from tests.conftest import BIN


def test_the_stored_answers_are_the_full_clis_own_at_every_width() -> None:
    """Fails when a command, a summary or an option of `sqlifier` changed: render the
    answers again with `python -m sqlifier.cli.fasthelp`."""
    version, texts, by_width = fasthelp.render()
    assert (helptext.VERSION, list(helptext.TEXTS), list(helptext.BY_WIDTH)) == (
        version,
        texts,
        by_width,
    ), "stale: run .venv/bin/python -m sqlifier.cli.fasthelp"
    assert fasthelp.fingerprint() == helptext.FINGERPRINT, "run python -m sqlifier.cli.fasthelp"
    for name in COMMANDS:
        assert all(f"\n  {name} " in text for text in helptext.TEXTS), name


def _answer(command: list[str], columns: int) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_COMPLETE")}
    env["COLUMNS"] = str(columns)
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)
    return done.stdout, done.returncode


@pytest.mark.parametrize("arg", ["--help", "-h", "--version"])
@pytest.mark.parametrize("columns", [40, 64, 80, 200])
def test_the_installed_command_prints_what_the_full_cli_prints(arg: str, columns: int) -> None:
    full = [
        sys.executable,
        "-c",
        f"import sys\nfrom sqlifier.cli.main import run\nsys.exit(run([{arg!r}]))",
    ]
    assert _answer([str(BIN / "sqlifier"), arg], columns) == _answer(full, columns)
    assert _answer([sys.executable, "-m", "sqlifier", arg], columns) == _answer(full, columns)


@pytest.mark.parametrize("arg", ["--help", "-h", "--version"])
def test_help_and_version_load_no_click(arg: str) -> None:
    script = (
        "import json, sys\n"
        f"sys.argv = ['sqlifier', {arg!r}]\n"
        "from sqlifier.cli.fasthelp import main\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code == 0\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert [name for name in loaded if name.split(".")[0] == "click"] == []
    assert "sqlifier.cli.main" not in loaded


def test_a_stale_answer_is_left_to_the_full_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    """After main.py changed (a command added, a summary edited) and before the answers
    are rendered again, the full CLI answers: slower, never out of date."""
    assert fasthelp.quick_answer(["--help"]) is not None
    monkeypatch.setattr(helptext, "FINGERPRINT", "00000000-0.0.0")
    assert fasthelp.quick_answer(["--help"]) is None
    assert fasthelp.quick_answer(["--version"]) is None


@pytest.mark.parametrize(
    "args", [[], ["ps"], ["--help", "ps"], ["ps", "--help"], ["--env", "x", "--help"], ["--hel"]]
)
def test_anything_else_goes_to_the_full_cli(args: list[str]) -> None:
    assert fasthelp.quick_answer(args) is None


def test_a_shell_asking_for_completions_gets_the_full_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_SQLIFIER_COMPLETE", "bash_complete")
    assert fasthelp.quick_answer(["--help"]) is None
