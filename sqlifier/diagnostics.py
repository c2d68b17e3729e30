"""Diagnostics: positioned errors and warnings, printed like a compiler's.

rules/scale.sql:1:23: error: expected a duration after FOR (like 3m or 30s), found '3 minutes'
  ON high_cpu(>80%) FOR 3 minutes
                        ^~~~~~~~~
hint: write the number and the unit together: 3m

The base of the package, beside `errors.py`: it imports nothing from sqlifier, so the error
hierarchy (`DiagnosticsError` carries diagnostics), the rule language and the stack file
reader all build on it without importing each other. `Diagnostic.at` takes any source with
a path and lines and any span with a line and columns (`sqlifier.lang.source` has both).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Diagnostic", "Severity"]

# A source line longer than this is shown as a window around the column.
_SHOWN_LINE = 120


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"


class _Lines(Protocol):
    """A named text whose lines can be read (`sqlifier.lang.source.Source`)."""

    @property
    def path(self) -> str: ...

    def line_text(self, line: int) -> str: ...


class _Place(Protocol):
    """A stretch of a text, from 1 (`sqlifier.lang.source.Span`)."""

    @property
    def line(self) -> int: ...

    @property
    def col(self) -> int: ...

    @property
    def end_line(self) -> int: ...

    @property
    def end_col(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One finding about one place in one file."""

    path: str
    line: int
    col: int
    severity: Severity
    message: str
    hint: str | None = None
    end_col: int | None = None
    source_line: str | None = None

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def headline(self) -> str:
        """`PATH:LINE:COL: error: MESSAGE`."""
        return f"{self.path}:{self.line}:{self.col}: {self.severity.value}: {self.message}"

    def render(self) -> str:
        """The headline, the source line with a caret under the column, the hint."""
        lines = [self.headline()]
        if self.source_line is not None and self.source_line.strip():
            shown, caret_at = _window(self.source_line.replace("\t", " "), self.col - 1)
            width = 1
            if self.end_col is not None and self.end_col > self.col:
                width = min(self.end_col - self.col, len(shown) - caret_at)
            lines.append("  " + shown)
            lines.append("  " + " " * caret_at + "^" + "~" * max(0, width - 1))
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)

    def as_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "line": self.line,
            "col": self.col,
            "severity": self.severity.value,
            "message": self.message,
            "hint": self.hint,
        }

    @classmethod
    def at(
        cls,
        source: _Lines,
        span: _Place,
        message: str,
        *,
        hint: str | None = None,
        severity: Severity = Severity.ERROR,
    ) -> Diagnostic:
        """A diagnostic for `span` in `source`, keeping the line for the caret display."""
        end_col = span.end_col if span.end_line == span.line else None
        return cls(
            path=source.path,
            line=span.line,
            col=span.col,
            severity=severity,
            message=message,
            hint=hint,
            end_col=end_col,
            source_line=source.line_text(span.line),
        )


def _window(line: str, index: int) -> tuple[str, int]:
    """At most _SHOWN_LINE characters of `line` around `index`, and the caret's place."""
    if len(line) <= _SHOWN_LINE:
        return line, min(index, len(line))
    start = max(0, min(index - _SHOWN_LINE // 2, len(line) - _SHOWN_LINE))
    shown = line[start : start + _SHOWN_LINE]
    caret = index - start
    if start > 0:
        shown = "..." + shown[3:]
    if start + _SHOWN_LINE < len(line):
        shown = shown[:-3] + "..."
    return shown, caret
