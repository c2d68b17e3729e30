"""The pods of one stack and environment, as a watch keeps them: listed once, then watched.

`PodWatch` lists the environment's pods once (by label: `sqlifier.dev/stack` and
`sqlifier.dev/env`), then follows a WATCH from the list's resourceVersion, in a thread of
its own: nothing ever lists the whole set again, unless the API server says the version is
too old (410 Gone), when it lists once more. What it keeps of each pod is a small summary
(`Pod`), not the object: a thousand pods cost a few hundred kilobytes.

A watch that breaks (the API server restarted, the network) is taken up again from the
last version seen, after a pause that grows to `MAX_PAUSE`; `error` says why meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlifier.platform.kubernetes.api import Cluster, open_stream
from sqlifier.platform.kubernetes.errors import ClusterError
from sqlifier.platform.kubernetes.render_common import LABEL_SERVICE, LABEL_TRACK

__all__ = ["Pod", "PodWatch", "summarize"]

WATCH_SECONDS = 240  # the API server ends a watch after this; it is taken up at once
MAX_PAUSE = 5.0
RELEASE = "sqlifier.dev/release"


@dataclass(frozen=True, slots=True)
class Pod:
    """What the agent keeps of a pod."""

    name: str
    service: str
    track: str
    release: str
    state: str  # "starting", "ready", "unready", "crashloop", "stopping"
    reason: str  # "OOMKilled", "CrashLoopBackOff", "ImagePullBackOff", ""
    ready: bool
    restarts: int
    deleting: bool
    node: str
    cpu_limit: float | None  # cores, from the first container's limits
    memory_limit: int | None  # bytes


def summarize(obj: Mapping[str, Any]) -> Pod:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    labels = meta.get("labels") or {}
    statuses = status.get("containerStatuses") or []
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    ready = conditions.get("Ready") == "True"
    restarts = sum(int(s.get("restartCount", 0)) for s in statuses)
    reason = ""
    for s in statuses:
        waiting = (s.get("state") or {}).get("waiting") or {}
        last = (s.get("lastState") or {}).get("terminated") or {}
        if last.get("reason") == "OOMKilled":
            reason = "OOMKilled"
        elif waiting.get("reason") and not reason:
            reason = str(waiting["reason"])
    deleting = meta.get("deletionTimestamp") is not None
    if deleting:
        state = "stopping"
    elif ready:
        state = "ready"
    elif reason in ("CrashLoopBackOff", "OOMKilled") or (
        reason == "" and any((s.get("state") or {}).get("terminated") for s in statuses)
    ):
        state = "crashloop"
    elif status.get("phase") == "Running" and statuses:
        state = "unready"
    else:
        state = "starting"
    limits = ((spec.get("containers") or [{}])[0].get("resources") or {}).get("limits") or {}
    return Pod(
        name=str(meta.get("name", "")),
        service=str(labels.get(LABEL_SERVICE, "")),
        track=str(labels.get(LABEL_TRACK, "stable")),
        release=str((meta.get("annotations") or {}).get(RELEASE, "")),
        state=state,
        reason=reason,
        ready=ready and not deleting,
        restarts=restarts,
        deleting=deleting,
        node=str(spec.get("nodeName") or ""),
        cpu_limit=cpu_cores(limits.get("cpu")),
        memory_limit=memory_bytes(limits.get("memory")),
    )


def cpu_cores(quantity: object) -> float | None:
    """A Kubernetes CPU quantity ("250m", "2", "0.5") in cores."""
    if quantity is None:
        return None
    text = str(quantity)
    try:
        return float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        return None


_UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4, "k": 1000, "M": 1000**2,
          "G": 1000**3, "T": 1000**4}  # fmt: skip


def memory_bytes(quantity: object) -> int | None:
    """A Kubernetes memory quantity ("256Mi", "1G", "1000") in bytes."""
    if quantity is None:
        return None
    text = str(quantity)
    for unit in sorted(_UNITS, key=len, reverse=True):
        if text.endswith(unit):
            try:
                return int(float(text[: -len(unit)]) * _UNITS[unit])
            except ValueError:
                return None
    try:
        return int(float(text))
    except ValueError:
        return None


class PodWatch:
    """The environment's pods by name, kept by a list and then a watch (`start`)."""

    def __init__(
        self,
        cluster: Cluster,
        selector: Mapping[str, str],
        on_change: Callable[[Pod | None, Pod | None], None] | None = None,
    ) -> None:
        self.cluster = cluster
        self.selector = ",".join(f"{k}={v}" for k, v in selector.items())
        self.on_change = on_change  # (before, after): a pod added, changed or gone
        self.pods: dict[str, Pod] = {}
        self.error: str | None = None
        self.lists = 0  # how often the whole set was listed (once, unless 410 Gone)
        self.events = 0
        self.version: str | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listed = threading.Event()
        self._answer: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """List the pods (ClusterError when that fails), then watch them in a thread."""
        self._list()
        self._thread = threading.Thread(target=self._run, name="pod-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        answer = self._answer
        if answer is not None:
            with contextlib.suppress(Exception):  # ends a blocked read at once (urllib3 >= 2.3)
                answer.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def snapshot(self) -> list[Pod]:
        with self._lock:
            return list(self.pods.values())

    def of(self, service: str) -> list[Pod]:
        with self._lock:
            return [p for p in self.pods.values() if p.service == service]

    # --- the thread ---------------------------------------------------------------------

    def _path(self) -> str:
        return f"/api/v1/namespaces/{self.cluster.namespace}/pods"

    def _list(self) -> None:
        answer = self.cluster.request(
            "GET",
            self._path(),
            verb="list",
            what=f"the pods of namespace {self.cluster.namespace}",
            query=[("labelSelector", self.selector)],
        )
        fresh = {}
        for item in answer.get("items") or []:
            pod = summarize(item)
            fresh[pod.name] = pod
        with self._lock:
            before, self.pods = self.pods, fresh
        self.lists += 1
        self.version = str((answer.get("metadata") or {}).get("resourceVersion") or "")
        if self.on_change is not None:
            for name in before.keys() | fresh.keys():
                if before.get(name) != fresh.get(name):
                    self.on_change(before.get(name), fresh.get(name))

    def _run(self) -> None:
        pause = 0.2
        while not self._stopping.is_set():
            try:
                if self.version is None:
                    self._list()
                for event in self._watch():
                    if not self._apply(event):
                        self.version = None  # too old: list once more
                        break
                pause = 0.2
                self.error = None
            except (ClusterError, OSError, ValueError) as e:
                if self._stopping.is_set():
                    return
                self.error = f"the pod watch broke ({e}); taken up again"
                self._stopping.wait(pause)
                pause = min(MAX_PAUSE, pause * 2)
            except Exception as e:  # urllib3's protocol errors on a dropped stream
                if self._stopping.is_set():
                    return
                self.error = f"the pod watch broke ({type(e).__name__}: {e}); taken up again"
                self._stopping.wait(pause)
                pause = min(MAX_PAUSE, pause * 2)

    def _watch(self) -> Iterator[dict[str, Any]]:
        query = [
            ("watch", "1"),
            ("labelSelector", self.selector),
            ("resourceVersion", self.version or ""),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(WATCH_SECONDS)),
        ]
        answer = open_stream(self.cluster, self._path(), query, WATCH_SECONDS + 30.0)
        self._answer = answer
        try:
            buffer = b""
            for chunk in answer.stream(64 * 1024, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, _, buffer = buffer.partition(b"\n")
                    if line.strip():
                        yield json.loads(line)
                if self._stopping.is_set():
                    return
        finally:
            self._answer = None
            answer.release_conn()

    def _apply(self, event: Mapping[str, Any]) -> bool:
        """Keep what the event says; False when the watch's version is too old (410)."""
        kind = event.get("type")
        obj = event.get("object") or {}
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind == "ERROR":
            if obj.get("code") == 410:
                return False
            raise ValueError(str(obj.get("message") or obj))
        if version:
            self.version = str(version)
        if kind == "BOOKMARK":
            return True
        self.events += 1
        pod = summarize(obj)
        with self._lock:
            before = self.pods.get(pod.name)
            if kind == "DELETED":
                self.pods.pop(pod.name, None)
            else:
                self.pods[pod.name] = pod
        if self.on_change is not None:
            self.on_change(before, None if kind == "DELETED" else pod)
        return True
