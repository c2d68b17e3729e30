"""Where the stack file is and what its names may be: the little a command needs before
it reads the stack (`sqlifier ps` asks the running agent, and reads no more than this).

Only the standard library is imported here.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["DEFAULT_ENV", "ENV_NAME", "SERVICE_NAME", "STACK_FILE", "find_stack"]

STACK_FILE = "sqlifier.toml"

# What a service or environment may be called: names of folders, files and metrics.
SERVICE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}\Z")
ENV_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}\Z")

DEFAULT_ENV = "dev"


def find_stack(start: Path) -> Path | None:
    """The nearest `sqlifier.toml` in `start` or its parents."""
    start = start.resolve()
    for folder in (start, *start.parents):
        candidate = folder / STACK_FILE
        if candidate.is_file():
            return candidate
    return None
