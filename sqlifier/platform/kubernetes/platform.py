"""`KubernetesPlatform`: the platform seam for an environment that runs on a cluster.

    services()        the environment's services, as the stack file resolves them
    instances()       the pods, from a pod watch (`podwatch.py`): listed once, then watched
    stable_release()  the release the pods run (their `sqlifier.dev/release` annotation), else
                      the workload's pod template's
    scale()           the Deployment's or StatefulSet's scale subresource, then waits until
                      the workload is ready (`wait.py`)
    restart()         a rolling restart: the pod template's `sqlifier.dev/restartedAt`
                      annotation set to now, then waits for the rollout
    logs()            each pod's `pods/log`, bounded in lines and bytes, read again every
                      `LOG_POLL` seconds for what is new

The API calls are blocking (the `kubernetes` client's connection pool): the async methods
make them in a worker thread, so the agent's loop never waits on the network.

Canaries, traffic shares, promotion and one-off tasks are not yet on Kubernetes: those
methods raise PlatformError saying so (docs/kubernetes.md, "The agent on Kubernetes").
"""

from __future__ import annotations

import asyncio
import datetime
import re
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from sqlifier.platform import (
    CANARY,
    STABLE,
    InstanceInfo,
    LogLine,
    Platform,
    PlatformError,
    ReleaseRef,
)
from sqlifier.platform.kubernetes.api import Cluster
from sqlifier.platform.kubernetes.errors import ClusterError
from sqlifier.platform.kubernetes.podwatch import Pod, PodWatch
from sqlifier.platform.kubernetes.render_common import LABEL_ENV, LABEL_STACK, Target
from sqlifier.platform.kubernetes.wait import wait_ready
from sqlifier.router.metrics import Counters
from sqlifier.runtime.commands import RunResult
from sqlifier.runtime.logs import classify
from sqlifier.runtime.probes import ProbeResult
from sqlifier.stack.model import Probe, Service, Stack

__all__ = ["RESTARTED_AT", "KubernetesPlatform"]

READY_TIMEOUT = 120.0  # a scaled or restarted workload must be ready within this
LOG_POLL = 1.0  # seconds between two reads of a pod's log
LOG_TAIL = 1000  # lines a read of a pod's log takes at most
LOG_BYTES = 1024 * 1024  # and bytes
RESTARTED_AT = "sqlifier.dev/restartedAt"
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)) (.*)$")


