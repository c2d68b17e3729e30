"""Hand-written manifests for the apply layer's tests, labelled as sqlifier labels its own."""

from __future__ import annotations

from typing import Any

__all__ = ["OTHER_STACK", "OWNER", "configmap", "deployment", "secret", "service", "statefulset"]

OWNER = {"sqlifier.dev/stack": "shop", "sqlifier.dev/env": "test"}
OTHER_STACK = {"sqlifier.dev/stack": "blog", "sqlifier.dev/env": "test"}
MANAGED = {"app.kubernetes.io/managed-by": "sqlifier"}


def _meta(name: str, owner: dict[str, str] | None) -> dict[str, Any]:
    labels = {**MANAGED, **owner} if owner is not None else {}
    return {"name": name, "labels": labels}


def deployment(
    name: str,
    replicas: int = 1,
    owner: dict[str, str] | None = OWNER,
    annotations: dict[str, str] | None = None,
    image: str = "registry.example.com/shop/web:1",
) -> dict[str, Any]:
    pods = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, owner),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": pods},
            "template": {
                "metadata": {"labels": pods, "annotations": annotations or {}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


def statefulset(name: str, replicas: int = 1, owner: dict[str, str] | None = OWNER) -> Any:
    body = deployment(name, replicas, owner)
    body["kind"] = "StatefulSet"
    body["spec"]["serviceName"] = name
    return body


def service(name: str, owner: dict[str, str] | None = OWNER) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, owner),
        "spec": {
            "selector": {"app": name},
            "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}],
        },
    }


def configmap(name: str, data: dict[str, str], owner: dict[str, str] | None = OWNER) -> Any:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(name, owner), "data": data}


def secret(name: str, data: dict[str, str], owner: dict[str, str] | None = OWNER) -> Any:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(name, owner),
        "stringData": data,
    }
