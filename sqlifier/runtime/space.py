"""Free space on the filesystem that holds a stack's state, and what gives way first.

When `.sqlifier/` fills up, what matters is that the controls keep working: the agent's
record, the audit log, the decisions. Instance logs are the bulk of what is written, so
they give way first: below `LOW_FREE` bytes free (a sixteenth of a smaller filesystem),
a log line is dropped and counted (`dropped`) instead of written, leaving the rest for
the state. Asking the filesystem is cheap but not free, so the answer is kept for a second
(`Space.low`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LOW_FREE", "SPACE", "Space", "free_bytes"]

LOW_FREE = 4 * 1024 * 1024  # below this many bytes free, log lines are dropped
_RECHECK = 1.0  # seconds an answer is kept


def free_bytes(path: Path) -> int | None:
    """Bytes an unprivileged writer can still use on the filesystem of `path` (None when
    it cannot be asked)."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


@dataclass
class Space:
    """Whether a folder's filesystem is low on space, asked at most once a second, and how
    many log lines were dropped for it."""

    low_free: int = LOW_FREE
    clock: Callable[[], float] = time.monotonic
    dropped: int = 0  # log lines dropped because the disk is (nearly) full
    _seen: dict[Path, tuple[float, bool]] = field(default_factory=dict)

    def low(self, folder: Path) -> bool:
        now = self.clock()
        seen = self._seen.get(folder)
        if seen is not None and now - seen[0] < _RECHECK:
            return seen[1]
        try:
            stats = os.statvfs(folder)
        except OSError:
            low = False
        else:
            # A small filesystem keeps a sixteenth of itself, not the whole mark.
            mark = min(self.low_free, stats.f_blocks * stats.f_frsize // 16)
            low = stats.f_bavail * stats.f_frsize < mark
        self._seen[folder] = (now, low)
        return low

    def drop(self, lines: int) -> None:
        self.dropped += lines


SPACE = Space()  # the process's own: the agent's log writers and its status share it
