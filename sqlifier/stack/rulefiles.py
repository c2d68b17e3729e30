"""Reading rule files from disk into parsed, checked rules."""

from __future__ import annotations

import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlifier.diagnostics import Diagnostic, Severity
from sqlifier.lang import ast
from sqlifier.lang.checker import check
from sqlifier.lang.parser import parse
from sqlifier.lang.source import MAX_FILE_BYTES, Source, UndecodableError, decode

__all__ = ["LoadedFile", "RuleSet", "load_rule_file", "load_rules"]


@dataclass(frozen=True, slots=True)
class LoadedFile:
    """One rule file: its source and rules when it could be read, and what was wrong."""

    display: str
    source: Source | None
    rules: ast.RuleFile | None
    diagnostics: tuple[Diagnostic, ...]


@dataclass(slots=True)
class RuleSet:
    files: list[LoadedFile]
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(d.is_error for d in self.diagnostics)

    @property
    def warnings(self) -> int:
        return sum(not d.is_error for d in self.diagnostics)

    @property
    def rule_count(self) -> int:
        return sum(len(f.rules.rules) for f in self.files if f.rules is not None)


def read_source(path: Path, display: str) -> Source | Diagnostic:
    """The decoded text of a file, or a diagnostic saying why it cannot be read."""
    try:
        data = _read(path) if display != "-" else _stdin()
    except IsADirectoryError:
        return Diagnostic(display, 1, 1, Severity.ERROR, "is a directory, not a rule file")
    except _NotAFile:
        return Diagnostic(display, 1, 1, Severity.ERROR, "is not a regular file")
    except OSError as exc:
        return Diagnostic(display, 1, 1, Severity.ERROR, f"cannot read the file: {exc.strerror}")
    try:
        return decode(data, display)
    except UndecodableError as exc:
        return Diagnostic(display, exc.line, exc.col, Severity.ERROR, exc.message)


class _NotAFile(OSError):
    pass


def _read(path: Path) -> bytes:
    """At most one byte more than a rule file may hold (so /dev/zero ends), and never a
    FIFO or device (which could block)."""
    if path.exists() and not path.is_dir() and not path.is_file():
        raise _NotAFile(path)
    with path.open("rb") as handle:
        return handle.read(MAX_FILE_BYTES + 1)


def _stdin() -> bytes:
    return sys.stdin.buffer.read(MAX_FILE_BYTES + 1)


def load_rule_file(path: Path, display: str) -> LoadedFile:
    """Read and parse one rule file (no meaning checks)."""
    source = read_source(path, display)
    if isinstance(source, Diagnostic):
        return LoadedFile(display, None, None, (source,))
    rules, diagnostics = parse(source)
    return LoadedFile(display, source, rules, tuple(diagnostics))


def load_rules(
    paths: Sequence[tuple[Path, str]], services: Collection[str] | None = None
) -> RuleSet:
    """Read, parse and check rule files together; diagnostics in file order."""
    files = [load_rule_file(path, display) for path, display in paths]
    parsed = [(f.source, f.rules) for f in files if f.source is not None and f.rules is not None]
    meaning = check(parsed, services)
    by_path: dict[str, list[Diagnostic]] = {}
    for diagnostic in meaning:
        by_path.setdefault(diagnostic.path, []).append(diagnostic)
    result = RuleSet(files)
    for loaded in files:
        merged = [*loaded.diagnostics, *by_path.get(loaded.display, [])]
        result.diagnostics.extend(sorted(merged, key=lambda d: (d.line, d.col)))
    return result
