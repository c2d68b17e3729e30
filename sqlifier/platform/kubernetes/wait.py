"""Waiting until applied workloads are ready, and saying why one is not.

A Deployment is ready when the controller has seen its latest spec and every replica runs
that spec and is available, with no older pod left; a StatefulSet when every replica is
ready and updated. When the time is up, NotReady names the first workload that is not,
and one of its pods that is not ready: its state (CrashLoopBackOff, OOMKilled,
ImagePullBackOff, unscheduled, failing its readiness probe), its events and its last log
lines, the crashed container's when it restarted.

The clock and the pause between two looks are injected: tests time out at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlifier.platform.kubernetes.api import Cluster, ref
from sqlifier.platform.kubernetes.errors import ClusterError, NotReady

__all__ = ["WORKLOADS", "explain", "is_ready", "wait_ready"]

WORKLOADS = ("Deployment", "StatefulSet")
POLL = 0.25  # seconds between two looks at the workloads
LOG_LINES = 10
EVENTS = 8


def wait_ready(
    cluster: Cluster,
    objects: Sequence[Mapping[str, Any]],
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Return once every Deployment and StatefulSet of `objects` is ready; NotReady after
    `timeout` seconds, naming the first that is not and one of its pods."""
    waiting = [o for o in objects if o.get("kind") in WORKLOADS]
    deadline = clock() + timeout
    while True:
        live = [_read(cluster, o) for o in waiting]
        waiting = [o for o, now in zip(waiting, live, strict=True) if not is_ready(now)]
        if not waiting:
            return
        if clock() >= deadline:
            first = _read(cluster, waiting[0])
            raise NotReady(
                f"{ref(first, cluster.namespace)} is not ready after {timeout:g} s: "
                + explain(cluster, first)
            )
        sleep(POLL)


def is_ready(workload: Mapping[str, Any]) -> bool:
    spec, status = workload.get("spec") or {}, workload.get("status") or {}
    wanted = int(spec.get("replicas", 1))
    generation = int((workload.get("metadata") or {}).get("generation", 0))
    if int(status.get("observedGeneration", 0)) < generation:
        return False
    updated = int(status.get("updatedReplicas", 0))
    if workload.get("kind") == "StatefulSet":
        return int(status.get("readyReplicas", 0)) == wanted and updated == wanted
    return (
        updated == wanted
        and int(status.get("availableReplicas", 0)) == wanted
        and int(status.get("replicas", 0)) == wanted
    )


def explain(cluster: Cluster, workload: Mapping[str, Any]) -> str:
    """Why `workload` is not ready: its counts, then one pod that is not, in detail."""
    spec, status = workload.get("spec") or {}, workload.get("status") or {}
    wanted = int(spec.get("replicas", 1))
    counts = f"{int(status.get('readyReplicas', 0))} of {wanted} pods ready"
    pods = _pods(cluster, workload)
    unready = [p for p in pods if not _pod_ready(p)]
    if not unready:
        if pods:
            return f"{counts}; its pods are ready but do not run its latest spec yet"
        events = _events(cluster, str(workload["metadata"]["name"]), prefix=True)
        return f"{counts}; no pod was created" + _block("events", events)
    pod = max(unready, key=_trouble)
    name = pod["metadata"]["name"]
    text = f"{counts}; pod {name}: {_pod_state(pod)}"
    text += _block("events", _events(cluster, name))
    text += _block("last log lines", _log(cluster, pod))
    return text + f"\n  (kubectl -n {cluster.namespace} describe pod {name} shows more)"


# --- reading the cluster ---------------------------------------------------------------------


def _read(cluster: Cluster, obj: Mapping[str, Any]) -> dict[str, Any]:
    resource = cluster.resource(str(obj["apiVersion"]), str(obj["kind"]))
    name = str(obj["metadata"]["name"])
    namespace = obj["metadata"].get("namespace") or cluster.namespace
    found: dict[str, Any] = cluster.request(
        "GET", resource.path(namespace, name), verb="get", what=ref(obj, namespace),
        resource=resource,
    )  # fmt: skip
    found.setdefault("kind", obj["kind"])
    return found


