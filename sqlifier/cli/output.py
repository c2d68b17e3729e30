"""Printing diagnostics, as compiler-style text or as JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable

import click

from sqlifier.lang.errors import Diagnostic

__all__ = ["diagnostics_json", "print_diagnostics", "summary"]


def print_diagnostics(diagnostics: Iterable[Diagnostic]) -> None:
    """Each diagnostic on stderr: the headline, the line with a caret, the hint."""
    for diagnostic in diagnostics:
        click.echo(diagnostic.render(), err=True)


def diagnostics_json(diagnostics: Iterable[Diagnostic]) -> str:
    return json.dumps([d.as_json() for d in diagnostics], indent=2)


def summary(errors: int, warnings: int) -> str:
    parts = []
    if errors:
        parts.append(f"{errors} error{'s' * (errors != 1)}")
    if warnings:
        parts.append(f"{warnings} warning{'s' * (warnings != 1)}")
    return " and ".join(parts) or "no problems"
