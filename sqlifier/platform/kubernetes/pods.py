"""A stack's pods as `ps` and `logs` show them, read through the Kubernetes API.

- `pod_rows`: one row per pod of the stack's services, in the shape of a local instance
  of `ps --json` (service, instance, release, track, state, reason, ready, restarts,
  address, ...), plus the pod's node. The state is one word, as locally: `pending` (no
  node yet), `starting`, `ready`, `unready` (running, its readiness probe failing),
  `crashloop` (restarting after exits; the reason names the last exit, `OOMKilled`
  included), `image-error` (its image does not pull), `stopping`, `exited`.
- `log_records`: a pod's log lines through `pods/log` (`timestamps=true`, so that each
  line has its time; `sinceSeconds` for `--since`), each classified by level as a local
  instance's lines are, and masked.
- `follow`: the same, streamed (`follow=true`), one thread per pod, the pods listed again
  every few seconds so that a pod started meanwhile (a restart, a scale) is followed too.

The pods are picked by their labels: sqlifier's own (managed-by, stack, environment), and
`sqlifier.dev/service` (which the agent's pod has not).
"""

from __future__ import annotations

import datetime
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlifier.platform.kubernetes.api import Cluster, open_stream
from sqlifier.platform.kubernetes.apply import MANAGED_BY, MANAGED_BY_LABEL
from sqlifier.platform.kubernetes.errors import ClusterError
from sqlifier.platform.kubernetes.render_common import (
    LABEL_ENV,
    LABEL_SERVICE,
    LABEL_STACK,
    LABEL_TRACK,
    Target,
)
from sqlifier.runtime.logs import classify
from sqlifier.secrets.redact import Redactor

__all__ = [
    "RELEASE_ANNOTATION",
    "LogRecord",
    "follow",
    "list_pods",
    "log_records",
    "owner_labels",
    "pod_row",
    "pod_rows",
    "pod_selector",
]

RELEASE_ANNOTATION = "sqlifier.dev/release"
RELIST = 2.0  # seconds between two lists of the pods being followed
_PULL_ERRORS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")


def owner_labels(target: Target) -> dict[str, str]:
    """The labels every object of this stack and environment holds (besides managed-by)."""
    return {LABEL_STACK: target.stack, LABEL_ENV: target.env}


def pod_selector(target: Target, service: str | None = None) -> str:
    """The label selector of the stack's service pods (of one service, when named)."""
    parts = [f"{MANAGED_BY_LABEL}={MANAGED_BY}"]
    parts += [f"{k}={v}" for k, v in sorted(owner_labels(target).items())]
    parts.append(f"{LABEL_SERVICE}={service}" if service else LABEL_SERVICE)
    return ",".join(parts)


def list_pods(cluster: Cluster, target: Target, service: str | None = None) -> list[dict[str, Any]]:
    """The pods of the stack's services (of one), sorted by service and name."""
    answer = cluster.request(
        "GET",
        f"/api/v1/namespaces/{cluster.namespace}/pods",
        verb="list",
        what=f"the pods of {target.stack} ({target.env}) in namespace {cluster.namespace}",
        query=[("labelSelector", pod_selector(target, service))],
    )
    pods: list[dict[str, Any]] = answer.get("items", [])
    return sorted(pods, key=lambda p: (_labels(p).get(LABEL_SERVICE, ""), p["metadata"]["name"]))


def pod_rows(cluster: Cluster, target: Target, service: str | None = None) -> list[dict[str, Any]]:
    """`ps`'s rows: one per pod of the stack's services."""
    return [pod_row(p) for p in list_pods(cluster, target, service)]


def pod_row(pod: Mapping[str, Any]) -> dict[str, Any]:
    """One pod as `ps` shows it: the keys of a local instance, and its node."""
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    labels = _labels(pod)
    containers = spec.get("containers") or [{}]
    ports = containers[0].get("ports") or [{}]
    port = ports[0].get("containerPort")
    ip = status.get("podIP")
    statuses = status.get("containerStatuses") or []
    state, reason = _state(pod, statuses)
    last = _last_exit(statuses)
    return {
        "service": labels.get(LABEL_SERVICE),
        "instance": meta["name"],
        "release": (meta.get("annotations") or {}).get(RELEASE_ANNOTATION),
        "track": labels.get(LABEL_TRACK),
        "state": state,
        "ready": _ready(status),
        "pid": None,
        "port": port,
        "address": f"{ip}:{port}" if ip and port else ip,
        "node": spec.get("nodeName"),
        "restarts": sum(int(s.get("restartCount", 0)) for s in statuses),
        "last_exit": last,
        "oom_killed": last == "OOMKilled",
        "reason": reason,
        "started": _epoch(status.get("startTime")),
        "traffic": None,
        "count_set_by": None,
    }


def _labels(pod: Mapping[str, Any]) -> dict[str, str]:
    return dict((pod.get("metadata") or {}).get("labels") or {})


