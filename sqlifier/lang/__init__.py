"""The rule language: tokens -> parser -> ast -> checker / printer.

    from sqlifier.lang import parse_source, check, format_file

    source.py     text, positions (Span), decoding files
    tokens.py     text -> tokens and comments
    parser.py     tokens -> AST (recursive descent, recovery at ';')
    ast.py        the syntax tree
    checker.py    meaning: errors and warnings, with check_signals.py, check_conditions.py
                  and check_actions.py on check_base.py
    printer.py    canonical text (what `sqlifier fmt` writes)
    analysis.py   a rollout's analysis expressions: what one may hold
    signals.py, fields.py, units.py, cron.py   the catalogues the checker reads
    errors.py     ParseError and the wording of messages (did you mean, quotes)
    collector.py  the cycle collector paused while a tree is built

Imports nothing from the rest of sqlifier but the dependency-free base (`errors`,
`diagnostics`), and no I/O: the contracts in pyproject.toml keep it so.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlifier.diagnostics import Diagnostic, Severity
    from sqlifier.lang.checker import check, rule_label
    from sqlifier.lang.parser import parse as parse_source
    from sqlifier.lang.printer import format_file, format_rule
    from sqlifier.lang.source import Source, UndecodableError, decode

__all__ = [
    "Diagnostic",
    "Severity",
    "Source",
    "UndecodableError",
    "check",
    "decode",
    "format_file",
    "format_rule",
    "parse_source",
    "rule_label",
]

# Each name is imported when first asked for: a command that needs only the language's
# positions or messages (`sqlifier.lang.errors`, `.source`) does not pay for the parser
# and the checker, which a start-up of `sqlifier ps` would otherwise load.
_WHERE = {
    "Diagnostic": ("sqlifier.diagnostics", "Diagnostic"),
    "Severity": ("sqlifier.diagnostics", "Severity"),
    "check": ("sqlifier.lang.checker", "check"),
    "rule_label": ("sqlifier.lang.checker", "rule_label"),
    "parse_source": ("sqlifier.lang.parser", "parse"),
    "format_file": ("sqlifier.lang.printer", "format_file"),
    "format_rule": ("sqlifier.lang.printer", "format_rule"),
    "Source": ("sqlifier.lang.source", "Source"),
    "UndecodableError": ("sqlifier.lang.source", "UndecodableError"),
    "decode": ("sqlifier.lang.source", "decode"),
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _WHERE[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value
