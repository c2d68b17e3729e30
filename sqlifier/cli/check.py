"""`sqlifier check`: validate the stack file and rule files."""

from __future__ import annotations

import click

from sqlifier.cli.options import STACK_FILE_OF_FILES
from sqlifier.cli.output import diagnostics_json, print_diagnostics, summary
from sqlifier.cli.workspace import resolve
from sqlifier.errors import UserError
from sqlifier.lang.errors import Diagnostic, Severity
from sqlifier.stack.crosscheck import scale_port_warnings
from sqlifier.stack.limitcheck import limit_share_warnings
from sqlifier.stack.rulefiles import load_rules

__all__ = ["command"]


@click.command("check")
@click.argument("files", nargs=-1, type=click.Path())
@STACK_FILE_OF_FILES
@click.option("--json", "as_json", is_flag=True, help="Print the diagnostics as JSON on stdout.")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too (for CI).")
def command(files: tuple[str, ...], stack_file: str | None, as_json: bool, strict: bool) -> int:
    """Check the stack file and rule files; exit 1 on any error (with --strict, on any
    warning too).

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
    if workspace.stack is not None:
        parsed = [(f.source, f.rules) for f in rules.files if f.source and f.rules]
        diagnostics = _in_file_order(diagnostics, scale_port_warnings(workspace.stack, parsed))
        diagnostics = _in_file_order(diagnostics, limit_share_warnings(workspace.stack, parsed))
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
        failed = errors or (strict and warnings)
        click.echo(
            line + (" (--strict: warnings fail)" if failed and not errors else ""), err=bool(failed)
        )
    return 1 if errors or (strict and warnings) else 0


def _in_file_order(diagnostics: list[Diagnostic], more: list[Diagnostic]) -> list[Diagnostic]:
    """`more` merged into `diagnostics`: files in the order they came, by line within each."""
    order = {path: index for index, path in enumerate(dict.fromkeys(d.path for d in diagnostics))}
    merged = [*diagnostics, *more]
    return sorted(merged, key=lambda d: (order.get(d.path, len(order)), d.line, d.col))
