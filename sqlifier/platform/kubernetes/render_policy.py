"""What a service's fences and its neighbours' addresses become on Kubernetes
(docs/isolation.md, "On Kubernetes").

- `isolation = "network"`: a NetworkPolicy `NAME-egress` selecting the service's pods
  (every track), denying their egress but for cluster DNS (port 53, UDP and TCP, to any
  pod or address: resolving names is how `<NAME>_URL` works there), the pods of the
  services `egress` names on their container's port, and `egress` networks as ipBlocks.
  A host by name cannot be a NetworkPolicy peer: check_kubernetes refuses it.
- `user` and `isolation`: the container's `securityContext`. Both: no privilege
  escalation. `user`: runAsNonRoot, every capability dropped, a read-only root file
  system with an emptyDir at /tmp. `isolation` alone: NET_ADMIN and NET_RAW dropped (the
  pod cannot change its own network). The account is a name on the local machine; a
  cluster runs the image's (numeric) USER, which runAsNonRoot holds to not being root.
- `<NAME>_URL`: the other services' Service DNS names, `http://orders.NAMESPACE.svc`
  (port 80 of its ClusterIP Service); for a stateful service the headless Service's
  names reach the pods directly, on the container's port, `http://db.NAMESPACE.svc:5000`
  and one per pod, `DB_0_URL=http://db-0.db.NAMESPACE.svc:5000`.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlifier.platform.kubernetes.render_common import (
    LABEL_SERVICE,
    LABEL_STACK,
    Manifest,
    Target,
    metadata,
)
from sqlifier.platform.kubernetes.render_workloads import DEFAULT_PORT, SERVICE_PORT
from sqlifier.stack.model import Isolation, Service

__all__ = ["TMP", "harden", "network_policy", "service_urls"]

TMP = "/tmp"  # the writable emptyDir of a pod whose root file system is read-only


def _env_var(name: str) -> str:
    return name.upper().replace("-", "_") + "_URL"


def service_urls(target: Target, services: Mapping[str, Service], service: str) -> dict[str, str]:
    """The `<NAME>_URL` variables a pod of `service` gets: every other service's."""
    urls: dict[str, str] = {}
    for name, other in services.items():
        if name == service:
            continue
        domain = f"{name}.{target.namespace}.svc"
        if not other.stateful:  # its ClusterIP Service's port
            shown = "" if SERVICE_PORT == 80 else f":{SERVICE_PORT}"
            urls[_env_var(name)] = f"http://{domain}{shown}"
            continue
        port = other.port or DEFAULT_PORT  # headless: the names are the pods' addresses
        urls[_env_var(name)] = f"http://{domain}:{port}"
        for index in range(other.instances):
            urls[_env_var(f"{name}-{index}")] = f"http://{name}-{index}.{domain}:{port}"
    return urls


def _pods(target: Target, service: str) -> Manifest:
    """A selector for every pod of `service` (stable and canary)."""
    return {"matchLabels": {LABEL_STACK: target.stack, LABEL_SERVICE: service}}


def network_policy(
    target: Target, service: Service, services: Mapping[str, Service]
) -> Manifest | None:
    """The NetworkPolicy of an isolated service; None for one that is not isolated."""
    if service.isolation is not Isolation.NETWORK:
        return None
    dns_ports = [{"protocol": protocol, "port": 53} for protocol in ("UDP", "TCP")]
    egress: list[Manifest] = [{"ports": dns_ports}]
    for entry in service.egress:
        if entry.kind == "service" and entry.target in services:
            port = services[entry.target].port or DEFAULT_PORT
            egress.append(
                {
                    "to": [{"podSelector": _pods(target, entry.target)}],
                    "ports": [{"protocol": "TCP", "port": port}],
                }
            )
        elif entry.kind == "network" and entry.port is not None:
            cidr = entry.target if "/" in entry.target else f"{entry.target}/32"
            egress.append(
                {
                    "to": [{"ipBlock": {"cidr": cidr}}],
                    "ports": [{"protocol": "TCP", "port": entry.port}],
                }
            )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(target, f"{service.name}-egress", service.name),
        "spec": {
            "podSelector": _pods(target, service.name),
            "policyTypes": ["Egress"],
            "egress": egress,
        },
    }


def harden(workload: Manifest, service: Service) -> Manifest:
    """The workload with its container's securityContext for `user` and `isolation`
    (and /tmp as an emptyDir when its root file system is read-only)."""
    if service.user is None and service.isolation is not Isolation.NETWORK:
        return workload
    pod: Manifest = workload["spec"]["template"]["spec"]
    container: Manifest = pod["containers"][0]
    context: Manifest = {"allowPrivilegeEscalation": False}
    if service.user is not None:
        context["runAsNonRoot"] = True
        context["readOnlyRootFilesystem"] = True
        context["capabilities"] = {"drop": ["ALL"]}
        container.setdefault("volumeMounts", []).append({"name": "tmp", "mountPath": TMP})
        pod.setdefault("volumes", []).append({"name": "tmp", "emptyDir": {}})
    else:
        context["capabilities"] = {"drop": ["NET_ADMIN", "NET_RAW"]}
    container["securityContext"] = context
    return workload
