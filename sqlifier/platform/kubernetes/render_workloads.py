"""A service's workload and Service: what `instances`, `run`, `env`, probes and `stateful`
become on Kubernetes.

- Stateless: a Deployment (rolling update one pod at a time, each ready before the next
  old one stops: what `restart` does locally) and a ClusterIP Service.
- `stateful = true`: a StatefulSet (pods `orders-0`, `orders-1`, started in order, each
  ready before the next) with a headless Service for stable network names, and a volume
  claim per pod mounted at `DATA_DIR`.

`run` is the container's command, split into words as locally; its `$NAME` become
Kubernetes' `$(NAME)`, read from the container's environment (with `shell = true` the
command is run by `/bin/sh -c`, which reads them itself). The container's environment is
the environment's env_file, then the service's `env`, then sqlifier's own variables
(`PORT`, `SERVICE`, `INSTANCE`, `RELEASE`, `ENV`; `INSTANCE_INDEX` and `DATA_DIR` for a
StatefulSet), as locally; secrets come from the service's Secret (render_secrets.py).
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping
from typing import Any

from sqlifier.platform.kubernetes.render_common import (
    LABEL_TRACK,
    Manifest,
    Target,
    labels,
    metadata,
    selector,
)
from sqlifier.platform.kubernetes.render_secrets import SECRET_FILES, secret_name
from sqlifier.stack.expand import expand
from sqlifier.stack.model import Probe, ProbeKind, Service

__all__ = [
    "DATA_DIR",
    "DEFAULT_PORT",
    "SERVICE_PORT",
    "STORAGE",
    "image_for",
    "resources",
    "service_object",
    "workload",
]

DEFAULT_PORT = 8080  # the container's port when the service fixes none
SERVICE_PORT = 80  # the Service's port, in front of the container's
DATA_DIR = "/data"  # where a StatefulSet's pod mounts its volume claim
STORAGE = "1Gi"  # the size of that claim
_RELEASE = "sqlifier.dev/release"


def image_for(image: str, version: str | None) -> str:
    """The image a release runs: `image` with its tag set to `version` (as written when
    there is no version)."""
    if version is None:
        return image
    name = image.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name[: name.rindex(":")]
    return f"{name}:{version}"


def release_of(image: str) -> str:
    """The version an image reference names: its tag, or its digest, or "latest"."""
    if "@" in image:
        return image.split("@", 1)[1]
    last = image.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else "latest"


def resources(service: Service) -> Manifest | None:
    """The container's requests and limits from the service's `resources` (cpu in cores,
    memory in bytes), both the same: what the local platform holds it to. None without."""
    wanted = service.resources
    if wanted is None:
        return None
    amounts: dict[str, str] = {}
    if wanted.cpu is not None:
        amounts["cpu"] = f"{round(wanted.cpu * 1000)}m"
    if wanted.memory is not None:
        amounts["memory"] = _quantity(wanted.memory)
    return {"requests": dict(amounts), "limits": dict(amounts)} if amounts else None


def _quantity(size: int) -> str:
    """Bytes as Kubernetes writes them: "256Mi" when a whole number of a binary unit."""
    for unit, scale in (("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if size % scale == 0:
            return f"{size // scale}{unit}"
    return str(size)


def service_object(target: Target, service: Service) -> Manifest:
    """The Service in front of the stable pods; headless for a stateful service."""
    spec: Manifest = {}
    if service.stateful:
        spec["clusterIP"] = "None"
    spec["selector"] = selector(target, service.name)
    spec["ports"] = [
        {"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}
    ]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(target, service.name, service.name),
        "spec": spec,
    }


def workload(
    target: Target, service: Service, version: str | None, env_file: Mapping[str, str]
) -> Manifest:
    """The Deployment, or StatefulSet, that runs the service's stable pods."""
    image = image_for(service.image or "", version)
    template = {
        "metadata": {
            "labels": {**labels(target, service.name), LABEL_TRACK: "stable"},
            "annotations": {_RELEASE: version or release_of(image)},
        },
        "spec": _pod(target, service, image, version or release_of(image), env_file),
    }
    spec: Manifest = {
        "replicas": service.instances,
        "selector": {"matchLabels": selector(target, service.name)},
    }
    if not service.stateful:
        spec["strategy"] = {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        }
        spec["template"] = template
        kind = "Deployment"
    else:
        spec["serviceName"] = service.name
        spec["podManagementPolicy"] = "OrderedReady"
        spec["updateStrategy"] = {"type": "RollingUpdate"}
        spec["template"] = template
        spec["volumeClaimTemplates"] = [
            {
                "metadata": {"name": "data", "labels": labels(target, service.name)},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": STORAGE}},
                },
            }
        ]
        kind = "StatefulSet"
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": metadata(target, service.name, service.name),
        "spec": spec,
    }


