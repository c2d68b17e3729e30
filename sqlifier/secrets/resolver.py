"""Secrets delivered to instances: resolved just in time, kept only in memory, audited.

The agent asks `for_instance` just before an instance starts. Each reference its service
declares is resolved (every read recorded in the audit log, with its outcome, never the
value), and delivered as an environment variable, or as a 0600 file in the instance's
private folder (outside `.sqlifier/`, in memory where the machine allows) whose path is the
variable's value. Every value is added to the redactor, so that it is masked wherever it
would appear in output.

A reference that cannot be resolved blocks the instance's start with the provider's error;
one that resolved before in this agent keeps its last value when its provider goes down
(running instances keep theirs anyway). The agent never writes a value anywhere else.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlifier.runtime.private import private_dir
from sqlifier.secrets.errors import SecretError
from sqlifier.secrets.providers import Context, resolve_async
from sqlifier.secrets.redact import MIN_LENGTH, Redactor
from sqlifier.stack.model import SecretRef, Service, Stack
from sqlifier.store.audit import AuditLog

__all__ = ["SecretResolver"]


@dataclass
class _Known:
    value: str
    when: float


class SecretResolver:
    def __init__(
        self,
        stack: Stack,
        env: str,
        state_dir: Path,
        audit: AuditLog,
        environ: Mapping[str, str] | None = None,
        say: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.stack = stack
        self.env = env
        self.state_dir = state_dir
        self.audit = audit
        self.say = say
        self.context = Context(env, state_dir, stack.root, dict(environ or os.environ))
        self.redactor = Redactor()
        self._known: dict[tuple[str, str], _Known] = {}  # (service, reference) -> value
        self._checked: dict[tuple[str, str], float] = {}  # refresh: when last re-resolved

    # --- delivery ----------------------------------------------------------------------

    async def for_instance(self, instance: Any) -> dict[str, str]:
        """The variables to add to an instance's environment."""
        service: Service = instance.service
        out: dict[str, str] = {}
        for name, ref in service.secrets.items():
            value = await self._value(service.name, instance.name, name, ref)
            if ref.file is not None:
                # By id, not name: a replacement starting beside the instance it replaces
                # has the same name, and must not lose its files when that one stops.
                folder = private_dir(self.state_dir, "secrets", instance.id)
                path = folder / Path(ref.file).name
                _write_private(path, value)
                out[name] = str(path)
            else:
                out[name] = value
        return out

    async def _value(self, service: str, instance: str, name: str, ref: SecretRef) -> str:
        target = f"{self.stack.name}/{self.env}/{service}/{instance} {name} <- {ref.ref}"
        try:
            value = await resolve_async(ref.ref, self.context)
        except SecretError as exc:
            known = self._known.get((service, ref.ref))
            if known is None:
                self.audit.record("agent", "secret read", target, f"failed: {exc}")
                raise SecretError(f"{instance}: secret {name}: {exc}") from None
            self.audit.record(
                "agent", "secret read", target, f"failed: {exc}; the last value is used"
            )
            self.say(f"{instance}: secret {name}: {exc}; using the value resolved before")
            return known.value
        self.audit.record("agent", "secret read", target, "ok")
        if len(value) < MIN_LENGTH:
            self.say(
                f"{instance}: secret {name} is shorter than {MIN_LENGTH} characters: "
                "it cannot be masked in output"
            )
        self._known[(service, ref.ref)] = _Known(value, time.time())
        self.redactor.add([value])
        return value

    def forget(self, instance: Any) -> None:
        """An instance stopped: its secret files go."""
        folder = private_dir(self.state_dir, "secrets")
        with contextlib.suppress(OSError):
            shutil.rmtree(folder / instance.id)

    def redact(self, text: str) -> str:
        return self.redactor.redact(text)

    # --- rotation ----------------------------------------------------------------------

    def users(self, reference: str) -> list[str]:
        """The services that declare a reference."""
        return [
            name
            for name, service in self.stack.services_for(self.env).items()
            if any(ref.ref == reference for ref in service.secrets.values())
        ]

    async def changed(self, now: float) -> list[tuple[str, str]]:
        """(service, reference) pairs with `refresh` whose period elapsed and whose
        provider now gives another value than the one delivered."""
        found = []
        for name, service in self.stack.services_for(self.env).items():
            for ref in service.secrets.values():
                if ref.refresh is None:
                    continue
                key = (name, ref.ref)
                last = self._checked.setdefault(key, now)
                if now - last < ref.refresh:
                    continue
                self._checked[key] = now
                known = self._known.get(key)
                try:
                    value = await resolve_async(ref.ref, self.context)
                except SecretError as exc:
                    self.audit.record(
                        "agent", "secret refresh", f"{self.stack.name}/{self.env}/{name} "
                        f"<- {ref.ref}", f"failed: {exc}; running instances keep their value",
                    )  # fmt: skip
                    continue
                if known is not None and known.value != value:
                    found.append(key)
        return found


def _write_private(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    os.chmod(path, 0o600)
