"""The agent's own objects: its ServiceAccount, a Role with the least it needs, the
RoleBinding between them, a ConfigMap with the stack file and its rules, its Deployment.

The Role is namespaced (nothing cluster-wide), and each rule is there for something the
agent does (DESIGN.md section 6; docs/kubernetes.md lists them for an operator). Secrets
and HTTPRoutes are named one by one (`resourceNames`): the agent reads and writes the ones
this stack renders, and no other. What it may not do, it reports as a forbidden verb.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from sqlifier import __version__
from sqlifier.platform.kubernetes.render_common import (
    AGENT_NAME,
    Manifest,
    Target,
    labels,
    metadata,
)

__all__ = [
    "STACK_DIR",
    "agent_deployment",
    "agent_image",
    "agent_rbac",
    "role_rules",
    "rule_reason",
    "stack_config",
]

STACK_DIR = "/etc/sqlifier"  # where the agent's container finds the stack file and rules
STACK_CONFIG = f"{AGENT_NAME}-stack"
METRICS_PORT = 9464


def agent_image(target: Target) -> str:
    return target.agent_image or f"sqlifier:{__version__}"


# Each rule of the Role, with why the agent needs it (a comment above it in the YAML).
_RULES: list[tuple[str, str, list[str], list[str]]] = [
    (
        "instances, readiness, restarts and OOM kills come from a pod watch (no polling of "
        "the whole list); `ps` reads the same",
        "",
        ["pods"],
        ["get", "list", "watch"],
    ),
    ("log() and log_error() read bounded streams of the pods' logs", "", ["pods/log"], ["get"]),
    (
        "a failing pod is reported with its events; SCALE, RESTART and deploys are recorded "
        "as events on the objects they changed",
        "",
        ["events"],
        ["get", "list", "watch", "create", "patch"],
    ),
    (
        "workloads are watched for `ps`; a rolling restart patches the pod template; a "
        "canary is a second workload beside the stable one, created, then deleted",
        "apps",
        ["deployments", "statefulsets"],
        ["get", "list", "watch", "create", "patch", "delete"],
    ),
    (
        "SCALE and `scale` go through the scale subresource, never the whole object",
        "apps",
        ["deployments/scale", "statefulsets/scale"],
        ["get", "patch", "update"],
    ),
    (
        "a canary has a Service of its own beside the stable one while it runs",
        "",
        ["services"],
        ["get", "list", "watch", "create", "patch", "delete"],
    ),
    (
        "the engine's state (windows, cooldowns, budgets), deploy records, the audit log and "
        "the CLI's requests to the agent are ConfigMaps it keeps and watches",
        "",
        ["configmaps"],
        ["get", "list", "watch", "create", "update", "patch", "delete"],
    ),
    (
        "locks per service, and the leader of two agents, are Leases",
        "coordination.k8s.io",
        ["leases"],
        ["get", "list", "watch", "create", "update", "delete"],
    ),
    (
        "a deploy's migration runs as a Job of the new release",
        "batch",
        ["jobs"],
        ["get", "list", "watch", "create", "delete"],
    ),
    ("cpu() and memory() read the metrics API", "metrics.k8s.io", ["pods"], ["get", "list"]),
]
_SECRETS = (
    "a rotated secret is filled again in its service's Secret: this stack's Secrets only, "
    "by name (a Role cannot name objects to list, watch or create)"
)
_ROUTES = (
    "a canary's share is the weights of its HTTPRoutes' backendRefs: this stack's "
    "HTTPRoutes only, by name"
)


def role_rules(secrets: Sequence[str], routes: Sequence[str]) -> list[Manifest]:
    """The Role's rules: what the agent needs, and nothing else."""
    return [rule for _, rule in _reasoned(secrets, routes)]


def rule_reason(rule: Manifest) -> str:
    """Why the agent needs a rule of its Role ("" for a rule it does not render)."""
    named = [(_SECRETS, "", ["secrets"]), (_ROUTES, "gateway.networking.k8s.io", ["httproutes"])]
    for why, group, resources in [*((w, g, r) for w, g, r, _ in _RULES), *named]:
        if rule.get("apiGroups") == [group] and rule.get("resources") == resources:
            return why
    return ""


def _reasoned(secrets: Sequence[str], routes: Sequence[str]) -> list[tuple[str, Manifest]]:
    rules = [(why, _rule(group, resources, verbs)) for why, group, resources, verbs in _RULES]
    if secrets:
        rules.append((_SECRETS, _rule("", ["secrets"], ["get", "patch", "update"], secrets)))
    if routes:
        rules.append(
            (_ROUTES, _rule("gateway.networking.k8s.io", ["httproutes"], ["get", "patch"], routes))
        )
    return rules


def _rule(
    group: str, resources: list[str], verbs: list[str], names: Sequence[str] = ()
) -> Manifest:
    rule: Manifest = {"apiGroups": [group], "resources": resources}
    if names:
        rule["resourceNames"] = sorted(names)
    rule["verbs"] = verbs
    return rule


def agent_rbac(target: Target, secrets: Sequence[str], routes: Sequence[str]) -> list[Manifest]:
    """The agent's ServiceAccount, Role and RoleBinding."""
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": metadata(target, AGENT_NAME),
            "automountServiceAccountToken": True,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": metadata(target, AGENT_NAME),
            "rules": role_rules(secrets, routes),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": metadata(target, AGENT_NAME),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": AGENT_NAME,
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": AGENT_NAME, "namespace": target.namespace}
            ],
        },
    ]


def stack_config(target: Target, files: Mapping[str, str]) -> Manifest:
    """The stack file and rule files (path in the stack folder -> text) as a ConfigMap."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(target, STACK_CONFIG),
        "data": {_key(path): text for path, text in files.items()},
    }


def _key(path: str) -> str:
    # A ConfigMap's keys hold no '/' (nor spaces...): the volume's items put each file back
    # in its folder under its own name.
    return re.sub(r"[^-._a-zA-Z0-9]", "_", path.replace("/", "__"))


def agent_deployment(
    target: Target, stack_file: str, files: Sequence[str], metrics_port: int | None
) -> Manifest:
    """The agent's Deployment: one pod, as its ServiceAccount, the stack from the ConfigMap."""
    container: Manifest = {
        "name": "agent",
        "image": agent_image(target),
        "command": ["sqlifier", "agent", "--env", target.env, "-f", f"{STACK_DIR}/{stack_file}"],
        "env": [
            {"name": "SQLIFIER_ENV", "value": target.env},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "HOME", "value": "/tmp"},
        ],
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "256Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "stack", "mountPath": STACK_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    if metrics_port is not None:
        container["ports"] = [{"name": "metrics", "containerPort": metrics_port, "protocol": "TCP"}]
    pod: Manifest = {
        "serviceAccountName": AGENT_NAME,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {
                "name": "stack",
                "configMap": {
                    "name": STACK_CONFIG,
                    "items": [{"key": _key(path), "path": path} for path in files],
                },
            },
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    agent_labels = labels(target)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(target, AGENT_NAME),
        "spec": {
            "replicas": 1,
            # One agent acts at a time: the old one stops before the new one starts.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": agent_labels},
            "template": {"metadata": {"labels": agent_labels}, "spec": pod},
        },
    }
