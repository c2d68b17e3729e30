"""The rule language's errors and message helpers.

`ParseError` abandons one statement inside the parser and becomes a `Diagnostic` there;
`did_you_mean` and `quote` word the messages of the language and the stack file alike.
`Diagnostic` and `Severity` live in `sqlifier.diagnostics` (the dependency-free base) and
are named here too, as the rule language's findings.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from sqlifier.diagnostics import Diagnostic, Severity
from sqlifier.errors import SqlifierError
from sqlifier.lang.source import Span

__all__ = ["Diagnostic", "ParseError", "Severity", "did_you_mean", "quote"]


class ParseError(SqlifierError):
    """Raised inside the parser to abandon one statement; becomes a Diagnostic."""

    def __init__(self, span: Span, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.span = span
        self.message = message
        self.hint = hint


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A 'did you mean X?' hint for a misspelt `word`, or None when nothing is close."""
    options = list(choices)
    lowered = {c.lower(): c for c in options}
    if word.lower() in lowered:
        return f"did you mean {quote(lowered[word.lower()])}?"
    # Short words differ by one letter at most ('OM' for 'ON'), long ones by a few.
    cutoff = 0.5 if len(word) <= 4 else 0.7
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=cutoff)
    if close:
        return f"did you mean {quote(lowered[close[0]])}?"
    return None


def quote(text: str, limit: int = 40) -> str:
    """`text` in single quotes for a message, shortened when long."""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return "'" + text + "'"
