"""A Kubernetes environment of a stack, as `plan`, `up` and `down` work on it.

    open_environment(stack, env)   the Target and a connection to its cluster (its
                                   kubeconfig context, its namespace checked)
    objects_to_apply(...)          what render makes, each Secret filled from the
                                   providers (values masked wherever they would print)
    bring_up(...)                  apply, prune, wait: each step's outcome, and on a
                                   failure what was applied before it (never half-said)
    take_down(...)                 delete what sqlifier owns, then wait until its pods
                                   are gone; the data's volume claims are kept

Nothing here prints: the CLI (cli/cluster.py) says what happened, from what these return
and from the errors they raise (ClusterError and its kinds, SecretError).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlifier.platform.kubernetes.api import Cluster, ref
from sqlifier.platform.kubernetes.apply import (
    Change,
    apply,
    delete_owned,
    owned,
    plan,
    prune,
)
from sqlifier.platform.kubernetes.errors import ApplyConflict, ClusterError, NotReady
from sqlifier.platform.kubernetes.kubeconfig import quick_connect
from sqlifier.platform.kubernetes.pods import owner_labels
from sqlifier.platform.kubernetes.render import render
from sqlifier.platform.kubernetes.render_common import Manifest, Target
from sqlifier.platform.kubernetes.render_secrets import filled_secret
from sqlifier.platform.kubernetes.wait import wait_ready
from sqlifier.secrets.providers import Context
from sqlifier.secrets.redact import Redactor
from sqlifier.stack.model import PlatformKind, Stack

__all__ = [
    "Applied",
    "apply_environment",
    "bring_up",
    "is_kubernetes",
    "objects_to_apply",
    "open_environment",
    "plan_environment",
    "still_owned",
    "take_down",
    "volume_claims",
]


def is_kubernetes(stack: Stack, env: str) -> bool:
    """Whether environment `env` of `stack` runs on a cluster."""
    return stack.environment(env).platform is PlatformKind.KUBERNETES


def open_environment(
    stack: Stack, env: str, kubeconfig: Path | str | None = None
) -> tuple[Target, Cluster]:
    """The environment's target and a connection to its cluster (ClusterError when it
    cannot be reached or its namespace does not exist)."""
    target = Target.of(stack, env)
    return target, quick_connect(target.namespace, target.context, kubeconfig)


def objects_to_apply(
    stack: Stack,
    env: str,
    target: Target,
    state_dir: Path,
    redactor: Redactor,
    releases: Mapping[str, str] | None = None,
) -> list[Manifest]:
    """The rendered objects, each Secret filled from its references (SecretError names
    the service, the key and the reference that failed; nothing is applied then)."""
    objects = render(stack, env, releases)
    services = stack.services_for(env)
    context = Context(env, state_dir, stack.root, dict(os.environ))
    out: list[Manifest] = []
    for obj in objects:
        if obj.get("kind") == "HTTPRoute":
            _without_core_group(obj)
        service = ((obj.get("metadata") or {}).get("labels") or {}).get("sqlifier.dev/service")
        if obj.get("kind") == "Secret" and service in services:
            filled = filled_secret(target, services[service], context, redactor)
            out.append(filled if filled is not None else obj)
        else:
            out.append(obj)
    return out


def _without_core_group(route: Manifest) -> None:
    """A backendRef's `group: ""` (the core group, a Service) left out: the same by the
    Gateway API's default, and Kubernetes 1.20's server-side apply reads the empty string
    as null and refuses it."""
    for rule in (route.get("spec") or {}).get("rules") or []:
        for backend in rule.get("backendRefs") or []:
            if backend.get("group") == "":
                del backend["group"]


def plan_environment(cluster: Cluster, target: Target, objects: Sequence[Manifest]) -> list[Change]:
    """What `up` would change: created, changed, unchanged, and pruned objects."""
    owner = owner_labels(target)
    sets = [o for o in objects if o.get("kind") == "StatefulSet"]
    named = {ref(o, cluster.namespace) for o in sets}
    rest = [c for c in plan(cluster, _without(objects, sets), owner) if c.ref not in named]
    for one in sets:
        try:
            changes = plan(cluster, [one], owner)
        except ApplyConflict as e:
            if not _claims_only(e):
                raise
            changes = plan(cluster, [one], owner, force=True)
        rest.extend(c for c in changes if c.action != "delete")
    order = {ref(o, cluster.namespace): i for i, o in enumerate(objects)}
    return sorted(rest, key=lambda c: (c.action == "delete", order.get(c.ref, len(order))))


def apply_environment(cluster: Cluster, objects: Sequence[Manifest]) -> list[dict[str, Any]]:
    """Server-side apply of every object, the StatefulSets last: one is taken over from
    the controller manager when only its claim templates are contested (_claims_only)."""
    sets = [o for o in objects if o.get("kind") == "StatefulSet"]
    stored = apply(cluster, _without(objects, sets))
    for one in sets:
        try:
            try:
                stored.extend(apply(cluster, [one]))
            except ApplyConflict as e:
                if not _claims_only(e):
                    raise
                stored.extend(apply(cluster, [one], force=True))
        except ClusterError as e:
            done = ", ".join(ref(o, cluster.namespace) for o in stored)
            e.args = (f"{e}\n  applied before it: {done}",)
            raise
    return stored


def _without(objects: Sequence[Manifest], some: list[Manifest]) -> list[Manifest]:
    return [o for o in objects if all(o is not s for s in some)]


def _claims_only(conflict: ApplyConflict) -> bool:
    """Whether a conflict is only the claim templates of a StatefulSet held by the
    controller manager. Kubernetes before 1.21 gives it their ownership when it writes
    the StatefulSet's status; they cannot change (the field is immutable), so taking them
    back changes nothing."""
    fields = re.findall(r'(\.[\w.\[\]]+): conflict with "([^"]+)"', str(conflict))
    return bool(fields) and all(
        f == ".spec.volumeClaimTemplates" and who == "kube-controller-manager" for f, who in fields
    )


@dataclass
class Applied:
    """What `bring_up` did, step by step."""

    applied: list[str] = field(default_factory=list)  # refs, in apply order
    pruned: list[str] = field(default_factory=list)
    workloads: list[str] = field(default_factory=list)  # refs of the Deployments, ...


def bring_up(
    cluster: Cluster,
    target: Target,
    objects: Sequence[Manifest],
    timeout: float,
    *,
    wait: bool = True,
    on_step: Callable[[str, Any], None] = lambda step, what: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Applied:
    """Apply every object (server-side apply, field manager `sqlifier`), prune what the
    stack dropped, then wait until every workload is ready. `on_step` hears ("applied",
    refs), ("pruned", refs), ("waiting", workload refs) as each step ends. A ClusterError
    (NotReady included) says what was applied and pruned before it failed."""
    done = Applied()
    stored = apply_environment(cluster, objects)
    done.applied = [ref(o, cluster.namespace) for o in stored]
    on_step("applied", done.applied)
    try:
        done.pruned = prune(cluster, objects, owner_labels(target))
        on_step("pruned", done.pruned)
        done.workloads = [
            ref(o, cluster.namespace) for o in objects if o["kind"] in ("Deployment", "StatefulSet")
        ]
        if wait:
            on_step("waiting", done.workloads)
            wait_ready(cluster, objects, timeout, clock=clock, sleep=sleep)
    except NotReady as e:
        e.args = (f"{e}\n  every object was applied ({len(done.applied)}); the stack runs, "
                  "not ready: sqlifier ps shows its pods",)  # fmt: skip
        raise
    except ClusterError as e:
        e.args = (f"{e}\n  every object was applied before it ({len(done.applied)})",)
        raise
    return done


def take_down(
    cluster: Cluster,
    target: Target,
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[list[str], list[str]]:
    """Delete every object sqlifier owns for this stack and environment, then wait until
    their pods are gone; the refs deleted, and the volume claims kept (a stateful
    service's data). ClusterError when pods are still there after `timeout` seconds."""
    deleted = delete_owned(cluster, owner_labels(target))
    deadline = clock() + timeout
    while True:
        left = _pods(cluster, target)
        if not left:
            break
        if clock() >= deadline:
            names = ", ".join(p["metadata"]["name"] for p in left[:5])
            raise ClusterError(
                f"{len(left)} pod{'s' * (len(left) != 1)} of {target.stack} ({target.env}) "
                f"still there {timeout:g} s after their workloads were deleted ({names}): "
                f"their node may be gone; kubectl -n {cluster.namespace} get pods shows them"
            )
        sleep(0.25)
    return deleted, volume_claims(cluster, target)


def _pods(cluster: Cluster, target: Target) -> list[dict[str, Any]]:
    """Every pod of the stack and environment: its services' and its agent's."""
    return _listed(cluster, target, "pods")


def _listed(cluster: Cluster, target: Target, plural: str) -> list[dict[str, Any]]:
    labels = {"app.kubernetes.io/managed-by": "sqlifier", **owner_labels(target)}
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    answer = cluster.request(
        "GET",
        f"/api/v1/namespaces/{cluster.namespace}/{plural}",
        verb="list",
        what=f"the {plural} of {target.stack} ({target.env}) in namespace {cluster.namespace}",
        query=[("labelSelector", selector)],
    )
    items: list[dict[str, Any]] = answer.get("items", [])
    return items


def volume_claims(cluster: Cluster, target: Target) -> list[str]:
    """The stack's PersistentVolumeClaims (never deleted by sqlifier)."""
    try:
        items = _listed(cluster, target, "persistentvolumeclaims")
    except ClusterError:
        return []  # only said, not needed: a user who may not list them still gets down
    return sorted(str(i["metadata"]["name"]) for i in items)


def still_owned(cluster: Cluster, target: Target) -> list[str]:
    """The refs of what sqlifier still owns for this stack and environment."""
    return [ref(o) for o in owned(cluster, owner_labels(target))]
