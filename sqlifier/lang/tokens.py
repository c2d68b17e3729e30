"""The tokenizer: source text to tokens with positions, and the comments beside them.

Words are all IDENT tokens; the parser decides which are keywords (case-insensitive), so
`service` can be both a keyword (`ROLLBACK service 'x'`) and a field (`service.name`).
A number glued to letters or `%` is one QUANTITY token (`80%`, `3m`, `512MiB`). Anything
the tokenizer cannot read becomes an ERROR token carrying its message, so the parser
reports it in place and recovers at the next `;`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import NamedTuple

from sqlifier.lang.source import Span

__all__ = ["Comment", "Kind", "Token", "tokenize"]


class Kind(enum.Enum):
    IDENT = "identifier"
    NUMBER = "number"
    QUANTITY = "quantity"
    STRING = "string"
    OP = "symbol"
    ERROR = "error"
    EOF = "end of file"


class Token(NamedTuple):
    """One token on one line; `value`: the word in upper case (IDENT), the string unescaped,
    the number, or (message, hint) for an ERROR.

    A named tuple, made with `_new(Token, (...))`: tokens are the most numerous objects the
    language makes, and this is the cheapest immutable record Python has.
    """

    kind: Kind
    text: str
    value: object
    offset: int
    line: int
    col: int

    @property
    def end(self) -> int:
        return self.offset + len(self.text)

    @property
    def end_line(self) -> int:
        return self.line

    @property
    def end_col(self) -> int:
        return self.col + len(self.text)

    @property
    def span(self) -> Span:
        line, col = self[4], self[5]
        return _new(Span, (line, col, line, col + len(self[1])))


_new = tuple.__new__


@dataclass(frozen=True, slots=True)
class Comment:
    """A comment as written (several side by side on one line are one), with whether it
    stood on its own line and whether it runs to the end of the line (`--`)."""

    text: str
    span: Span
    own_line: bool
    blank_before: bool
    ends_line: bool = False


# Blanks are skipped as the prefix of every match; the groups are numbered for dispatch on
# `lastindex` (the number group's unit is group 3, so a quantity ends on 3, a number on 2).
# A block comment is matched by its opening only and its end found with str.find, so an
# unterminated one costs one scan, not one per `/*`.
_TOKEN = re.compile(
    r"""[ \t\r\f\v]*(?:
     ([A-Za-z_][A-Za-z0-9_]*)
    |([0-9]+(?:\.[0-9]+)?)([A-Za-z_%][A-Za-z0-9_%]*)?
    |('(?:[^'\n]|'')*')
    |(--[^\n]*)
    |(/\*)
    |(<=|>=|!=|<>|==|[-+*/(),;.=<>])
    |(\n)
    |('(?:[^'\n]|'')*)
    |("[^"\n]*"?)
    |([^ \t\r\f\v])
    )""",
    re.VERBOSE | re.ASCII,
)
_IDENT, _NUMBER, _QUANTITY, _STRING, _LCOMMENT, _BCOMMENT, _OP, _NL = range(1, 9)
_GROUP_NAMES = {9: "badstring", 10: "dstring", 11: "bad"}
# Longer numbers are "too large" for the parser; reading them as float never fails.
_MAX_DIGITS = 20

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class _CommentRun:
    """Comments side by side on one line, which the printer keeps together."""

    __slots__ = ("blank_before", "end", "own_line", "parts", "start")

    def __init__(self, text: str, start: Span, end: Span, own_line: bool, blank: bool) -> None:
        self.parts = [text]
        self.start = start
        self.end = end
        self.own_line = own_line
        self.blank_before = blank

    def comment(self) -> Comment:
        return Comment(
            " ".join(self.parts),
            self.start.to(self.end),
            self.own_line,
            self.blank_before,
            ends_line=self.parts[-1].startswith("--"),
        )


def tokenize(text: str) -> tuple[list[Token], list[Comment]]:  # noqa: PLR0915 (one hot loop)
    """Split `text` into tokens (ending with EOF) and comments."""
    tokens: list[Token] = []
    runs: list[_CommentRun] = []
    append = tokens.append
    match = _TOKEN.match
    ident, op = Kind.IDENT, Kind.OP
    line = 1
    line_start = 0
    # The line of the last token or comment, for "own line" and "blank before".
    last_line = 0
    token_line = 0
    tokens_since = False
    pos = 0
    while (m := match(text, pos)) is not None:
        pos = m.end()
        group: int = m.lastindex  # type: ignore[assignment]  # every match has a group
        start = m.start(group)
        if group == _IDENT:
            part = m.group(group)
            append(_new(Token, (ident, part, part.upper(), start, line, start - line_start + 1)))
        elif group == _OP:
            append(_new(Token, (op, m.group(group), None, start, line, start - line_start + 1)))
        elif group == _NL:
            line += 1
            line_start = start + 1
            continue
        elif group in (_NUMBER, _QUANTITY):
            start = m.start(_NUMBER)
            number = m.group(_NUMBER)
            if "." in number or len(number) > _MAX_DIGITS:
                amount: int | float = float(number)
            else:
                amount = int(number)
            kind = Kind.QUANTITY if group == _QUANTITY else Kind.NUMBER
            append(
                _new(
                    Token,
                    (kind, text[start:pos], amount, start, line, start - line_start + 1),
                )
            )
        elif group in (_LCOMMENT, _BCOMMENT):
            if group == _BCOMMENT:
                close = text.find("*/", start + 2)
                if close == -1:
                    # Everything after an unterminated /* is comment: one error, then stop.
                    append(_error("bopen", "/*", start, line, start - line_start + 1))
                    break
                pos = close + 2
            part = text[start:pos]
            col = start - line_start + 1
            end_line = line + part.count("\n")
            end_col = col + len(part) if end_line == line else len(part) - part.rfind("\n")
            comment_text = part.rstrip() if group == _LCOMMENT else part
            span = Span(line, col, end_line, end_col)
            if runs and runs[-1].end.end_line == line and not tokens_since:
                runs[-1].parts.append(comment_text)
                runs[-1].end = span
            else:
                blank = last_line != 0 and line - last_line > 1
                runs.append(_CommentRun(comment_text, span, span, token_line != line, blank))
            tokens_since = False
            if end_line != line:
                line = end_line
                line_start = start + part.rfind("\n") + 1
            last_line = line
            continue
        elif group == _STRING:
            append(_string(m.group(group), start, line, start - line_start + 1))
        else:
            part = m.group(group)
            append(_error(_GROUP_NAMES[group], part, start, line, start - line_start + 1))
        token_line = last_line = line
        tokens_since = True
    eof_col = len(text) - line_start + 1
    tokens.append(_new(Token, (Kind.EOF, "", None, len(text), line, eof_col)))
    return tokens, [run.comment() for run in runs]


def _string(part: str, start: int, line: int, col: int) -> Token:
    control = _CONTROL.search(part)
    if control:
        char = control.group()
        at = control.start()
        return Token(
            Kind.ERROR,
            part[at],
            (f"control character U+{ord(char):04X} inside a string", None),
            start + at,
            line,
            col + at,
        )
    value = part[1:-1].replace("''", "'") if "''" in part else part[1:-1]
    return _new(Token, (Kind.STRING, part, value, start, line, col))


_ERRORS: dict[str, tuple[str, str | None]] = {
    "bopen": ("unterminated comment: '/*' is never closed by '*/'", None),
    "badstring": (
        "unterminated string: a string must close with ' on the same line",
        "write '' for a quote inside a string",
    ),
    "dstring": ("strings use single quotes", None),
}


def _error(group: str, part: str, start: int, line: int, col: int) -> Token:
    message: tuple[str, str | None]
    if group == "dstring":
        inner = part[1:-1] if len(part) > 1 and part.endswith('"') else part[1:]
        message = ("strings use single quotes, not double quotes", f"write '{inner}'")
        width = len(part)
    elif group in _ERRORS:
        message = _ERRORS[group]
        width = 2 if group == "bopen" else len(part)
    else:
        char = part
        shown = repr(char) if char.isprintable() and char != "'" else f"U+{ord(char):04X}"
        hint = None
        if char in "!":
            hint = "use != for 'not equal', or NOT"
        elif char in {"{", "}"}:
            hint = "braces belong inside NOTIFY messages, like 'scaled {service.name}'"
        elif char == '"':
            hint = "strings use single quotes"
        elif char == "%":
            hint = "write the percent sign right after the number, like 80%"
        message = (f"unexpected character {shown}", hint)
        width = 1
    # The token's text is what the caret underlines.
    return Token(Kind.ERROR, part[: max(1, width)], message, start, line, col)
