"""Printing diagnostics, as compiler-style text or as JSON."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

import click

from sqlifier.errors import UserError
from sqlifier.lang.errors import Diagnostic
from sqlifier.lang.units import base_value

__all__ = ["diagnostics_json", "duration_option", "print_diagnostics", "summary"]


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


def duration_option(text: str, option: str = "--since", examples: str = "30m, 24h or 7d") -> float:
    """A duration given on the command line (`30m`, `24h`, `7d`), in seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise UserError(f"{option} {text}: expected a duration like {examples}")
    seconds = base_value(float(match.group(1)), match.group(2))
    if seconds > LONGEST_OPTION:
        raise UserError(f"{option} {text}: at most 3650d (ten years), like {examples}")
    return seconds


# The longest duration an option takes: sqlifier keeps no older history, and no wait is
# meant to outlast it.
LONGEST_OPTION = 3650 * 86400.0
