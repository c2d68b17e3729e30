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


class Token:
    """One token; `value`: the word in upper case, the string unescaped, the number, or
    (message, hint) for an ERROR."""

    __slots__ = ("col", "end", "end_col", "end_line", "kind", "line", "offset", "text", "value")

    def __init__(
        self,
        kind: Kind,
        text: str,
        value: object,
        offset: int,
        line: int,
        col: int,
        end_line: int,
        end_col: int,
    ) -> None:
        self.kind = kind
        self.text = text
        self.value = value
        self.offset = offset
        self.end = offset + len(text)
        self.line = line
        self.col = col
        self.end_line = end_line
        self.end_col = end_col

    @property
    def span(self) -> Span:
        return Span(self.line, self.col, self.end_line, self.end_col)

    def __repr__(self) -> str:
        return f"Token({self.kind.name}, {self.text!r}, {self.line}:{self.col})"


@dataclass(frozen=True, slots=True)
class Comment:
    """A comment as written, with whether it stood on its own line."""

    text: str
    span: Span
    own_line: bool
    blank_before: bool


_TOKEN = re.compile(
    r"""
     (?P<ws>[ \t\r\f\v]+)
    |(?P<nl>\n)
    |(?P<lcomment>--[^\n]*)
    |(?P<bcomment>/\*.*?\*/)
    |(?P<bopen>/\*)
    |(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<unit>[A-Za-z_%][A-Za-z0-9_%]*)?
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<string>'(?:[^'\n]|'')*')
    |(?P<badstring>'(?:[^'\n]|'')*)
    |(?P<dstring>"[^"\n]*"?)
    |(?P<op><=|>=|!=|<>|==|[-+*/(),;.=<>])
    |(?P<bad>.)
    """,
    re.VERBOSE | re.DOTALL | re.ASCII,
)

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def tokenize(text: str) -> tuple[list[Token], list[Comment]]:  # noqa: PLR0915 (one hot loop)
    """Split `text` into tokens (ending with EOF) and comments."""
    tokens: list[Token] = []
    comments: list[Comment] = []
    append = tokens.append
    line = 1
    line_start = 0
    # The line of the last token or comment, for "own line" and "blank before".
    last_line = 0
    token_line = 0
    tokens_since = False
    for m in _TOKEN.finditer(text):
        group = m.lastgroup
        if group == "ws":
            continue
        start = m.start()
        if group == "nl":
            line += 1
            line_start = start + 1
            continue
        part = m.group()
        col = start - line_start + 1
        if group in ("ident", "op"):
            kind = Kind.IDENT if group == "ident" else Kind.OP
            word = part.upper() if group == "ident" else None
            append(Token(kind, part, word, start, line, col, line, col + len(part)))
        elif group in {"number", "unit"}:
            number = m.group("number")
            amount = float(number) if "." in number else int(number)
            kind = Kind.QUANTITY if m.group("unit") else Kind.NUMBER
            append(Token(kind, part, amount, start, line, col, line, col + len(part)))
        elif group == "string":
            append(_string(part, start, line, col))
        elif group in ("lcomment", "bcomment"):
            end_line = line + part.count("\n")
            end_col = col + len(part) if end_line == line else len(part) - part.rfind("\n")
            text_ = part.rstrip() if group == "lcomment" else part
            span = Span(line, col, end_line, end_col)
            previous = comments[-1] if comments else None
            if previous is not None and previous.span.end_line == line and not tokens_since:
                # Comments side by side on one line are one comment for the printer.
                comments[-1] = Comment(
                    previous.text + " " + text_,
                    previous.span.to(span),
                    previous.own_line,
                    previous.blank_before,
                )
            else:
                comments.append(
                    Comment(
                        text_,
                        span,
                        own_line=token_line != line,
                        blank_before=last_line != 0 and line - last_line > 1,
                    )
                )
            tokens_since = False
            if end_line != line:
                line = end_line
                line_start = start + part.rfind("\n") + 1
            last_line = line
            continue
        else:
            append(_error(group or "bad", part, start, line, col))
        token_line = last_line = line
        tokens_since = True
    eof_col = len(text) - line_start + 1
    tokens.append(Token(Kind.EOF, "", None, len(text), line, eof_col, line, eof_col))
    return tokens, comments


def _string(part: str, start: int, line: int, col: int) -> Token:
    control = _CONTROL.search(part)
    if control:
        char = control.group()
        return Token(
            Kind.ERROR,
            part,
            (f"control character U+{ord(char):04X} inside a string", None),
            start,
            line,
            col + control.start(),
            line,
            col + control.start() + 1,
        )
    value = part[1:-1].replace("''", "'")
    return Token(Kind.STRING, part, value, start, line, col, line, col + len(part))


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
        message = (f"unexpected character {shown}", hint)
        width = 1
    return Token(Kind.ERROR, part, message, start, line, col, line, col + max(1, width))