def _pod(
    target: Target, service: Service, image: str, release: str, env_file: Mapping[str, str]
) -> Manifest:
    container: Manifest = {
        "name": service.name,
        "image": image,
        "command": command(service),
        "ports": [
            {"name": "http", "containerPort": service.port or DEFAULT_PORT, "protocol": "TCP"}
        ],
        "env": _env(target, service, release, env_file),
    }
    for kind in ("startup", "readiness", "liveness"):
        probe = getattr(service.probes, kind)
        if probe is not None:
            container[f"{kind}Probe"] = probe_object(probe)
    wanted = resources(service)
    if wanted is not None:
        container["resources"] = wanted
    mounts, volumes = _volumes(service)
    if mounts:
        container["volumeMounts"] = mounts
    pod: Manifest = {
        # A service's pods do not talk to the Kubernetes API: no token in them.
        "automountServiceAccountToken": False,
        # No variables for every other Service of the namespace: only the ones listed.
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": math.ceil(service.stop_timeout),
        "containers": [container],
    }
    if volumes:
        pod["volumes"] = volumes
    return pod


def command(service: Service) -> list[str]:
    """`run` as the container's command, its `$NAME` as Kubernetes' `$(NAME)`."""
    if service.shell:  # the shell expands; every `$` reaches it as written
        return ["/bin/sh", "-c", service.run.replace("$", "$$")]
    return [_kubernetes_word(word) for word in shlex.split(service.run)]


class _Marks(dict[str, str]):
    """Every name is known: its value is a mark that becomes `$(NAME)`."""

    def __contains__(self, name: object) -> bool:
        return True

    def __getitem__(self, name: str) -> str:
        return f"\0{name}\0"


def _kubernetes_word(word: str) -> str:
    # Locally `$$` is a dollar and a `$` before no name stays; Kubernetes reads `$$` as a
    # dollar too, so every literal dollar is doubled and each variable marked, then named.
    marked = expand(word, _Marks()).replace("$", "$$")
    parts = marked.split("\0")
    return "".join(f"$({part})" if i % 2 else part for i, part in enumerate(parts))


def probe_object(probe: Probe) -> Manifest:
    """A probe with the same action, period, timeout and thresholds."""
    out: Manifest
    if probe.kind is ProbeKind.HTTP:
        out = {"httpGet": {"path": probe.target, "port": "http"}}
    elif probe.kind is ProbeKind.TCP:
        out = {"tcpSocket": {"port": "http"}}
    else:
        out = {"exec": {"command": shlex.split(probe.target)}}
    out["periodSeconds"] = max(1, math.ceil(probe.period))
    out["timeoutSeconds"] = max(1, math.ceil(probe.timeout))
    out["failureThreshold"] = probe.failure_threshold
    out["successThreshold"] = probe.success_threshold
    return out


def _env(
    target: Target, service: Service, release: str, env_file: Mapping[str, str]
) -> list[Manifest]:
    values: dict[str, Any] = {**env_file, **service.env}
    values.update(
        PORT=str(service.port or DEFAULT_PORT),
        SERVICE=service.name,
        INSTANCE=_field("metadata.name"),
        RELEASE=release,
        ENV=target.env,
    )
    if service.stateful:
        values["INSTANCE_INDEX"] = _field("metadata.labels['apps.kubernetes.io/pod-index']")
        values["DATA_DIR"] = DATA_DIR
    for name, ref in service.secrets.items():
        if ref.file is not None:
            values[name] = f"{SECRET_FILES}/{_file_name(ref.file)}"
        else:
            values[name] = {"secretKeyRef": {"name": secret_name(service.name), "key": name}}
    return [
        {"name": name, "valueFrom": value}
        if isinstance(value, dict)
        else {"name": name, "value": value}
        for name, value in values.items()
    ]


def _field(path: str) -> Manifest:
    return {"fieldRef": {"fieldPath": path}}


def _file_name(file: str) -> str:
    return file.rstrip("/").rsplit("/", 1)[-1]


def _volumes(service: Service) -> tuple[list[Manifest], list[Manifest]]:
    mounts: list[Manifest] = []
    volumes: list[Manifest] = []
    if service.stateful:
        mounts.append({"name": "data", "mountPath": DATA_DIR})
    files = {name: ref.file for name, ref in service.secrets.items() if ref.file is not None}
    if files:
        mounts.append({"name": "secret-files", "mountPath": SECRET_FILES, "readOnly": True})
        volumes.append(
            {
                "name": "secret-files",
                "secret": {
                    "secretName": secret_name(service.name),
                    "defaultMode": 0o400,
                    "items": [
                        {"key": name, "path": _file_name(file)}
                        for name, file in sorted(files.items())
                    ],
                },
            }
        )
    return mounts, volumes