def _ready(status: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def _last_exit(statuses: list[dict[str, Any]]) -> str | None:
    for s in statuses:
        last = (s.get("lastState") or {}).get("terminated")
        if last:
            return str(last.get("reason") or f"exit code {last.get('exitCode')}")
    return None


def _state(pod: Mapping[str, Any], statuses: list[dict[str, Any]]) -> tuple[str, str]:
    """A pod's state word, and what to say of it ("" when there is nothing to say)."""
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    if meta.get("deletionTimestamp"):
        return "stopping", "being deleted"
    if not spec.get("nodeName"):
        return "pending", "not scheduled on any node yet"
    if status.get("phase") in ("Succeeded", "Failed"):
        return "exited", str(status.get("reason") or status.get("phase"))
    for s in statuses:
        waiting = (s.get("state") or {}).get("waiting")
        if waiting is None:
            continue
        why = str(waiting.get("reason") or "waiting")
        if why in _PULL_ERRORS:
            return "image-error", f"{why}: {waiting.get('message') or s.get('image')}"
        if why == "CrashLoopBackOff":
            return "crashloop", _crash_reason(s)
        return "starting", why
    if not statuses:
        return "starting", "no container has started"
    if _ready(status):
        return "ready", ""
    if any("running" in (s.get("state") or {}) for s in statuses):
        return "unready", "running; its readiness probe fails"
    return "starting", ""


def _crash_reason(container: Mapping[str, Any]) -> str:
    last = (container.get("lastState") or {}).get("terminated") or {}
    said = str(last.get("reason") or "exited")
    if said == "OOMKilled":
        said = "OOMKilled (out of memory: its memory limit was reached)"
    code = last.get("exitCode")
    return (
        f"last exit {said}"
        + (f", exit code {code}" if code is not None else "")
        + ("; restarting after a back-off")
    )


def _epoch(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        text = stamp.replace("Z", "+00:00")
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


# --- logs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One line of a pod's log, as a local instance's log holds it."""

    t: float
    instance: str
    level: str
    line: str
    stream: str = "output"  # pods/log merges stdout and stderr

    def to_json(self) -> dict[str, Any]:
        return {
            "t": self.t,
            "instance": self.instance,
            "stream": self.stream,
            "level": self.level,
            "line": self.line,
        }


def log_records(
    cluster: Cluster,
    pod: str,
    since: float | None = None,
    redactor: Redactor | None = None,
) -> list[LogRecord]:
    """The lines of `pod`'s log (of the last `since` seconds), classified and masked."""
    query = [("timestamps", "true")]
    if since is not None:
        query.append(("sinceSeconds", str(max(1, int(since)))))
    text = cluster.request_text(
        f"/api/v1/namespaces/{cluster.namespace}/pods/{pod}/log",
        what=f"the log of pod {pod}",
        query=query,
    )
    return [_record(pod, line, redactor) for line in text.splitlines() if line]


def _record(pod: str, raw: str, redactor: Redactor | None) -> LogRecord:
    stamp, _, line = raw.partition(" ")
    when = _epoch(stamp)
    if when is None:  # a log without timestamps: the line whole, read now
        when, line = time.time(), raw
    if redactor:
        line = redactor.redact(line)
    return LogRecord(when, pod, classify(line), line)


@dataclass
class _Follower:
    """The streams of `follow`: one thread per pod, lines into one queue."""

    cluster: Cluster
    since: float | None
    redactor: Redactor | None
    lines: queue.Queue[LogRecord | ClusterError] = field(default_factory=queue.Queue)
    streaming: dict[str, threading.Thread] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)

    def start(self, pod: str, since: float | None) -> None:
        thread = threading.Thread(target=self._stream, args=(pod, since), daemon=True)
        self.streaming[pod] = thread
        thread.start()

    def _stream(self, pod: str, since: float | None) -> None:
        query = [("timestamps", "true"), ("follow", "true")]
        if since is not None:
            query.append(("sinceSeconds", str(max(1, int(since)))))
        try:
            for raw in _stream_lines(self.cluster, pod, query):
                if self.stopping.is_set():
                    return
                self.lines.put(_record(pod, raw, self.redactor))
        except ClusterError as e:
            if e.status != 404:  # a pod deleted meanwhile ends its stream, nothing more
                self.lines.put(e)


def follow(
    cluster: Cluster,
    pods: Callable[[], list[str]],
    since: float | None = None,
    redactor: Redactor | None = None,
    *,
    relist: float = RELIST,
) -> Iterator[LogRecord]:
    """Every line the pods `pods()` names write from now (or from `since` seconds ago), as
    they come; pods `pods()` names later are followed from their start. Ends when the
    caller stops iterating (Ctrl-C)."""
    follower = _Follower(cluster, since, redactor)
    for pod in pods():
        follower.start(pod, since)
    next_list = time.monotonic() + relist
    try:
        while True:
            try:
                item = follower.lines.get(timeout=max(0.05, next_list - time.monotonic()))
            except queue.Empty:
                item = None
            if isinstance(item, ClusterError):
                raise item
            if item is not None:
                yield item
            if time.monotonic() >= next_list:
                for pod in pods():
                    if pod not in follower.streaming:
                        follower.start(pod, None)
                next_list = time.monotonic() + relist
    finally:
        follower.stopping.set()


def _stream_lines(cluster: Cluster, pod: str, query: list[tuple[str, str]]) -> Iterator[str]:
    """The lines of a streamed GET of `pod`'s log, as they arrive."""
    import urllib3  # noqa: PLC0415

    path = f"/api/v1/namespaces/{cluster.namespace}/pods/{pod}/log"
    what = f"the log of pod {pod}"
    answer = open_stream(cluster, path, query, None, accept="*/*", verb="get", what=what)
    try:
        pending = b""
        try:
            for chunk in answer.stream(4096, decode_content=True):
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    yield line.decode("utf-8", errors="replace")
        except (urllib3.exceptions.HTTPError, OSError):
            return  # the stream ended (the pod stopped, or the server closed it)
    finally:
        answer.release_conn()
