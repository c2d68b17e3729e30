"""`sqlifier fmt`: rewrite rule files in canonical form."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click

from sqlifier.cli.output import print_diagnostics
from sqlifier.cli.workspace import resolve
from sqlifier.lang.printer import format_file
from sqlifier.spec.rulefiles import load_rule_file

__all__ = ["command"]


@click.command("fmt")
@click.argument("files", nargs=-1)
@click.option(
    "--check", "check_only", is_flag=True, help="Change nothing; exit 1 if a file would change."
)
@click.option(
    "-f", "--file", "stack_file", help="The stack file (default: sqlifier.toml here or above)."
)
def command(files: tuple[str, ...], check_only: bool, stack_file: str | None) -> int:
    """Format rule files: upper-case keywords, one clause per line, comments kept.

    Without FILES, formats the stack's rule files. `-` reads standard input and writes the
    result to standard output. A file with syntax errors is reported and left unchanged.
    """
    if files == ("-",):
        return _format_stdin()
    workspace = resolve(tuple(f for f in files if not f.endswith(".toml")), stack_file)
    if not workspace.rule_paths and workspace.diagnostics:
        print_diagnostics(workspace.diagnostics)
        return 1
    failed = changed = 0
    for path, display in workspace.rule_paths:
        loaded = load_rule_file(path, display)
        if loaded.rules is None or loaded.source is None or loaded.diagnostics:
            print_diagnostics(loaded.diagnostics)
            failed += 1
            continue
        text = format_file(loaded.rules)
        if text.encode("utf-8") == path.read_bytes():
            continue
        changed += 1
        if check_only:
            click.echo(f"would reformat {display}")
        else:
            _write(path, text)
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
    return 1 if failed or (check_only and changed) else 0


def _format_stdin() -> int:
    loaded = load_rule_file(Path("-"), "-")
    if loaded.rules is None or loaded.diagnostics:
        print_diagnostics(loaded.diagnostics)
        return 1
    click.echo(format_file(loaded.rules), nl=False)
    return 0


def _write(path: Path, text: str) -> None:
    """Replace the file atomically, keeping its permissions."""
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
