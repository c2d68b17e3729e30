"""Delivering changed secrets to the instances that use them.

A local secret's new version (`sqlifier secret rotate`, through the API) and a reference
with `refresh` whose value changed both reach a service the same way: its instances are
restarted one at a time through the platform, each drained before it stops, and each new
one resolves its secrets as it starts. Every delivery is in the audit log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlifier.platform import Platform, PlatformError
from sqlifier.secrets.local import LocalStore
from sqlifier.secrets.resolver import SecretResolver
from sqlifier.store.audit import AuditLog

__all__ = ["SecretSync"]

REFRESH_EVERY = 1.0  # seconds between looks at references with `refresh`


class SecretSync:
    def __init__(
        self,
        target: str,  # "stack/env", as the audit log names it
        env: str,
        state_dir: Path,
        platform: Platform,
        resolver: SecretResolver,
        audit: AuditLog,
        say: Callable[[str], None],
    ) -> None:
        self.target = target
        self.env = env
        self.state_dir = state_dir
        self.platform = platform
        self.resolver = resolver
        self.audit = audit
        self.say = say

    async def refresh(self) -> None:
        """References with `refresh`: re-resolved on their period; a changed value is
        delivered like a rotation (one instance at a time, through the drain path)."""
        while True:
            await asyncio.sleep(REFRESH_EVERY)
            try:
                changed = await self.resolver.changed(time.time())
            except Exception as exc:  # never end the loop; say why
                self.say(f"secrets: refresh failed: {type(exc).__name__}: {exc}")
                continue
            for service in sorted({service for service, _ in changed}):
                refs = ", ".join(ref for name, ref in changed if name == service)
                await self.deliver(service, "agent", f"refresh: {refs} changed")

    async def rotate(self, name: str, who: str) -> dict[str, Any]:
        """Deliver the local secret `name`'s current version to every service using it."""
        store = LocalStore(self.state_dir, self.env)
        info = store.info(name)
        if info is None:
            return {"ok": False, "error": f"no secret {name} in {self.env}"}
        results = {}
        for service in self.resolver.users(f"secret://local/{name}"):
            results[service] = await self.deliver(service, who, f"{name} version {info.version}")
        if all(result == "ok" for result in results.values()):
            store.mark_delivered(name, info.version)
        return {"ok": True, "version": info.version, "services": results}

    async def deliver(self, service: str, who: str, why: str) -> str:
        target = f"{self.target}/{service}"
        try:
            await self.platform.restart(service)
        except PlatformError as exc:
            self.audit.record(who, "secret rotate", f"{target} ({why})", f"failed: {exc}")
            return f"failed: {exc}"
        self.audit.record(who, "secret rotate", f"{target} ({why})", "ok")
        return "ok"