def _pods(cluster: Cluster, workload: Mapping[str, Any]) -> list[dict[str, Any]]:
    labels = (((workload.get("spec") or {}).get("selector") or {}).get("matchLabels")) or {}
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    answer = cluster.request(
        "GET", f"/api/v1/namespaces/{cluster.namespace}/pods", verb="list",
        what=f"the pods of {ref(workload, cluster.namespace)}",
        query=[("labelSelector", selector)] if selector else [],
    )  # fmt: skip
    return sorted(answer.get("items", []), key=lambda p: p["metadata"]["name"])


def _events(cluster: Cluster, name: str, prefix: bool = False) -> list[str]:
    """The latest events about `name` (with `prefix`: the warnings about any object named
    from it, as a Deployment's ReplicaSets are), as "Warning BackOff: ...". Empty when the
    user may not list events."""
    query = [] if prefix else [("fieldSelector", f"involvedObject.name={name}")]
    try:
        answer = cluster.request(
            "GET", f"/api/v1/namespaces/{cluster.namespace}/events", verb="list",
            what=f"the events of {name}", query=query,
        )  # fmt: skip
    except ClusterError:
        return []
    items = [e for e in answer.get("items", []) if not prefix or _warning_about(e, name)]
    items.sort(key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
    return [
        f"{e.get('type', '')} {e.get('reason', '')}: {e.get('message', '')}".strip()
        + (f" (x{e['count']})" if int(e.get("count") or 1) > 1 else "")
        for e in items[-EVENTS:]
    ]


def _warning_about(event: Mapping[str, Any], prefix: str) -> bool:
    about = str((event.get("involvedObject") or {}).get("name", ""))
    return about.startswith(prefix) and event.get("type") == "Warning"


def _log(cluster: Cluster, pod: Mapping[str, Any]) -> list[str]:
    name = pod["metadata"]["name"]
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    crashed = any(
        s.get("restartCount", 0) and "waiting" in (s.get("state") or {}) for s in statuses
    )
    query = [("tailLines", str(LOG_LINES))] + ([("previous", "true")] if crashed else [])
    containers = (pod.get("spec") or {}).get("containers") or []
    if len(containers) > 1:
        query.append(("container", containers[0]["name"]))
    try:
        text = cluster.request_text(
            f"/api/v1/namespaces/{cluster.namespace}/pods/{name}/log", query=query,
            what=f"the log of pod {name}",
        )  # fmt: skip
    except ClusterError as e:
        return [f"(none: {str(e).rsplit(': ', 1)[-1]})"]
    return text.splitlines()[-LOG_LINES:] or ["(empty)"]


# --- a pod's state ----------------------------------------------------------------------------


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _trouble(pod: Mapping[str, Any]) -> tuple[int, int]:
    """Which unready pod says most: one waiting or crashed, then the most restarts."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    waiting = any("waiting" in (s.get("state") or {}) for s in statuses)
    return int(waiting), sum(int(s.get("restartCount", 0)) for s in statuses)


def _pod_state(pod: Mapping[str, Any]) -> str:
    status = pod.get("status") or {}
    if not (pod.get("spec") or {}).get("nodeName"):
        return "Pending: not scheduled on any node"
    statuses = status.get("containerStatuses") or []
    if not statuses:
        return f"{status.get('phase', 'Pending')}: no container has started"
    parts = []
    for s in statuses:
        state, last = s.get("state") or {}, (s.get("lastState") or {}).get("terminated")
        if "waiting" in state:
            said = state["waiting"].get("reason", "waiting")
            message = state["waiting"].get("message")
            said += f" ({message})" if message and said != "CrashLoopBackOff" else ""
        elif "terminated" in state:
            said = f"terminated: {state['terminated'].get('reason', '')}"
        else:
            said = "running, not ready (its readiness probe fails)"
        if last:
            said += f", last exit {last.get('reason', '')} (exit code {last.get('exitCode')})"
        restarts = int(s.get("restartCount", 0))
        if restarts:
            said += f", {restarts} restart{'s' if restarts > 1 else ''}"
        parts.append(f"{s['name']}: {said}" if len(statuses) > 1 else said)
    return "; ".join(parts)


def _block(title: str, lines: list[str]) -> str:
    if not lines:
        return f"\n  its {title}: none"
    return f"\n  its {title}:" + "".join(f"\n    {line}" for line in lines)
