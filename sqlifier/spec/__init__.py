"""The stack file: a typed model of `sqlifier.toml`, read once at the edge."""

from __future__ import annotations

from sqlifier.spec.stackfile import STACK_FILE, Stack, find_stack, load_stack

__all__ = ["STACK_FILE", "Stack", "find_stack", "load_stack"]
