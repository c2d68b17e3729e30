"""The one error hierarchy of sqlifier.

    SqlifierError              anything sqlifier reports to a user on purpose
    ├── UserError              bad input or a refused operation: exit code 1
    │   ├── DiagnosticsError   one or more positioned diagnostics (file:line:col)
    │   └── NotAvailable       a command or action that is planned but not built yet
    └── (anything else)        a bug in sqlifier: exit code 2

Errors carry their context (file, line, column, service, release); only the CLI turns
them into messages and exit codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlifier.diagnostics import Diagnostic

__all__ = ["DiagnosticsError", "NotAvailable", "SqlifierError", "UserError"]


class SqlifierError(Exception):
    """Base class of every error sqlifier raises on purpose."""


class UserError(SqlifierError):
    """Bad input or a refused operation; the message says what would be valid."""


class DiagnosticsError(UserError):
    """Input that failed validation, with every positioned diagnostic found."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = tuple(diagnostics)
        first = self.diagnostics[0] if self.diagnostics else None
        super().__init__(first.headline() if first else "invalid input")


class NotAvailable(UserError):
    """A command or action that is planned but not built yet."""
