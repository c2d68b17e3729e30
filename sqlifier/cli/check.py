"""`sqlifier check`: validate the stack file and rule files."""

from __future__ import annotations

import click

from sqlifier.cli.options import STACK_FILE_OF_FILES
from sqlifier.cli.output import diagnostics_json, print_diagnostics, summary
from sqlifier.cli.workspace import resolve
from sqlifier.errors import UserError
from sqlifier.lang.errors import Diagnostic, Severity
from sqlifier.stack.rulefiles import load_rules

__all__ = ["command"]


@click.command("check")
@click.argument("files", nargs=-1)
@STACK_FILE_OF_FILES
@click.option("--json", "as_json", is_flag=True, help="Print the diagnostics as JSON on stdout.")
def command(files: tuple[str, ...], stack_file: str | None, as_json: bool) -> int:
    """Check the stack file and rule files; exit 1 on any error.

    Without FILES, checks sqlifier.toml (here or in a parent folder) and the rule files
    its [stack] rules patterns match. Rules are checked against the stack's services.
    """
    try:
        workspace = resolve(files, stack_file)
    except UserError as exc:
        if not as_json:
            raise
        here = Diagnostic(".", 1, 1, Severity.ERROR, str(exc))
        click.echo(diagnostics_json([here]))
        return 1
    services = workspace.stack.service_names if workspace.stack else None
    rules = load_rules(workspace.rule_paths, services)
    diagnostics = [*workspace.diagnostics, *rules.diagnostics]
    errors = sum(d.is_error for d in diagnostics)
    warnings = len(diagnostics) - errors
    if as_json:
        click.echo(diagnostics_json(diagnostics))
    else:
        print_diagnostics(diagnostics)
        checked = f"{len(rules.files)} rule file{'s' * (len(rules.files) != 1)}"
        checked += f", {rules.rule_count} rule{'s' * (rules.rule_count != 1)}"
        if workspace.stack is not None:
            stack = workspace.stack
            count = len(stack.services)
            checked += f", stack {stack.name!r} ({count} service{'s' * (count != 1)})"
        line = f"{summary(errors, warnings)} in {checked}"
        click.echo(line, err=bool(errors))
    return 1 if errors else 0
