"""Applying a list of objects to a cluster, the way `plan`, `up` and `down` need it.

- `apply`: server-side apply of each object, field manager `sqlifier`, dependencies first
  (ServiceAccounts, Secrets and Roles before the workloads that use them). A field another
  manager set to something else is a conflict (ApplyConflict) unless `force` takes it over.
  When an object fails, the message also names the objects applied before it.
- `plan`: the same apply as a dry run (`dryRun=All`, nothing changes), compared with the
  live objects: per object, created, changed (which fields, from what to what; a Secret's
  values never shown) or unchanged; and the owned objects a `prune` would delete.
- `prune`: deletes the objects sqlifier owns for this stack and environment that the list
  no longer has; `delete_owned` deletes all of them (`down`).

What sqlifier owns is what carries `app.kubernetes.io/managed-by: sqlifier` and every label
of the `owner` the caller gives (its stack and environment), in the connection's namespace,
among the kinds of `OWNED_KINDS`. Nothing else is ever deleted; PersistentVolumeClaims
(a StatefulSet's data) are never among them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlifier.platform.kubernetes.api import Cluster, Resource, ref
from sqlifier.platform.kubernetes.errors import ApplyConflict, ClusterError, NamespaceNotFound

__all__ = [
    "APPLY_ORDER",
    "FIELD_MANAGER",
    "MANAGED_BY",
    "MANAGED_BY_LABEL",
    "OWNED_KINDS",
    "Change",
    "apply",
    "delete_owned",
    "owned",
    "plan",
    "prune",
]

FIELD_MANAGER = "sqlifier"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "sqlifier"
APPLY_PATCH = "application/apply-patch+yaml"
# Kinds applied before the others, in this order; the rest keep the order given.
APPLY_ORDER = (
    "Namespace", "CustomResourceDefinition", "ServiceAccount", "Secret", "ConfigMap",
    "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "NetworkPolicy", "Service",
    "Deployment", "StatefulSet", "PodDisruptionBudget", "HTTPRoute",
)  # fmt: skip
# The kinds whose objects sqlifier may delete (prune, down), when it made them; a kind the
# cluster does not serve (an older Kubernetes, no Gateway API) is passed over.
OWNED_KINDS = (
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("v1", "Service"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "ServiceAccount"),
)
# What the server adds or keeps for itself: not a difference a plan shows.
SERVER_METADATA = (
    "managedFields", "resourceVersion", "generation", "creationTimestamp", "uid",
    "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds",
)  # fmt: skip
SERVER_ANNOTATIONS = ("deployment.kubernetes.io/revision",)


@dataclass(frozen=True, slots=True)
class Change:
    """What applying (or pruning) does to one object."""

    ref: str  # "Deployment shop/web"
    action: str  # "create", "update", "unchanged" or "delete"
    differences: tuple[str, ...] = ()  # "spec.replicas: 2 -> 3", for an update


def apply(
    cluster: Cluster, objects: Sequence[Mapping[str, Any]], *, force: bool = False
) -> list[dict[str, Any]]:
    """Server-side apply every object (field manager `sqlifier`); the objects as the
    server stored them. ClusterError (ApplyConflict, Forbidden, ...) names the failing
    object and those applied before it."""
    done: list[str] = []
    stored = []
    for obj in _in_order(objects):
        try:
            stored.append(_apply_one(cluster, obj, force=force, dry_run=False))
        except ClusterError as e:
            if done:
                e.args = (f"{e}\n  applied before it: {', '.join(done)}",)
            raise
        done.append(ref(obj, cluster.namespace))
    return stored


def plan(
    cluster: Cluster,
    objects: Sequence[Mapping[str, Any]],
    owner: Mapping[str, str],
    *,
    force: bool = False,
) -> list[Change]:
    """What `apply` then `prune` would do, from a dry run on the server: one Change per
    object, then one "delete" per owned object the list no longer has."""
    changes = []
    for obj in _in_order(objects):
        resource, namespace, name = _place(cluster, obj)
        live = _get(cluster, resource, namespace, name)
        after = _apply_one(cluster, obj, force=force, dry_run=True)
        if live is None:
            changes.append(Change(ref(obj, namespace), "create"))
            continue
        differences = tuple(_differences(_comparable(live), _comparable(after), obj["kind"]))
        action = "update" if differences else "unchanged"
        changes.append(Change(ref(obj, namespace), action, differences))
    changes.extend(Change(ref(o), "delete") for o in _prunable(cluster, objects, owner))
    return changes


def prune(
    cluster: Cluster, objects: Sequence[Mapping[str, Any]], owner: Mapping[str, str]
) -> list[str]:
    """Delete what sqlifier owns for `owner` that `objects` no longer has; their refs."""
    gone = list(_prunable(cluster, objects, owner))
    for obj in gone:
        _delete(cluster, obj)
    return [ref(o) for o in gone]


def delete_owned(cluster: Cluster, owner: Mapping[str, str]) -> list[str]:
    """Delete everything sqlifier owns for `owner` (workloads first); their refs."""
    return prune(cluster, (), owner)


def owned(cluster: Cluster, owner: Mapping[str, str]) -> Iterator[dict[str, Any]]:
    """The live objects sqlifier owns for `owner` in the connection's namespace."""
    if not owner:
        raise ValueError("owner labels are required: without them every stack's objects match")
    labels = {MANAGED_BY_LABEL: MANAGED_BY, **owner}
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    for api_version, kind in OWNED_KINDS:
        if not cluster.served(api_version, kind):
            continue
        resource = cluster.resource(api_version, kind)
        answer = cluster.request(
            "GET",
            resource.path(cluster.namespace),
            verb="list",
            what=f"{resource.qualified} in namespace {cluster.namespace}",
            resource=resource,
            query=[("labelSelector", selector)],
        )
        for item in answer.get("items", []):
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
            yield item


