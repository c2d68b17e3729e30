"""Operating a service on a cluster: `scale` and `restart`, and finding its workload.

- `scale`: the workload's `scale` subresource, and nothing else of it (RBAC can grant
  `deployments/scale` alone, as the agent's Role does).
- `restart`: a rolling restart, as `kubectl rollout restart` does it: the pod template's
  annotation `kubectl.kubernetes.io/restartedAt` set to now, so that the controller
  replaces the pods one at a time (`maxSurge: 1, maxUnavailable: 0` for a Deployment;
  highest ordinal first for a StatefulSet), each ready before the next old one stops.

Both patch with their own field manager (`sqlifier-scale`, `sqlifier-restart`), not the
`sqlifier` of `up`'s server-side apply: the next `up` sets `replicas` back to the stack
file's `instances` (as it is the file's), and leaves the restart annotation alone, so an
`up` does not restart every pod again.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from sqlifier.platform.kubernetes.api import Cluster, Resource
from sqlifier.platform.kubernetes.errors import ClusterError, NamespaceNotFound
from sqlifier.platform.kubernetes.render_common import Target

__all__ = [
    "RESTARTED_AT",
    "SCALE_MANAGER",
    "find_workload",
    "restart",
    "scale",
]

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
SCALE_MANAGER = "sqlifier-scale"
RESTART_MANAGER = "sqlifier-restart"
MERGE_PATCH = "application/merge-patch+json"
_KINDS = ("Deployment", "StatefulSet")


def find_workload(
    cluster: Cluster, target: Target, service: str
) -> tuple[Resource, dict[str, Any]]:
    """The Deployment or StatefulSet that runs `service`'s stable pods; ClusterError
    when neither is on the cluster."""
    for kind in _KINDS:
        resource = cluster.resource("apps/v1", kind)
        try:
            found: dict[str, Any] = cluster.request(
                "GET",
                resource.path(cluster.namespace, service),
                verb="get",
                what=f"{kind} {cluster.namespace}/{service}",
                resource=resource,
            )
        except NamespaceNotFound:
            raise
        except ClusterError as e:
            if e.status == 404:
                continue
            raise
        labels = (found.get("metadata") or {}).get("labels") or {}
        if labels.get("sqlifier.dev/stack") == target.stack:
            found.setdefault("kind", kind)
            found.setdefault("apiVersion", "apps/v1")
            return resource, found
    raise ClusterError(
        f"service {service} of {target.stack} runs nowhere in namespace {cluster.namespace} "
        f"({cluster.where}): no Deployment or StatefulSet {service} of this stack is there; "
        f"bring the stack up first: sqlifier up --env {target.env}"
    )


def scale(cluster: Cluster, target: Target, service: str, replicas: int) -> dict[str, Any]:
    """Set `service`'s replicas through its workload's scale subresource; the workload as
    it was before."""
    resource, workload = find_workload(cluster, target, service)
    kind = workload["kind"]
    scale_resource = Resource(resource.api_version, "Scale", f"{resource.plural}/scale", True)
    cluster.request(
        "PATCH",
        resource.path(cluster.namespace, service) + "/scale",
        verb="patch",
        what=f"the scale of {kind} {cluster.namespace}/{service}",
        resource=scale_resource,
        body={"spec": {"replicas": replicas}},
        query=[("fieldManager", SCALE_MANAGER)],
        content_type=MERGE_PATCH,
    )
    return workload


def restart(
    cluster: Cluster,
    target: Target,
    service: str,
    now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
) -> dict[str, Any]:
    """Start a rolling restart of `service`'s pods; the workload as patched."""
    resource, workload = find_workload(cluster, target, service)
    stamp = now().strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
    patched: dict[str, Any] = cluster.request(
        "PATCH",
        resource.path(cluster.namespace, service),
        verb="patch",
        what=f"{workload['kind']} {cluster.namespace}/{service}",
        resource=resource,
        body=body,
        query=[("fieldManager", RESTART_MANAGER)],
        content_type=MERGE_PATCH,
    )
    patched.setdefault("kind", workload["kind"])
    patched.setdefault("apiVersion", "apps/v1")
    return patched
