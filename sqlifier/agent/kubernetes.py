"""The agent of a Kubernetes environment: the same engine, its sources and actions on a cluster.

    connect       the environment's cluster, as kubectl finds it (kubeconfig, context) or
                  in-cluster from the agent Deployment's service account
    platform      `KubernetesPlatform`: pods from a watch, SCALE through the scale
                  subresource, RESTART as a rolling restart
    signals       `KubernetesSignals`: instances from the watch, cpu/memory/rps/error_rate/
                  latency from Prometheus (`platform/kubernetes/promql.py`)
    automation    `Automation`, as locally: the engine every second, decisions, audit,
                  cooldowns, budgets, NOTIFY and RUN
    requests      the CLI's requests as ConfigMaps the agent watches (`kubernetes_requests.py`)

The agent's files (decisions.db, audit.db, engine.json, history.db) are in its state
folder, as locally: in the cluster, the agent Deployment's volume.

Deploys, rollbacks and rollouts are not yet on Kubernetes: a rule's ROLLBACK and the
rollout verbs are answered with a PlatformError's words, recorded as failed decisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlifier.agent.automation import Automation
from sqlifier.agent.kubernetes_requests import (
    LABEL_REQUEST,
    LABEL_STATE,
    answer_request,
    old_answers,
    parse_request,
)
from sqlifier.engine.series import LOG, SeriesStore
from sqlifier.platform.kubernetes.api import Cluster, connect, open_stream
from sqlifier.platform.kubernetes.errors import ClusterError
from sqlifier.platform.kubernetes.platform import KubernetesPlatform
from sqlifier.platform.kubernetes.render_common import LABEL_ENV, LABEL_STACK, Target
from sqlifier.platform.kubernetes.signals import KubernetesSignals
from sqlifier.stack.model import Stack
from sqlifier.store.audit import AuditLog

__all__ = ["KubernetesAgent", "NoRollouts"]

SWEEP_EVERY = 60.0  # seconds between looks for answered requests a CLI left behind


class NoRollouts:
    """The deployer of a Kubernetes environment, until deploys come there: every request
    is refused with the reason."""

    REASON = (
        "deploys, rollbacks and rollouts are not yet on Kubernetes: sqlifier's agent there "
        "scales, restarts and watches (docs/kubernetes.md)"
    )

    async def deploy(self, body: dict[str, Any], who: str) -> tuple[bool, dict[str, Any]]:
        return False, {"error": self.REASON}

    async def approve(self, body: dict[str, Any], who: str) -> tuple[bool, dict[str, Any]]:
        return False, {"error": self.REASON}

    def status(self, deploy_id: str) -> dict[str, Any] | None:
        return None

    async def rollback(self, body: dict[str, Any], who: str) -> tuple[bool, dict[str, Any]]:
        return False, {"error": self.REASON}

    def control(self, service: str, what: str, who: str, why: str = "") -> tuple[bool, str]:
        return False, self.REASON


class KubernetesAgent:
    def __init__(
        self,
        stack: Stack,
        env: str,
        state_dir: Path,
        kubeconfig: Path | None = None,
        say: Callable[[str], None] = lambda _: None,
        clock: Callable[[], float] = time.time,
        cluster: Cluster | None = None,
    ) -> None:
        self.stack = stack
        self.env = env
        self.state_dir = state_dir
        self.target = Target.of(stack, env)
        self.kubeconfig = kubeconfig
        self.say = say
        self.clock = clock
        self.stopping = asyncio.Event()
        self.cluster = cluster
        self.platform: KubernetesPlatform | None = None
        self.signals: KubernetesSignals | None = None
        self.automation: Automation | None = None
        self.requests_answered = 0
        self._requests: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._request_watch: _RequestWatch | None = None

    # --- putting it together ------------------------------------------------------------

    def compose(self) -> Automation:
        """Connect, list the pods and start watching them, build the automation."""
        if self.cluster is None:
            self.cluster = connect(self.target.namespace, self.target.context, self.kubeconfig)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        platform = KubernetesPlatform(self.cluster, self.stack, self.env)
        platform.start()
        self.platform = platform
        kube = self.stack.prometheus
        signals = KubernetesSignals(
            SeriesStore(), platform, kube, kube.gateway, kube.queries, clock=self.clock
        )
        self.signals = signals
        audit = AuditLog(self.state_dir / "audit.db")
        automation = Automation(
            self.stack, self.env, self.state_dir, platform, signals, NoRollouts(), audit,
            lambda text: text, {}, self.say, clock=self.clock,
        )  # fmt: skip
        signals.sources = automation.sources  # `rules explain` says why a signal has no data

        def log_services() -> set[str]:  # pods' logs are read only for a rule that needs them
            found: set[str] = set()
            for rule in automation.engine.rules:
                if any(test.key == LOG for test in rule.tests):
                    found.update(rule.candidates(platform.services()))
            return found

        signals.log_services = log_services
        automation.load()
        self.automation = automation
        return automation

    async def run(self) -> int:
        """Run the rules until `stopping` is set; 0 after a clean stop."""
        automation = await asyncio.to_thread(self.compose)
        assert self.cluster is not None
        loop = asyncio.get_running_loop()
        self._request_watch = _RequestWatch(
            self.cluster, self.stack.name, self.env, loop, self._requests
        )
        self._request_watch.start()
        self.say(
            f"agent of {self.stack.name} ({self.env}) on {self.cluster.where}, namespace "
            f"{self.cluster.namespace}: {len(automation.engine.rules)} rules"
        )
        tasks = [
            asyncio.ensure_future(automation.run()),
            asyncio.ensure_future(self._serve_requests()),
            asyncio.ensure_future(self._sweep()),
        ]
        try:
            await self.stopping.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self.close()
        return 0

    async def close(self) -> None:
        if self._request_watch is not None:
            await asyncio.to_thread(self._request_watch.stop)
        if self.signals is not None:
            await self.signals.close()
        if self.platform is not None:
            await asyncio.to_thread(self.platform.close)
        if self.cluster is not None:
            self.cluster.close()

    # --- the CLI's requests -------------------------------------------------------------

    async def _serve_requests(self) -> None:
        while True:
            obj = await self._requests.get()
            answer = self.handle(parse_request(obj))
            try:
                await asyncio.to_thread(answer_request, self._cluster(), obj, answer)
                self.requests_answered += 1
            except ClusterError as exc:
                self.say(f"requests: cannot answer {obj['metadata']['name']}: {exc}")

    def handle(self, request: dict[str, Any] | None) -> Any:
        """The answer the local API would give to `request` (method, path, body, who)."""
        automation = self.automation
        if request is None:
            return {"ok": False, "error": "not a request: data.request is not JSON"}
        if automation is None:
            return {"ok": False, "error": "the agent is still starting"}
        method, path = request.get("method", "GET"), request["path"]
        body = request.get("body") if isinstance(request.get("body"), dict) else {}
        assert isinstance(body, dict)
        who = str(request.get("who") or "cli")
        if (method, path) == ("GET", "/v1/rules"):
            return automation.listing()
        if (method, path) == ("POST", "/v1/rules/explain"):
            service = body.get("service")
            if service is not None and service not in automation.platform.services():
                known = ", ".join(automation.platform.services())
                return {"ok": False, "error": f"unknown service {service!r}; services: {known}"}
            ok, found = automation.explain(str(body.get("rule", "")), service)
            return {"ok": True, "explain": found} if ok else {"ok": False, "error": found}
        if method == "POST" and path in ("/v1/rules/pause", "/v1/rules/resume"):
            rule = body.get("rule")
            ok, message = automation.pause(rule, who, on=path.endswith("pause"))
            return {"ok": ok, "message": message, "error": message}
        return {
            "ok": False,
            "error": f"{method} {path} is not yet on Kubernetes: the agent there answers "
            "rules list, explain, pause and resume (docs/kubernetes.md)",
        }

    async def _sweep(self) -> None:
        """Answered requests a CLI did not delete (it was stopped): gone after a while."""
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            with contextlib.suppress(ClusterError):
                cluster = self._cluster()
                names = await asyncio.to_thread(
                    old_answers, cluster, self.stack.name, self.env, time.time()
                )
                for name in names:
                    path = f"/api/v1/namespaces/{cluster.namespace}/configmaps/{name}"
                    await asyncio.to_thread(
                        cluster.request, "DELETE", path, verb="delete", what=name
                    )

    def _cluster(self) -> Cluster:
        assert self.cluster is not None
        return self.cluster


class _RequestWatch:
    """Request ConfigMaps not yet answered: listed once, then watched, each new one put on
    the agent's queue (from this thread, through the loop)."""

    def __init__(
        self,
        cluster: Cluster,
        stack: str,
        env: str,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[dict[str, Any]],
    ) -> None:
        self.cluster = cluster
        self.selector = f"{LABEL_STACK}={stack},{LABEL_ENV}={env},{LABEL_REQUEST},!{LABEL_STATE}"
        self.loop = loop
        self.queue = queue
        self.seen: set[str] = set()
        self.error: str | None = None
        self._stopping = threading.Event()
        self._answer: Any = None
        self._thread = threading.Thread(target=self._run, name="request-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        answer = self._answer
        if answer is not None:
            with contextlib.suppress(Exception):
                answer.shutdown()
        self._thread.join(timeout=10)

    def _path(self) -> str:
        return f"/api/v1/namespaces/{self.cluster.namespace}/configmaps"

    def _offer(self, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        uid = str(meta.get("uid"))
        if uid in self.seen or LABEL_STATE in (meta.get("labels") or {}):
            return
        self.seen.add(uid)
        self.loop.call_soon_threadsafe(self.queue.put_nowait, obj)

    def _run(self) -> None:
        version: str | None = None
        pause = 0.2
        while not self._stopping.is_set():
            try:
                if version is None:
                    listed = self.cluster.request(
                        "GET", self._path(), verb="list", what="the requests to the agent",
                        query=[("labelSelector", self.selector)],
                    )  # fmt: skip
                    for item in listed.get("items") or []:
                        self._offer(item)
                    version = str((listed.get("metadata") or {}).get("resourceVersion"))
                query = [
                    ("watch", "1"),
                    ("labelSelector", self.selector),
                    ("resourceVersion", version),
                    ("allowWatchBookmarks", "true"),
                    ("timeoutSeconds", "240"),
                ]
                answer = open_stream(self.cluster, self._path(), query, 270.0)
                self._answer = answer
                buffer = b""
                try:
                    for chunk in answer.stream(64 * 1024, decode_content=True):
                        buffer += chunk
                        while b"\n" in buffer:
                            line, _, buffer = buffer.partition(b"\n")
                            if not line.strip():
                                continue
                            event = json.loads(line)
                            obj = event.get("object") or {}
                            if event.get("type") == "ERROR":
                                version = None
                                break
                            rv = (obj.get("metadata") or {}).get("resourceVersion")
                            if rv:
                                version = str(rv)
                            if event.get("type") == "ADDED":
                                self._offer(obj)
                finally:
                    self._answer = None
                    answer.release_conn()
                pause = 0.2
            except Exception as e:  # the API going away, a dropped stream: taken up again
                if self._stopping.is_set():
                    return
                self.error = f"the request watch broke ({e}); taken up again"
                self._stopping.wait(pause)
                pause = min(5.0, pause * 2)
