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
from typing import Final, NamedTuple

from sqlifier.lang import collector
from sqlifier.lang.source import Span

__all__ = [
    "COL",
    "KIND",
    "LINE",
    "OFFSET",
    "TEXT",
    "VALUE",
    "Comment",
    "Kind",
    "RawToken",
    "Token",
    "scan",
    "tokenize",
]


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
    the number, or (message, hint) for an ERROR."""

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

# The parser reads tokens as plain tuples with the fields of Token, by position: tokens
# are the most numerous objects the language makes, and a plain tuple costs a third of a
# named one to make and to read.
RawToken = tuple[Kind, str, object, int, int, int]
KIND: Final = 0
TEXT: Final = 1
VALUE: Final = 2
OFFSET: Final = 3
LINE: Final = 4
COL: Final = 5


@dataclass(frozen=True, slots=True)
class Comment:
    """A comment as written (several side by side on one line are one), with whether it
    stood on its own line and whether it runs to the end of the line (`--`)."""

    text: str
    span: Span
    own_line: bool
    blank_before: bool
    ends_line: bool = False


# Every match is the blanks before a token, then the token; `findall` hands them over as
# pairs without making a match object for each, and as the matches follow each other
# without gaps (only trailing blanks are left over), offsets are running sums of lengths.
# The token's first character tells its kind. A block comment runs to the first `*/` or,
# unterminated, to the end of the text, so that either way it is one scan. Possessive
# repeats (`*+`) never give back what they matched: the same matches, less bookkeeping.
# Except in a closed string, which must give back: `'a''` is the string 'a', then a `'`.
_TOKEN = re.compile(
    r"""([ \t\r\f\v]*+)(
     [A-Za-z_][A-Za-z0-9_]*+
    |<=|>=|!=|<>|==|[(),;.=+*<>]|-(?!-)|/(?!\*)
    |\n
    |[0-9]++(?:\.[0-9]++)?+(?:[A-Za-z_%][A-Za-z0-9_%]*+)?+
    |'(?:[^'\n]|'')*'
    |'(?:[^'\n]|'')*+
    |--[^\n]*+
    |/\*(?:[^*]|\*(?!/))*+(?:\*/)?+
    |"[^"\n]*+"?+
    |[^ \t\r\f\v]
    )""",
    re.VERBOSE | re.ASCII,
)
_WORD_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_OPERATORS = frozenset(
    ("<=", ">=", "!=", "<>", "==", "(", ")", ",", ";", ".", "=", "+", "-", "*", "/", "<", ">")
)
_DIGITS = frozenset("0123456789")
# A number is digits with at most one '.', and its unit (if any) starts with neither.
_NUMBER_CHARS = "0123456789."
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


class _Comments:
    """Gathers comments into runs, and knows where the last token and comment were."""

    __slots__ = ("last_line", "runs", "token_line", "tokens_since")

    def __init__(self) -> None:
        self.runs: list[_CommentRun] = []
        # The line of the last token or comment, for "own line" and "blank before".
        self.last_line = 0
        self.token_line = 0
        self.tokens_since = False

    def token(self, line: int) -> None:
        self.token_line = self.last_line = line
        self.tokens_since = True

    def add(self, part: str, line: int, col: int) -> bool:
        """Record comment `part` (starting at `line`, `col`); whether it ends on a later line."""
        runs = self.runs
        end_line = line + part.count("\n")
        end_col = col + len(part) if end_line == line else len(part) - part.rfind("\n")
        comment_text = part.rstrip() if part.startswith("--") else part
        span = Span(line, col, end_line, end_col)
        if runs and runs[-1].end.end_line == line and not self.tokens_since:
            runs[-1].parts.append(comment_text)
            runs[-1].end = span
        else:
            blank = self.last_line != 0 and line - self.last_line > 1
            runs.append(_CommentRun(comment_text, span, span, self.token_line != line, blank))
        self.tokens_since = False
        self.last_line = end_line
        return end_line != line

    def comments(self) -> list[Comment]:
        return [run.comment() for run in self.runs]


def tokenize(text: str) -> tuple[list[Token], list[Comment]]:
    """Split `text` into tokens (ending with EOF) and comments."""
    with collector.paused():
        tokens, comments = scan(text)
        return [_new(Token, token) for token in tokens], comments


def scan(text: str) -> tuple[list[RawToken], list[Comment]]:
    """`tokenize`, with the tokens as plain tuples."""
    tokens: list[RawToken] = []
    comments = _Comments()
    append = tokens.append
    ident, op = Kind.IDENT, Kind.OP
    line = 1
    line_start = 0
    end = 0
    # The tokens of one line are made before it is known whether a comment follows them,
    # so the comment bookkeeping learns about them once per line, not once per token.
    line_has_tokens = False
    for blanks, part in _TOKEN.findall(text):
        start = end + len(blanks)
        end = start + len(part)
        first = part[0]
        if first in _WORD_START:
            append((ident, part, part.upper(), start, line, start - line_start + 1))
        elif part in _OPERATORS:
            append((op, part, None, start, line, start - line_start + 1))
        elif first == "\n":
            if line_has_tokens:
                comments.token(line)
                line_has_tokens = False
            line += 1
            line_start = end
            continue
        elif first in _DIGITS:
            append(_number(part, start, line, start - line_start + 1))
        elif first == "'":
            append(_string(part, start, line, start - line_start + 1))
        elif part.startswith(("--", "/*")):
            if part.startswith("/*") and (len(part) < 4 or not part.endswith("*/")):
                # Everything after an unterminated /* is comment: one error, then stop.
                append(_error("bopen", "/*", start, line, start - line_start + 1))
                break
            if line_has_tokens:
                comments.token(line)
                line_has_tokens = False
            if comments.add(part, line, start - line_start + 1):
                line += part.count("\n")
                line_start = start + part.rfind("\n") + 1
            continue
        else:
            name = "dstring" if first == '"' else "bad"
            append(_error(name, part, start, line, start - line_start + 1))
        line_has_tokens = True
    eof_col = len(text) - line_start + 1
    tokens.append((Kind.EOF, "", None, len(text), line, eof_col))
    return tokens, comments.comments()


def _number(part: str, start: int, line: int, col: int) -> RawToken:
    unit = part.lstrip(_NUMBER_CHARS)
    number = part[: len(part) - len(unit)]
    amount = float(number) if "." in number or len(number) > _MAX_DIGITS else int(number)
    kind = Kind.QUANTITY if unit else Kind.NUMBER
    return (kind, part, amount, start, line, col)


def _string(part: str, start: int, line: int, col: int) -> RawToken:
    # Without its closing quote on the same line, the pattern took the rest of the line.
    if len(part) == 1 or part[-1] != "'":
        return _error("badstring", part, start, line, col)
    # Printable text (nearly every string) holds no control character: skip the search.
    control = None if part.isprintable() else _CONTROL.search(part)
    if control:
        char = control.group()
        at = control.start()
        message = (f"control character U+{ord(char):04X} inside a string", None)
        return (Kind.ERROR, part[at], message, start + at, line, col + at)
    value = part[1:-1].replace("''", "'") if "''" in part else part[1:-1]
    return (Kind.STRING, part, value, start, line, col)


_ERRORS: dict[str, tuple[str, str | None]] = {
    "bopen": ("unterminated comment: '/*' is never closed by '*/'", None),
    "badstring": (
        "unterminated string: a string must close with ' on the same line",
        "write '' for a quote inside a string",
    ),
    "dstring": ("strings use single quotes", None),
}


def _error(group: str, part: str, start: int, line: int, col: int) -> RawToken:
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
    return (Kind.ERROR, part[: max(1, width)], message, start, line, col)