class KubernetesPlatform:
    def __init__(
        self,
        cluster: Cluster,
        stack: Stack,
        env: str,
        ready_timeout: float = READY_TIMEOUT,
        on_change: Callable[[Pod | None, Pod | None], None] | None = None,
    ) -> None:
        self.cluster = cluster
        self.stack = stack
        self.env = env
        self.target = Target.of(stack, env)
        self.specs: Mapping[str, Service] = stack.resolved.get(env, stack.services)
        self.ready_timeout = ready_timeout
        self.watch = PodWatch(
            cluster, {LABEL_STACK: stack.name, LABEL_ENV: env}, on_change=on_change
        )
        self._releases: dict[str, str] = {}

    def start(self) -> None:
        """List the pods, then follow them; ClusterError when the list is refused."""
        self.watch.start()

    def close(self) -> None:
        self.watch.stop()

    # --- what runs ------------------------------------------------------------------

    def services(self) -> Mapping[str, Service]:
        return self.specs

    def stable_release(self, service: str) -> str:
        for pod in self.watch.of(service):
            if pod.track == STABLE and pod.release and not pod.deleting:
                self._releases[service] = pod.release
                return pod.release
        if service not in self._releases:
            try:
                workload = self._get_workload(service)
                template = (workload.get("spec") or {}).get("template") or {}
                annotations = (template.get("metadata") or {}).get("annotations") or {}
                self._releases[service] = str(annotations.get("sqlifier.dev/release", ""))
            except ClusterError:
                return ""
        return self._releases[service]

    def instances(self, service: str, track: str | None = None) -> list[InstanceInfo]:
        found = [_info(pod) for pod in self.watch.of(service)]
        return sorted((i for i in found if track is None or i.track == track), key=lambda i: i.name)

    def set_stable(self, spec: Service, release: ReleaseRef) -> None:
        self._releases[spec.name] = release.version

    def expect_canaries(self, spec: Service, release: ReleaseRef, percent: float) -> None:
        raise _not_yet("a canary", spec.name)

    # --- operating a service -----------------------------------------------------------

    async def scale(self, service: str, count: int, by: str = "stack") -> None:
        """PATCH the scale subresource (`spec.replicas`, nothing else), then wait until the
        workload is ready with `count` replicas."""
        workload = self._workload(service)
        resource = self.cluster.resource("apps/v1", workload["kind"])
        path = resource.path(self.cluster.namespace, service) + "/scale"
        what = f"{workload['kind']} {self.cluster.namespace}/{service}"
        try:
            await asyncio.to_thread(
                self.cluster.request,
                "PATCH",
                path,
                verb="patch",
                what=f"the scale of {what} (asked by {by})",
                resource=resource,
                body={"spec": {"replicas": count}},
                content_type="application/merge-patch+json",
            )
            await self._wait(workload)
        except ClusterError as exc:
            raise PlatformError(str(exc)) from None

    async def restart(self, service: str) -> None:
        """A rolling restart: a new pod template (its restartedAt annotation), which the
        controller rolls out one pod at a time as the workload's strategy says."""
        workload = self._workload(service)
        resource = self.cluster.resource("apps/v1", workload["kind"])
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
        what = f"{workload['kind']} {self.cluster.namespace}/{service}"
        try:
            await asyncio.to_thread(
                self.cluster.request,
                "PATCH",
                resource.path(self.cluster.namespace, service),
                verb="patch",
                what=f"{what} (a rolling restart)",
                resource=resource,
                body=body,
                content_type="application/merge-patch+json",
            )
            await self._wait(workload)
        except ClusterError as exc:
            raise PlatformError(str(exc)) from None

    async def _wait(self, workload: Mapping[str, Any]) -> None:
        timeout = self.ready_timeout
        await asyncio.to_thread(wait_ready, self.cluster, [workload], timeout)

    def _workload(self, service: str) -> dict[str, Any]:
        spec = self.specs.get(service)
        if spec is None:
            known = ", ".join(sorted(self.specs)) or "none"
            raise PlatformError(f"{service} is not a service of this stack; services: {known}")
        kind = "StatefulSet" if spec.stateful else "Deployment"
        return {
            "apiVersion": "apps/v1",
            "kind": kind,
            "metadata": {"name": service, "namespace": self.cluster.namespace},
        }

    def _get_workload(self, service: str) -> dict[str, Any]:
        workload = self._workload(service)
        resource = self.cluster.resource("apps/v1", workload["kind"])
        answer = self.cluster.request(
            "GET",
            resource.path(self.cluster.namespace, service),
            verb="get",
            what=f"{workload['kind']} {self.cluster.namespace}/{service}",
            resource=resource,
        )
        return dict(answer or {})

    # --- a release beside the stable one: the next step on Kubernetes -------------------

    async def start_canaries(self, spec: Service, release: ReleaseRef, count: int) -> list[str]:
        raise _not_yet("a canary", spec.name)

    async def probe(self, service: str, instance: str, probe: Probe) -> ProbeResult:
        raise _not_yet("a warm-up probe", service)

    async def admit(self, service: str, instances: list[str]) -> None:
        raise _not_yet("admitting a canary", service)

    def set_instance_weight(self, service: str, instances: list[str], weight: int) -> None:
        raise _not_yet("an instance's weight", service)

    async def set_canary_share(self, service: str, percent: float) -> None:
        raise _not_yet("a canary's share of traffic", service)

    async def track_counters(self, service: str) -> dict[str, Counters]:
        raise _not_yet("per-track request counters", service)

    async def stop_canaries(self, service: str) -> None:
        raise _not_yet("a canary", service)

    async def promote(self, spec: Service, release: ReleaseRef) -> list[str]:
        raise _not_yet("promoting a canary", spec.name)

    async def retire(self, service: str, instances: list[str]) -> None:
        raise _not_yet("retiring instances", service)

    async def replace(self, spec: Service, release: ReleaseRef) -> None:
        raise _not_yet("a deploy", spec.name)

    async def run_task(
        self, spec: Service, release: ReleaseRef, what: str, command: str, timeout: float
    ) -> RunResult:
        raise _not_yet(f"a one-off command ({what})", spec.name)

    # --- watching -------------------------------------------------------------------

    async def logs(self, service: str, since: float = 0.0) -> AsyncIterator[LogLine]:
        """Each pod's new lines, read every LOG_POLL seconds, at most LOG_TAIL lines and
        LOG_BYTES bytes a read: a chatty pod cannot make the agent read without end."""
        seen: dict[str, tuple[float, int]] = {}  # pod -> newest stamp, lines read
        while True:
            for pod in self.watch.of(service):
                if pod.state == "starting":
                    continue
                for line in await asyncio.to_thread(self._read_log, pod.name, seen, since):
                    yield line
            await asyncio.sleep(LOG_POLL)

    def _read_log(
        self, pod: str, seen: dict[str, tuple[float, int]], since: float
    ) -> list[LogLine]:
        """The lines of `pod` not read before. `seen[pod]` is the newest stamp read and how
        many lines carry it (lines share a stamp; the next read starts at that second), or,
        from a kubelet that gives no stamps, how many lines were read."""
        before, count = seen.get(pod, (since, 0))
        query = [("timestamps", "true"), ("tailLines", str(LOG_TAIL))]
        query.append(("limitBytes", str(LOG_BYTES)))
        if before > 0:
            query.append(("sinceSeconds", str(max(1, int(_now() - before) + 1))))
        path = f"/api/v1/namespaces/{self.cluster.namespace}/pods/{pod}/log"
        try:
            text = self.cluster.request_text(path, what=f"the log of pod {pod}", query=query)
        except ClusterError:
            return []
        lines = [line for line in text.splitlines() if line]
        out = []
        stamped = False
        latest, at_latest = before, count  # the newest stamp so far, lines carrying it
        again = 0  # lines at `before`'s stamp met again: the first `count` were read
        for index, raw in enumerate(lines):
            match = _STAMP.match(raw)
            if match is not None:
                stamped = True
                when, body = _parse_stamp(match.group(1)), match.group(2)
                if when < before:
                    continue
                if when == before and again < count:
                    again += 1
                    continue
                if when > latest:
                    latest, at_latest = when, 0
                if when == latest:
                    at_latest += 1
            else:  # no stamps (a kubelet that ignores them): lines past those read before
                if index < count:
                    continue
                when, body = _now(), raw
            out.append(LogLine(when, pod, classify(body), body))
        seen[pod] = (latest, at_latest) if stamped else (before, len(lines))
        return out


def _info(pod: Pod) -> InstanceInfo:
    return InstanceInfo(
        name=pod.name,
        service=pod.service,
        track=CANARY if pod.track == CANARY else STABLE,
        release=pod.release,
        state=pod.state,
        reason=pod.reason,
        ready=pod.ready,
        held=False,
        draining=pod.deleting,
        restarts=pod.restarts,
        running=pod.state not in ("starting", "crashloop") and not pod.deleting,
    )


def _not_yet(what: str, service: str) -> PlatformError:
    return PlatformError(
        f"{what} for {service} is not yet on Kubernetes: sqlifier's agent there scales, "
        "restarts and watches; deploys with canaries come next (docs/kubernetes.md)"
    )


def _now() -> float:
    return datetime.datetime.now(datetime.UTC).timestamp()


def _parse_stamp(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _conforms(platform: KubernetesPlatform) -> Platform:
    """mypy checks here that KubernetesPlatform is a Platform."""
    return platform
