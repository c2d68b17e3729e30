"""`sqlifier fmt`: rewrite rule files in canonical form.

With `--check` the exit code tells CI which way a file fails: 1 when one would be
reformatted (run `sqlifier fmt`), SYNTAX_ERRORS when one cannot be parsed (fix it by hand),
which also wins when both happen. Without `--check` a file with errors is bad input (1).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click

from sqlifier.cli.options import STACK_FILE_OF_FILES
from sqlifier.cli.output import print_diagnostics
from sqlifier.cli.workspace import resolve
from sqlifier.errors import UserError
from sqlifier.lang.ast import RuleFile
from sqlifier.lang.parser import parse
from sqlifier.lang.printer import format_file
from sqlifier.lang.source import Source
from sqlifier.stack.rulefiles import load_rule_file

__all__ = ["SYNTAX_ERRORS", "command"]

SYNTAX_ERRORS = 3  # `fmt --check`: a file has syntax errors (2 is kept for bugs)


@click.command("fmt")
@click.argument("files", nargs=-1, type=click.Path())
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="Change nothing; exit 1 if a file would change, 3 if one has syntax errors.",
)
@STACK_FILE_OF_FILES
def command(files: tuple[str, ...], check_only: bool, stack_file: str | None) -> int:
    """Format rule files: upper-case keywords, one clause per line, comments kept.

    Without FILES, formats the stack's rule files. `-` reads standard input and writes the
    result to standard output. A file with syntax errors is reported and left unchanged.
    """
    if "-" in files:
        if files != ("-",):
            raise UserError("'-' (standard input) cannot be combined with file names")
        return _format_stdin(check_only)
    workspace = resolve(files, stack_file)
    if not workspace.rule_paths:
        print_diagnostics(workspace.diagnostics)
        return 1 if any(d.is_error for d in workspace.diagnostics) else 0
    failed = changed = 0
    for path, display in workspace.rule_paths:
        loaded = load_rule_file(path, display)
        if loaded.rules is None or loaded.source is None or loaded.diagnostics:
            print_diagnostics(loaded.diagnostics)
            failed += 1
            continue
        text = _formatted(loaded.rules, display)
        if text.encode("utf-8") == path.read_bytes():
            continue
        if check_only:
            changed += 1
            click.echo(f"would reformat {display}")
            continue
        try:
            _write(path, text)
        except OSError as exc:
            click.echo(f"{display}:1:1: error: cannot write the file: {exc.strerror}", err=True)
            failed += 1
            continue
        changed += 1
        click.echo(f"reformatted {display}")
    total = len(workspace.rule_paths)
    verb = "would be reformatted" if check_only else "reformatted"
    parts = [
        f"{changed} file{'s' * (changed != 1)} {verb}",
        f"{total - changed - failed} unchanged",
    ]
    if failed:
        parts.append(f"{failed} with errors (left unchanged)")
    click.echo(", ".join(parts), err=True)
    return _exit_code(check_only, failed=failed > 0, changed=changed > 0)


def _exit_code(check_only: bool, *, failed: bool, changed: bool) -> int:
    if failed:
        return SYNTAX_ERRORS if check_only else 1
    return 1 if check_only and changed else 0


class FormatterBug(Exception):
    """Formatting would have changed what the rules mean: a bug, never written out."""


def _formatted(rules: RuleFile, display: str) -> str:
    """The canonical text, checked to mean exactly what the original means."""
    text = format_file(rules)
    again, diagnostics = parse(Source(text, rules.path))
    if diagnostics or again != rules:
        raise FormatterBug(f"formatting {display} would change its meaning; it was left unchanged")
    return text


def _format_stdin(check_only: bool) -> int:
    loaded = load_rule_file(Path("-"), "-")
    if loaded.rules is None or loaded.source is None or loaded.diagnostics:
        print_diagnostics(loaded.diagnostics)
        return _exit_code(check_only, failed=True, changed=False)
    text = _formatted(loaded.rules, "standard input")
    if check_only:
        if text != loaded.source.text:
            click.echo("would reformat -")
            return 1
        return 0
    click.echo(text, nl=False)
    return 0


def _write(path: Path, text: str) -> None:
    """Replace the file atomically, keeping its permissions (through a symbolic link, the
    file it points to)."""
    path = path.resolve()
    mode = path.stat().st_mode & 0o7777
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
