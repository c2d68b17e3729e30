"""What each route of the agent's API does: the routing table and its endpoints.

Endpoints get typed requests (`requests.py`) and return a status and a JSON value; they
reach the running stack only through the platform (`sqlifier.platform`), deploys through
the deployer (`rollouts.py`), rules through the automation, and the agent itself through
`Host` — the composition root, which owns the phase, the status and the shutdown.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from sqlifier.agent.api import Reply, Route
from sqlifier.agent.automation import Automation
from sqlifier.agent.openapi import OPENAPI
from sqlifier.agent.requests import (
    ById,
    Deploy,
    Empty,
    Explain,
    Rollback,
    Rollout,
    Rotate,
    RuleSwitch,
    Scale,
    Service,
    Traffic,
    as_body,
)
from sqlifier.agent.rollouts import Rollouts
from sqlifier.agent.secretsync import SecretSync
from sqlifier.platform import Platform, PlatformError
from sqlifier.runtime.space import SPACE, free_bytes
from sqlifier.store.audit import AuditLog

__all__ = ["Endpoints", "Host"]

Outcome = tuple[bool, dict[str, Any]]  # the deployer's answer: done, and its record


class Host(Protocol):
    """The agent, as its endpoints see it."""

    @property
    def phase(self) -> str: ...

    @property
    def automation(self) -> Automation | None: ...

    def status(self) -> dict[str, Any]: ...

    def saved(self) -> None:
        """The agent's record (agent.json) written again after a change."""
        ...

    def stop(self) -> None: ...

    def dashboard_login(self, who: str) -> dict[str, Any]:
        """A one-time login link to the web dashboard for `who`, or why there is none."""
        ...


