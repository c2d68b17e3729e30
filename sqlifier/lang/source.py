"""Source text and positions: what every token, node and diagnostic points into."""

from __future__ import annotations

from bisect import bisect_right
from typing import NamedTuple

__all__ = ["MAX_FILE_BYTES", "Source", "Span", "UndecodableError", "decode"]


class Span(NamedTuple):
    """A stretch of source: line and column from 1, the end column exclusive.

    A named tuple rather than a dataclass: the parser makes one per node, and tuples are
    the cheapest immutable values Python has.
    """

    line: int
    col: int
    end_line: int
    end_col: int

    def to(self, other: Span) -> Span:
        """The span from the start of this one to the end of `other`."""
        return _new(Span, (self[0], self[1], other[2], other[3]))

    @property
    def start(self) -> tuple[int, int]:
        return (self.line, self.col)

    @property
    def end(self) -> tuple[int, int]:
        return (self.end_line, self.end_col)


_new = tuple.__new__


class Source:
    """A named text with a line index; only `\\n` ends a line."""

    __slots__ = ("_starts", "path", "text")

    def __init__(self, text: str, path: str = "<input>") -> None:
        self.path = path
        self.text = text
        starts = [0]
        find = text.find
        i = find("\n")
        while i != -1:
            starts.append(i + 1)
            i = find("\n", i + 1)
        self._starts = starts

    def position(self, offset: int) -> tuple[int, int]:
        """Line and column (from 1) of a character offset."""
        index = bisect_right(self._starts, offset) - 1
        return index + 1, offset - self._starts[index] + 1

    def line_text(self, line: int) -> str:
        """The text of one line, without its line break; empty past the end."""
        if line < 1 or line > len(self._starts):
            return ""
        start = self._starts[line - 1]
        end = self._starts[line] - 1 if line < len(self._starts) else len(self.text)
        return self.text[start:end]


# Rule files are a few kilobytes; anything this large is a mistake, not a rule file.
MAX_FILE_BYTES = 4 * 1024 * 1024


class UndecodableError(ValueError):
    """Bytes that cannot be a rule file; line and column say where."""

    def __init__(self, message: str, line: int = 1, col: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.col = col


def decode(data: bytes, path: str) -> Source:
    """A Source from a file's bytes: UTF-8 (a BOM is allowed), CRLF and CR read as LF."""
    if len(data) > MAX_FILE_BYTES:
        raise UndecodableError(
            f"the file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB, the most a rule "
            "file may hold (split it into several files)"
        )
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        good = data[: exc.start].decode("utf-8")
        line = good.count("\n") + 1
        col = len(good) - (good.rfind("\n") + 1) + 1
        raise UndecodableError(
            f"the file is not valid UTF-8 (byte 0x{data[exc.start]:02x} at line {line}, "
            f"column {col})",
            line,
            col,
        ) from None
    # CRLF (Windows) and a lone CR (old Macs) both end a line.
    return Source(text.replace("\r\n", "\n").replace("\r", "\n"), path)
