"""The running stack as the rule engine sees it, read through the platform.

The engine asks for a service's view at every tick (`engine.compiled.ServiceView`): how
many instances run, how many are ready, the release, the labels. Only stable instances
that run count: canaries are the rollout's, and an instance that is draining or waiting
to be started again serves nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlifier.engine.compiled import ServiceView
from sqlifier.engine.series import SeriesStore
from sqlifier.platform import STABLE, InstanceInfo, Platform

__all__ = ["LiveWorld"]


class LiveWorld:
    def __init__(
        self,
        store: SeriesStore,
        platform: Platform,
        env: str,
        rolled_back_from: Mapping[str, str],
    ) -> None:
        self.store = store  # the signals the engine reads
        self.platform = platform
        self.env = env
        self.locks: dict[str, str] = {}  # service -> who holds its lock (not this agent)
        # service -> the release its live one was rolled back from (the deployer's)
        self.rolled_back_from = rolled_back_from

    def service(self, name: str) -> ServiceView | None:
        spec = self.platform.services().get(name)
        if spec is None:
            return None
        running = [i for i in in_service(self.platform, name) if i.running and not i.draining]
        ready = sum(i.ready for i in running)
        release = running[0].release if running else self.platform.stable_release(name)
        return ServiceView(
            name,
            len(running),
            ready,
            self.env,
            spec.labels,
            release,
            rolled_back_from=self.rolled_back_from.get(name),
        )


def in_service(platform: Platform, service: str) -> list[InstanceInfo]:
    """The stable instances of `service`, one per name: a replacement being started
    shares its name with the instance it replaces, which is listed first and counts."""
    seen: dict[str, InstanceInfo] = {}
    for instance in platform.instances(service, STABLE):
        seen.setdefault(instance.name, instance)
    return list(seen.values())