# --- one object ---------------------------------------------------------------------------


def _in_order(objects: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    rank = {kind: i for i, kind in enumerate(APPLY_ORDER)}
    return sorted(objects, key=lambda o: rank.get(str(o.get("kind")), len(rank)))


def _place(cluster: Cluster, obj: Mapping[str, Any]) -> tuple[Resource, str | None, str]:
    resource = cluster.resource(str(obj.get("apiVersion")), str(obj.get("kind")))
    meta = obj.get("metadata") or {}
    namespace = (meta.get("namespace") or cluster.namespace) if resource.namespaced else None
    return resource, namespace, str(meta.get("name"))


def _apply_one(
    cluster: Cluster, obj: Mapping[str, Any], *, force: bool, dry_run: bool
) -> dict[str, Any]:
    resource, namespace, name = _place(cluster, obj)
    body = copy.deepcopy(dict(obj))
    if namespace:
        body.setdefault("metadata", {})["namespace"] = namespace
    query = [("fieldManager", FIELD_MANAGER), ("force", "true" if force else "false")]
    if dry_run:
        query.append(("dryRun", "All"))
    what = ref(obj, namespace)
    try:
        answer: dict[str, Any] = cluster.request(
            "PATCH",
            resource.path(namespace, name),
            verb="patch",
            what=what,
            resource=resource,
            body=body,
            query=query,
            content_type=APPLY_PATCH,
        )
    except ClusterError as e:
        if e.status == 409:
            raise _conflict(what, str(e)) from None
        raise
    return answer


def _conflict(what: str, said: str) -> ApplyConflict:
    # The server's causes read '.spec.replicas: conflict with "kubectl" using apps/v1'.
    fields = said.split("): ", 1)[-1]
    return ApplyConflict(
        f"{what}: fields that another field manager set differ from what sqlifier applies: "
        f"{fields}. sqlifier takes them over only when forced (the other manager then "
        "loses them), or make the stack file agree with the cluster",
        409,
    )


def _get(
    cluster: Cluster, resource: Resource, namespace: str | None, name: str
) -> dict[str, Any] | None:
    what = f"{resource.kind} {namespace}/{name}" if namespace else f"{resource.kind} {name}"
    try:
        found: dict[str, Any] = cluster.request(
            "GET", resource.path(namespace, name), verb="get", what=what, resource=resource
        )
    except NamespaceNotFound:
        raise
    except ClusterError as e:
        if e.status == 404:
            return None
        raise
    return found


def _delete(cluster: Cluster, obj: Mapping[str, Any]) -> None:
    resource, namespace, name = _place(cluster, obj)
    try:
        cluster.request(
            "DELETE",
            resource.path(namespace, name),
            verb="delete",
            what=ref(obj, namespace),
            resource=resource,
            body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
        )
    except ClusterError as e:
        if e.status != 404:  # gone already: what was asked
            raise


def _prunable(
    cluster: Cluster, objects: Sequence[Mapping[str, Any]], owner: Mapping[str, str]
) -> Iterator[dict[str, Any]]:
    keep = set()
    for obj in objects:
        meta = obj.get("metadata") or {}
        keep.add((str(obj.get("kind")), meta.get("namespace") or cluster.namespace, meta["name"]))
    for live in owned(cluster, owner):
        meta = live["metadata"]
        if (live["kind"], meta.get("namespace"), meta["name"]) not in keep:
            yield live


# --- differences ----------------------------------------------------------------------------


def _comparable(obj: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(obj))
    out.pop("status", None)
    meta = out.get("metadata") or {}
    for key in SERVER_METADATA:
        meta.pop(key, None)
    annotations = meta.get("annotations") or {}
    for key in SERVER_ANNOTATIONS:
        annotations.pop(key, None)
    if not annotations:
        meta.pop("annotations", None)
    return out


def _flatten(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _flatten(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list) and value:
        for i, item in enumerate(value):
            yield from _flatten(item, f"{path}[{i}]")
    else:
        yield path, value


def _differences(before: Mapping[str, Any], after: Mapping[str, Any], kind: str) -> Iterator[str]:
    old, new = dict(_flatten(before)), dict(_flatten(after))
    for path in sorted(old.keys() | new.keys()):
        if old.get(path, _ABSENT) == new.get(path, _ABSENT):
            continue
        if kind == "Secret" and path.startswith(("data.", "stringData.")):
            yield (
                f"{path}: (value changed)"
                if path in old and path in new
                else (f"{path}: {'added' if path in new else 'removed'}")
            )
            continue
        yield f"{path}: {_show(old.get(path, _ABSENT))} -> {_show(new.get(path, _ABSENT))}"


class _Absent:
    def __repr__(self) -> str:
        return "(none)"


_ABSENT: Any = _Absent()


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "(none)"
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    return str(value)
