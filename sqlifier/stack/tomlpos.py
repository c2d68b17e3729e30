"""Where each key and value of a TOML document is written.

`tomllib` reads TOML into plain values and forgets positions; error messages about a
stack file need them (`sqlifier.toml:12:5: error: unknown key 'instnaces'`). This scanner
walks a document that `tomllib` has already accepted and records, for every key path, the
span of the key and of its value. Paths use the same shape as the parsed data: table
names and keys as text, positions in arrays (and arrays of tables) as integers.

    positions = locate(text)
    positions.key(("services", "web", "instances"))    # Span of `instances`
    positions.value(("services", "web", "instances"))  # Span of `2`
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sqlifier.lang.source import Span

__all__ = ["Path", "Positions", "locate"]

Path = tuple[str | int, ...]

_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_SCALAR_END = frozenset(",]}#\n")


@dataclass
class Positions:
    """Key and value spans by path; a path not written (a default) has none."""

    keys: dict[Path, Span] = field(default_factory=dict)
    values: dict[Path, Span] = field(default_factory=dict)

    def key(self, path: Path) -> Span | None:
        """The key's span, or the nearest written parent's."""
        for end in range(len(path), 0, -1):
            span = self.keys.get(path[:end])
            if span is not None:
                return span
        return None

    def value(self, path: Path) -> Span | None:
        """The value's span, falling back to the key's."""
        return self.values.get(path) or self.key(path)


def locate(text: str) -> Positions:
    """Positions of every key and value in a document `tomllib` accepts."""
    scanner = _Scanner(text)
    scanner.document()
    return scanner.positions


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.line = 1
        self.line_start = 0
        self.positions = Positions()
        self.array_tables: dict[Path, int] = {}

    # --- characters -----------------------------------------------------------------------

    def peek(self, ahead: int = 0) -> str:
        at = self.i + ahead
        return self.text[at] if at < len(self.text) else ""

    def advance(self, count: int = 1) -> None:
        for _ in range(count):
            if self.i < len(self.text) and self.text[self.i] == "\n":
                self.line += 1
                self.line_start = self.i + 1
            self.i += 1

    def here(self) -> tuple[int, int]:
        return self.line, self.i - self.line_start + 1

    def span_from(self, start: tuple[int, int]) -> Span:
        line, col = start
        end_line, end_col = self.here()
        return Span(line, col, end_line, end_col)

    def skip(self, newlines: bool) -> None:
        """Blanks and comments; with `newlines`, line breaks too."""
        while self.i < len(self.text):
            char = self.text[self.i]
            if char in " \t\r" or (newlines and char == "\n"):
                self.advance()
            elif char == "#":
                while self.i < len(self.text) and self.text[self.i] != "\n":
                    self.advance()
            else:
                return

    # --- document ---------------------------------------------------------------------------

    def document(self) -> None:
        table: Path = ()
        while True:
            self.skip(newlines=True)
            if self.i >= len(self.text):
                return
            if self.text.startswith("[[", self.i):
                self.advance(2)
                path = self.header(array=True)
                table = (*path, self.array_tables[path] - 1)
            elif self.peek() == "[":
                self.advance()
                table = self.header(array=False)
            else:
                self.pair(table)

    def header(self, array: bool) -> Path:
        self.skip(newlines=False)
        keys = self.dotted_key(())
        path = tuple(key for key, _ in keys)
        if array:
            index = self.array_tables.get(path, 0)
            self.array_tables[path] = index + 1
            self.positions.keys.setdefault((*path, index), keys[-1][1])
        self.skip(newlines=False)
        self.advance(2 if array else 1)  # ] or ]]
        return path

    def pair(self, table: Path) -> None:
        keys = self.dotted_key(table)
        self.skip(newlines=False)
        self.advance()  # =
        self.skip(newlines=False)
        self.value((*table, *(key for key, _ in keys)))

    def dotted_key(self, prefix: Path) -> list[tuple[str, Span]]:
        """`a.b."c"`: each part with its span, recorded under `prefix`."""
        keys: list[tuple[str, Span]] = []
        while True:
            self.skip(newlines=False)
            start = self.here()
            if self.peek() in ('"', "'"):
                name = self.string()
            else:
                begin = self.i
                while self.peek() in _BARE and self.peek():
                    self.advance()
                name = self.text[begin : self.i]
            span = self.span_from(start)
            keys.append((name, span))
            path = (*prefix, *(key for key, _ in keys))
            self.positions.keys.setdefault(path, span)
            self.skip(newlines=False)
            if self.peek() != ".":
                return keys
            self.advance()

    # --- values -----------------------------------------------------------------------------

    def value(self, path: Path) -> None:
        start = self.here()
        char = self.peek()
        if char in ('"', "'"):
            self.string()
        elif char == "[":
            self.array(path)
        elif char == "{":
            self.inline_table(path)
        else:
            while self.i < len(self.text) and self.text[self.i] not in _SCALAR_END:
                self.advance()
            while self.i > 0 and self.text[self.i - 1] in " \t\r":
                self.i -= 1
        self.positions.values.setdefault(path, self.span_from(start))

    def array(self, path: Path) -> None:
        self.advance()  # [
        index = 0
        while True:
            self.skip(newlines=True)
            if self.peek() in ("]", ""):
                self.advance()
                return
            self.value((*path, index))
            index += 1
            self.skip(newlines=True)
            if self.peek() == ",":
                self.advance()

    def inline_table(self, path: Path) -> None:
        self.advance()  # {
        while True:
            self.skip(newlines=False)
            if self.peek() in ("}", ""):
                self.advance()
                return
            keys = self.dotted_key(path)
            self.skip(newlines=False)
            self.advance()  # =
            self.skip(newlines=False)
            self.value((*path, *(key for key, _ in keys)))
            self.skip(newlines=False)
            if self.peek() == ",":
                self.advance()

    def string(self) -> str:
        """Skip a string of any of TOML's four kinds; return its text for keys."""
        quote = self.peek()
        if self.text.startswith(quote * 3, self.i):
            self.advance(3)
            while self.i < len(self.text) and not self.text.startswith(quote * 3, self.i):
                self.advance(2 if quote == '"' and self.peek() == "\\" else 1)
            # A closing delimiter may be followed by up to two more quotes of the content.
            self.advance(3)
            while self.peek() == quote:
                self.advance()
            return ""
        self.advance()
        begin = self.i
        while self.i < len(self.text) and self.peek() != quote:
            self.advance(2 if quote == '"' and self.peek() == "\\" else 1)
        raw = self.text[begin : self.i]
        self.advance()
        if quote == '"' and "\\" in raw:
            try:
                decoded = json.loads(f'"{raw}"')
            except ValueError:
                return raw
            return str(decoded)
        return raw
