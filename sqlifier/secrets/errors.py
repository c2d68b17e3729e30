"""The error every secret provider raises: it names the secret and the environment, never a
value."""

from __future__ import annotations

from sqlifier.errors import UserError

__all__ = ["SecretError"]


class SecretError(UserError):
    """A secret that cannot be stored, found or decrypted; the message says what to do."""

    def __init__(self, message: str, *, name: str | None = None, env: str | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.env = env
