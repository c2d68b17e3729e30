"""The stack file (`sqlifier.toml`): finding it, reading it, and its first checks.

This stage checks what the rule language needs: valid TOML, the documented top-level
tables, the stack's name and rule patterns, and the names of its services. The full typed
model (services, probes, environments) builds on it.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from sqlifier.errors import DiagnosticsError
from sqlifier.lang.errors import Diagnostic, Severity, did_you_mean, quote
from sqlifier.lang.source import Source, Span, UndecodableError, decode
from sqlifier.spec.tomlpos import locate

__all__ = ["STACK_FILE", "TOP_LEVEL", "Stack", "find_stack", "load_stack"]

STACK_FILE = "sqlifier.toml"
TOP_LEVEL = ("stack", "environments", "services", "router", "engine", "notify", "prometheus")
DEFAULT_RULES = ("rules/*.sql",)
_SERVICE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)|\(at end of document\)")


@dataclass(frozen=True, slots=True)
class Stack:
    """What the rest of sqlifier needs from a stack file at this stage."""

    path: Path
    name: str
    rules: tuple[str, ...]
    services: tuple[str, ...]
    environments: tuple[str, ...]

    @property
    def root(self) -> Path:
        return self.path.parent

    def rule_files(self) -> list[Path]:
        """The files the `rules` patterns match, in a stable order."""
        found: dict[Path, None] = {}
        for pattern in self.rules:
            for path in sorted(self.root.glob(pattern)):
                if path.is_file():
                    found[path] = None
        return list(found)


def find_stack(start: Path) -> Path | None:
    """The nearest `sqlifier.toml` in `start` or its parents."""
    start = start.resolve()
    for folder in (start, *start.parents):
        candidate = folder / STACK_FILE
        if candidate.is_file():
            return candidate
    return None


def load_stack(path: Path, display: str | None = None) -> Stack:
    """Read and check a stack file; raise DiagnosticsError with every problem found."""
    shown = display or str(path)
    try:
        source = decode(path.read_bytes(), shown)
    except OSError as exc:
        raise DiagnosticsError(
            [_plain(shown, f"cannot read the stack file: {exc.strerror}")]
        ) from None
    except UndecodableError as exc:
        raise DiagnosticsError([_plain(shown, exc.message, exc.line, exc.col)]) from None
    try:
        data = tomllib.loads(source.text)
    except tomllib.TOMLDecodeError as exc:
        raise DiagnosticsError([_toml_error(source, exc)]) from None
    checker = _Checker(source, data)
    stack = checker.run(path)
    if checker.diagnostics:
        raise DiagnosticsError(checker.diagnostics)
    return stack


class _Checker:
    def __init__(self, source: Source, data: dict[str, object]) -> None:
        self.source = source
        self.data = data
        self.positions = locate(source.text)
        self.diagnostics: list[Diagnostic] = []

    def error(self, span: Span, message: str, hint: str | None = None) -> None:
        self.diagnostics.append(Diagnostic.at(self.source, span, message, hint=hint))

    def locate(self, *path: str) -> Span:
        return self.positions.key(path) or Span(1, 1, 1, 2)

    def run(self, path: Path) -> Stack:
        for key in self.data:
            if key not in TOP_LEVEL:
                self.error(
                    self.locate(key),
                    f"unknown top-level table {quote(key)}; valid: {', '.join(TOP_LEVEL)}",
                    did_you_mean(key, TOP_LEVEL),
                )
        tables = {key: self.table(key) for key in TOP_LEVEL}
        stack = tables["stack"]
        if "stack" not in self.data:
            self.error(
                Span(1, 1, 1, 2),
                "the stack file needs a [stack] table with a name",
                'add:  [stack]  name = "shop"',
            )
        name = stack.get("name", path.parent.name)
        if not isinstance(name, str) or not name:
            self.error(self.locate("stack", "name"), 'stack.name must be text, like "shop"')
            name = path.parent.name
        rules = stack.get("rules", list(DEFAULT_RULES))
        if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules):
            self.error(
                self.locate("stack", "rules"),
                'stack.rules must be a list of file patterns, like ["rules/*.sql"]',
            )
            rules = list(DEFAULT_RULES)
        services = self.names("services", tables["services"])
        environments = self.names("environments", tables["environments"])
        return Stack(path, name, tuple(rules), services, environments)

    def table(self, key: str) -> dict[str, object]:
        value = self.data.get(key, {})
        if not isinstance(value, dict):
            self.error(self.locate(key), f"{key} must be a table, like [{key}]")
            return {}
        return value

    def names(self, key: str, table: dict[str, object]) -> tuple[str, ...]:
        names = []
        for name, value in table.items():
            span = self.locate(key, name)
            if not isinstance(value, dict):
                self.error(span, f"{key}.{name} must be a table, like [{key}.{name}]")
                continue
            if key == "services" and not _SERVICE_NAME.match(name):
                self.error(
                    span,
                    f"invalid service name {quote(name)}: use lower-case letters, digits and "
                    "'-', starting with a letter (at most 63 characters)",
                )
                continue
            names.append(name)
        return tuple(names)


def _plain(path: str, message: str, line: int = 1, col: int = 1) -> Diagnostic:
    return Diagnostic(path, line, col, Severity.ERROR, message)


def _toml_error(source: Source, exc: tomllib.TOMLDecodeError) -> Diagnostic:
    text = str(exc)
    match = _TOML_POSITION.search(text)
    message = _TOML_POSITION.sub("", text).strip()
    if match and match.group(1):
        line, col = int(match.group(1)), int(match.group(2))
    else:
        line = source.text.count("\n") + 1
        col = len(source.line_text(line)) + 1
    span = Span(line, col, line, col + 1)
    return Diagnostic.at(source, span, f"invalid TOML: {message[:1].lower()}{message[1:]}")
