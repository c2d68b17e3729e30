"""What the agent's API and its rules need of the deployer, as one Protocol.

The deployer (`deployer.py`) carries out deploys and rollbacks; the API's endpoints and
the rules' ROLLBACK and ROLLOUT actions only ask it things. They see it through this
interface, so the composition root is the one place that knows the concrete class, and
mypy checks there that it fits.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["Rollouts"]


class Rollouts(Protocol):
    async def deploy(self, body: dict[str, Any], who: str) -> tuple[bool, dict[str, Any]]:
        """Start a deploy of a made release; (False, {"error"}) when refused."""
        ...

    async def approve(self, body: dict[str, Any], who: str) -> tuple[bool, dict[str, Any]]:
        """The second approval of a deploy awaiting one."""
        ...

    def status(self, deploy_id: str) -> dict[str, Any] | None:
        """A deploy's or rollback's record, or None."""
        ...

    async def rollback(self, body: dict[str, Any], who: str) -> tuple[bool, dict[str, Any]]:
        """Roll a service back, traffic first."""
        ...

    def control(self, service: str, what: str, who: str, why: str = "") -> tuple[bool, str]:
        """Abort, pause or resume the rollout of `service`."""
        ...
