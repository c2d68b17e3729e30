"""The stack file (`sqlifier.toml`): finding it and reading it into the typed model."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from sqlifier.diagnostics import Diagnostic, Severity
from sqlifier.errors import DiagnosticsError
from sqlifier.lang.source import Source, Span, UndecodableError, decode
from sqlifier.stack.assemble import read_stack
from sqlifier.stack.model import Stack
from sqlifier.stack.names import STACK_FILE, find_stack

__all__ = ["STACK_FILE", "find_stack", "load_stack"]

_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)|\(at end of document\)")


def load_stack(path: Path, display: str | None = None) -> tuple[Stack, list[Diagnostic]]:
    """Read and check a stack file: the stack and its warnings, or DiagnosticsError with
    every problem found."""
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
        stack, diagnostics = read_stack(source, data, path)
    except tomllib.TOMLDecodeError as exc:
        raise DiagnosticsError([_toml_error(source, exc)]) from None
    except RecursionError:
        message = "tables or lists nest too deeply (some hundreds of levels) to be a stack file"
        raise DiagnosticsError([_plain(shown, message)]) from None
    if stack is None:
        raise DiagnosticsError(diagnostics)
    return stack, diagnostics


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