class Endpoints:
    def __init__(
        self,
        target: str,  # "stack/env", as the audit log names it
        host: Host,
        platform: Platform,
        routed: Callable[[], list[str]],
        deployer: Rollouts,
        secrets: SecretSync,
        audit: AuditLog,
    ) -> None:
        self.target = target
        self.host = host
        self.platform = platform
        self.routed = routed
        self.deployer = deployer
        self.secrets = secrets
        self.audit = audit

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/v1/status", Empty, self.status),
            Route("GET", "/v1/openapi.json", Empty, self.openapi),
            Route("POST", "/v1/shutdown", Empty, self.shutdown),
            Route("POST", "/v1/scale", Scale, self.scale),
            Route("POST", "/v1/restart", Service, self.restart),
            Route("POST", "/v1/traffic", Traffic, self.traffic),
            Route("GET", "/v1/rules", Empty, self.rules),
            Route("POST", "/v1/rules/explain", Explain, self.explain),
            Route("POST", "/v1/rules/pause", RuleSwitch, self.pause),
            Route("POST", "/v1/rules/resume", RuleSwitch, self.resume),
            Route("POST", "/v1/secrets/rotate", Rotate, self.rotate),
            Route("POST", "/v1/deploy", Deploy, self.deploy),
            Route("POST", "/v1/deploy/approve", ById, self.approve),
            Route("POST", "/v1/deploy/status", ById, self.deploy_status),
            Route("POST", "/v1/rollback", Rollback, self.rollback),
            Route("POST", "/v1/rollout", Rollout, self.rollout),
            Route("POST", "/v1/dashboard/login", Empty, self.dashboard_login),
        ]

    # --- the agent and its services ---------------------------------------------------

    async def status(self, _: Empty, who: str) -> Reply:
        return 200, {**self.host.status(), "disk": self.disk()}

    def disk(self) -> dict[str, Any]:
        """The filesystem of the state folder: free bytes, whether it is low (log lines are
        being dropped), and what the lack of space has cost so far."""
        free = free_bytes(self.audit.path.parent)
        problems = []
        if SPACE.dropped:
            problems.append(f"{SPACE.dropped} log lines dropped")
        if self.audit.reserve_released:
            problems.append("the audit log is using its reserve")
        info_error = getattr(self.host, "info_error", None)
        if info_error:
            problems.append(f"{info_error} (ps asks the agent)")
        return {
            "free": free,
            "low": SPACE.low(self.audit.path.parent),
            "logs_dropped": SPACE.dropped,
            "audit_reserve_used": self.audit.reserve_released,
            "problems": problems,
        }

    async def dashboard_login(self, _: Empty, who: str) -> Reply:
        return 200, self.host.dashboard_login(who)

    async def openapi(self, _: Empty, who: str) -> Reply:
        return 200, OPENAPI

    async def shutdown(self, _: Empty, who: str) -> Reply:
        self.audit.record(who, "down", self.target, "ok")
        self.host.stop()
        return 200, {"stopping": True}

    async def scale(self, request: Scale, who: str) -> Reply:
        return await self._operate("scale", request.service, request.instances, who)

    async def restart(self, request: Service, who: str) -> Reply:
        return await self._operate("restart", request.service, None, who)

    async def _operate(self, what: str, name: str, count: int | None, who: str) -> Reply:
        services = self.platform.services()
        if name not in services:
            return 404, {"error": f"unknown service {name!r}; services: {', '.join(services)}"}
        target = f"{self.target}/{name}"
        try:
            if count is not None:
                await self.platform.scale(name, count, by=f"cli:{who}")
                target += f" to {count}"
            else:
                await self.platform.restart(name)
        except PlatformError as exc:
            self.audit.record(who, what, target, f"failed: {exc}")
            self.host.saved()
            return 200, {"ok": False, "error": str(exc), "status": self.host.status()}
        self.audit.record(who, what, target, "ok")
        self.host.saved()
        return 200, {"ok": True, "status": self.host.status()}

    async def traffic(self, request: Traffic, who: str) -> Reply:
        name, share = request.service, request.canary_percent
        routed = self.routed()
        if name not in routed:
            listed = ", ".join(routed) or "none"
            return 404, {"error": f"{name!r} is not a service with routes; routed: {listed}"}
        await self.platform.set_canary_share(name, float(share))
        self.audit.record(who, "traffic", f"{self.target}/{name} canary {share:g}%", "ok")
        return 200, {"ok": True, "canary_percent": share}

    async def rotate(self, request: Rotate, who: str) -> Reply:
        return 200, await self.secrets.rotate(request.name, who)

    # --- rules --------------------------------------------------------------------------

    async def rules(self, _: Empty, who: str) -> Reply:
        automation = self.host.automation
        if automation is None:
            return _starting()
        return 200, automation.listing()

    async def explain(self, request: Explain, who: str) -> Reply:
        automation = self.host.automation
        if automation is None:
            return _starting()
        services = self.platform.services()
        if request.service is not None and request.service not in services:
            unknown = f"unknown service {request.service!r}; services: {', '.join(services)}"
            return 200, {"ok": False, "error": unknown}
        ok, found = automation.explain(request.rule, request.service)
        return 200, {"ok": True, "explain": found} if ok else {"ok": False, "error": found}

    async def pause(self, request: RuleSwitch, who: str) -> Reply:
        return self._switch(request.rule, who, on=True)

    async def resume(self, request: RuleSwitch, who: str) -> Reply:
        return self._switch(request.rule, who, on=False)

    def _switch(self, rule: str | None, who: str, on: bool) -> Reply:
        automation = self.host.automation
        if automation is None:
            return _starting()
        ok, message = automation.pause(rule, who, on)
        return 200, {"ok": ok, "message": message, "error": message}

    # --- deploys (deployer.py) ----------------------------------------------------------

    async def deploy(self, request: Deploy, who: str) -> Reply:
        return await self._delivery(lambda: self.deployer.deploy(as_body(request), who))

    async def approve(self, request: ById, who: str) -> Reply:
        return await self._delivery(lambda: self.deployer.approve(as_body(request), who))

    async def rollback(self, request: Rollback, who: str) -> Reply:
        return await self._delivery(lambda: self.deployer.rollback(as_body(request), who))

    async def deploy_status(self, request: ById, who: str) -> Reply:
        async def status() -> Outcome:
            found = self.deployer.status(request.id)
            return found is not None, found or {"error": f"no deploy {request.id!r}"}

        return await self._delivery(status)

    async def rollout(self, request: Rollout, who: str) -> Reply:
        async def control() -> Outcome:
            why = request.reason or ""
            done, message = self.deployer.control(request.service, request.action, who, why)
            return done, {"message": message, "error": message}

        return await self._delivery(control)

    async def _delivery(self, call: Callable[[], Awaitable[Outcome]]) -> Reply:
        phase = self.host.phase
        if phase != "running":
            return 200, {"ok": False, "error": f"the stack is {phase}; deploys need it up"}
        ok, data = await call()
        return 200, {**data, "ok": ok}


def _starting() -> Reply:
    return 200, {"ok": False, "error": "the stack is still starting; rules run once it is up"}
