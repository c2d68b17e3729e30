"""The stack file: a typed model of `sqlifier.toml`, read once at the edge."""

from __future__ import annotations

from sqlifier.stack.model import Service, Stack
from sqlifier.stack.stackfile import STACK_FILE, find_stack, load_stack

__all__ = ["STACK_FILE", "Service", "Stack", "find_stack", "load_stack"]
