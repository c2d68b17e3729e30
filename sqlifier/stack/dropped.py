"""What a check of the stack reader returns for a value it has reported and drops.

Its own module so that every reader of a part of the stack file (`reader.py`, `slo.py`,
...) returns the one value the reader's tables leave out, whichever is imported first.
"""

from __future__ import annotations

from typing import Any

__all__ = ["INVALID"]

INVALID: Any = object()
