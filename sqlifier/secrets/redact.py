"""Masking secret values in text: instance output, RUN and NOTIFY outputs, error messages.

Every resolved value, and its base64 forms, is replaced by `****` wherever it appears.
Values shorter than MIN_LENGTH characters are not masked (masking `1` would mask every
digit of every line); resolving one says so.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterable

__all__ = ["MASK", "MIN_LENGTH", "Redactor"]

MASK = "****"
MIN_LENGTH = 4


def _forms(value: str) -> set[str]:
    raw = value.encode()
    encoded = {
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
    }
    return {value} | encoded | {e.rstrip("=") for e in encoded}


class Redactor:
    """The values to mask; `redact` is cheap when there are none."""

    def __init__(self) -> None:
        self._values: dict[str, int] = {}  # value -> how many references hold it
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, values: Iterable[str]) -> None:
        with self._lock:
            changed = False
            for value in values:
                if len(value) < MIN_LENGTH:
                    continue
                for form in _forms(value):
                    if form not in self._values:
                        changed = True
                    self._values[form] = self._values.get(form, 0) + 1
            if changed:
                self._compile()

    def _compile(self) -> None:
        forms = sorted(self._values, key=len, reverse=True)  # the longest match first
        self._pattern = re.compile("|".join(re.escape(f) for f in forms)) if forms else None

    def redact(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None or not text:
            return text
        return pattern.sub(MASK, text)

    def __bool__(self) -> bool:
        return self._pattern is not None
