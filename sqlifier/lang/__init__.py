"""The rule language: tokens -> parser -> ast -> checker / printer.

from sqlifier.lang import parse_source, check, format_file
"""

from __future__ import annotations

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
