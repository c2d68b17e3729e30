"""What the agent measures every second on a cluster, written into the series store.

- **The pod watch.** Running and ready stable pods per service (`instances`,
  `ready_instances`), and a `restart` event for each restart a pod's containers count.
- **Pod logs.** Each service's pods' log lines (`KubernetesPlatform.logs`: bounded reads
  of `pods/log`), classified, as `log` events carrying their level's rank, for log() and
  log_error(); masked by `redact` first. One task per service whose logs a rule reads
  (`log_services`), started at the first step that needs it.
- **Prometheus.** cpu (cores per pod, the mean over the service's pods, and `cpu_share`,
  the same as a share of the pod's CPU limit) and memory (working-set bytes, mean per pod,
  and `memory_share` of the limit) from cAdvisor's series; rps, error_rate and
  latency_p50 ... latency_p99 from the gateway's series (`promql.py`). Each query runs in a
  task of its own, never two at once for the same service and signal; a tick does not wait
  for them: a value lands when Prometheus answers, and an answer that does not come leaves
  the signal to go stale ("no data"), with the reason in `sources`.

It has what `Automation` reads of the local samplers: `store`, `traffic` (None: there is
no router of sqlifier's here) and `step(t)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping

from sqlifier.engine.series import LOG, RESTART, SeriesStore
from sqlifier.lang.signals import LOG_LEVELS
from sqlifier.platform import STABLE
from sqlifier.platform.kubernetes.platform import KubernetesPlatform
from sqlifier.platform.kubernetes.podwatch import Pod
from sqlifier.platform.kubernetes.promql import (
    QUANTILES,
    WINDOW,
    fill,
    pods_regex,
    query_vector,
    templates,
)
from sqlifier.signals.samplers import RouterHistory
from sqlifier.signals.totals import RouterTotals
from sqlifier.stack.model import Prometheus

__all__ = ["KubernetesSignals"]


class KubernetesSignals:
    def __init__(
        self,
        store: SeriesStore,
        platform: KubernetesPlatform,
        prometheus: Prometheus,
        gateway: str | None = None,
        queries: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        window: str = WINDOW,
        redact: Callable[[str], str] = lambda text: text,
    ) -> None:
        self.store = store
        # No router of sqlifier's: traffic comes from the gateway, through Prometheus.
        self.traffic: RouterHistory | None = None
        self.router_totals = RouterTotals()
        self.log_totals: dict[str, dict[str, int]] = {}  # log() is not yet read there
        self.instances: dict[str, dict[str, object]] = {}
        self.platform = platform
        self.url = prometheus.url
        self.timeout = prometheus.timeout
        self.templates = templates(gateway, queries or {})
        self.clock = clock
        self.window = window  # $window: rate() divides by all of it, so a young series reads low
        self.redact = redact
        # The services whose logs a rule reads (the agent says; by default every service):
        # a pod's log is only read when something needs it.
        self.log_services: Callable[[], Iterable[str]] = self.platform.services
        self.sources: dict[str, str] = {}  # signal -> why it has no data
        self.queries_sent = 0
        self._restarts: dict[str, int] = {}  # pod -> restarts seen
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._logs: dict[str, asyncio.Task[None]] = {}

    # --- every tick -----------------------------------------------------------------

    def step(self, t: float) -> None:
        pods = self.platform.watch.snapshot()
        by_service: dict[str, list[Pod]] = {}
        for pod in pods:
            if pod.track == STABLE:
                by_service.setdefault(pod.service, []).append(pod)
        for service in self.platform.services():
            mine = by_service.get(service, [])
            running = [
                p for p in mine if not p.deleting and p.state not in ("starting", "crashloop")
            ]
            self.store.put(service, "instances", t, len(running))
            self.store.put(service, "ready_instances", t, sum(p.ready for p in running))
        self._count_restarts(pods, t)
        for service in self.log_services():
            if service not in self._logs:
                self._logs[service] = asyncio.ensure_future(self._follow(service, t))
        if self.url is not None:
            for service in self.platform.services():
                live = [p for p in by_service.get(service, []) if not p.deleting]
                self._ask(service, live)
        elif self.templates:
            self.sources["cpu"] = "no [prometheus] url in the stack file"

    def _count_restarts(self, pods: list[Pod], t: float) -> None:
        seen = {}
        for pod in pods:
            before = self._restarts.get(pod.name)
            if before is not None:
                for _ in range(pod.restarts - before):
                    self.store.add(pod.service, RESTART, t)
            seen[pod.name] = pod.restarts
        self._restarts = seen

    # --- logs -----------------------------------------------------------------------

    async def _follow(self, service: str, since: float) -> None:
        """The service's new log lines as `log` events, as they come."""
        totals = self.log_totals.setdefault(service, {})
        info = LOG_LEVELS["info"]
        async for line in self.platform.logs(service, since):
            totals[line.level] = totals.get(line.level, 0) + 1
            rank = LOG_LEVELS.get(line.level, info)
            self.store.add_many(service, LOG, self.clock(), [(rank, self.redact(line.text))])

    # --- Prometheus -----------------------------------------------------------------

    def _ask(self, service: str, pods: list[Pod]) -> None:
        values = {
            "namespace": self.platform.cluster.namespace,
            "service": service,
            "pods": pods_regex([p.name for p in pods]),
            "window": self.window,
        }
        for signal, template in self.templates.items():
            if signal in ("cpu", "memory") and not pods:
                continue  # no pod: no sample, the signal goes stale
            key = (service, signal)
            running = self._tasks.get(key)
            if running is not None and not running.done():
                continue
            self._tasks[key] = asyncio.ensure_future(
                self._query(service, signal, template, values, pods)
            )

    async def _query(
        self,
        service: str,
        signal: str,
        template: str,
        values: Mapping[str, str],
        pods: list[Pod],
    ) -> None:
        url = self.url or ""
        if signal == "latency":
            for q in QUANTILES:
                promql = fill(template, {**values, "quantile": f"{q / 100:g}"})
                self.queries_sent += 1
                result = await query_vector(url, promql, self.timeout)
                self._put(service, f"latency_p{q}", signal, result.series.get(""), result.error)
            return
        by = "pod" if signal in ("cpu", "memory") else ""
        promql = fill(template, values)
        self.queries_sent += 1
        result = await query_vector(url, promql, self.timeout, by)
        if signal not in ("cpu", "memory"):
            self._put(service, signal, signal, result.series.get(""), result.error)
            return
        names = {p.name for p in pods}
        per_pod = [v for pod, v in result.series.items() if pod in names]
        if not per_pod:
            self._put(service, signal, signal, None, result.error or "no series for its pods")
            return
        mean = sum(per_pod) / len(per_pod)
        self._put(service, signal, signal, mean, None)
        limits = [p.cpu_limit if signal == "cpu" else p.memory_limit for p in pods]
        known = [float(limit) for limit in limits if limit]
        if known:
            self._put(service, f"{signal}_share", signal, mean / (sum(known) / len(known)), None)

    def _put(
        self, service: str, key: str, signal: str, value: float | None, error: str | None
    ) -> None:
        if value is None:
            self.sources[signal] = f"prometheus: {error or 'no data'}"
            return
        self.sources.pop(signal, None)
        self.store.put(service, key, self.clock(), value)

    async def close(self) -> None:
        for task in [*self._tasks.values(), *self._logs.values()]:
            task.cancel()
        for task in [*self._tasks.values(), *self._logs.values()]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
