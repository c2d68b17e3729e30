"""What every rendered object shares: where it goes, its name, its labels.

Every object sqlifier renders carries the standard labels (`app.kubernetes.io/name`,
`app.kubernetes.io/part-of: <stack>`, `app.kubernetes.io/managed-by: sqlifier`) and
sqlifier's own (`sqlifier.dev/stack`, `sqlifier.dev/env`, and `sqlifier.dev/service` for a
service's objects): `up` prunes, and `down` removes, only objects holding all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlifier.errors import UserError
from sqlifier.stack.kubernetes import AGENT_NAME
from sqlifier.stack.model import PlatformKind, Stack

__all__ = [
    "AGENT_NAME",
    "LABEL_ENV",
    "LABEL_SERVICE",
    "LABEL_STACK",
    "LABEL_TRACK",
    "MANAGED_BY",
    "Manifest",
    "Target",
    "labels",
    "metadata",
    "selector",
]

Manifest = dict[str, Any]  # one Kubernetes object, as its YAML or JSON reads

MANAGED_BY = "sqlifier"
LABEL_STACK = "sqlifier.dev/stack"
LABEL_ENV = "sqlifier.dev/env"
LABEL_SERVICE = "sqlifier.dev/service"
# "stable" for the workloads render makes; a release being rolled out runs beside them
# as a second workload whose pods say "canary".
LABEL_TRACK = "sqlifier.dev/track"


@dataclass(frozen=True, slots=True)
class Target:
    """A Kubernetes environment of a stack: its name and where its objects go."""

    stack: str
    env: str
    namespace: str
    gateway: str | None
    context: str | None = None
    agent_image: str | None = None

    @classmethod
    def of(cls, stack: Stack, env: str) -> Target:
        """The target of environment `env`; UserError when it does not run on Kubernetes."""
        environment = stack.environment(env)
        kubernetes = environment.kubernetes
        if environment.platform is not PlatformKind.KUBERNETES or kubernetes is None:
            raise UserError(
                f"environment {env} of {stack.path.name} runs on the local platform: only a "
                'Kubernetes environment has manifests; set platform = "kubernetes" and '
                f'kubernetes = {{ namespace = "..." }} in [environments.{env}]'
            )
        return cls(
            stack.name,
            env,
            kubernetes.namespace,
            kubernetes.gateway,
            kubernetes.context,
            kubernetes.agent_image,
        )


def labels(target: Target, service: str | None = None) -> dict[str, str]:
    """The labels of an object of `service` (or of the agent, for None)."""
    out = {
        "app.kubernetes.io/name": service or AGENT_NAME,
        "app.kubernetes.io/part-of": target.stack,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_STACK: target.stack,
        LABEL_ENV: target.env,
    }
    if service is not None:
        out[LABEL_SERVICE] = service
    return out


def selector(target: Target, service: str) -> dict[str, str]:
    """The labels that pick the stable pods of `service` (a workload's selector)."""
    return {LABEL_STACK: target.stack, LABEL_SERVICE: service, LABEL_TRACK: "stable"}


def metadata(
    target: Target,
    name: str,
    service: str | None = None,
    annotations: dict[str, str] | None = None,
) -> Manifest:
    out: Manifest = {"name": name, "namespace": target.namespace, "labels": labels(target, service)}
    if annotations:
        out["annotations"] = annotations
    return out
