"""A small stack on the test cluster for the agent's tests: its file, its workloads applied.

    stack = write_stack(tmp_path, namespace, rules="...")   # a Kubernetes environment "k8s"
    with connect(namespace, kubeconfig=cluster.kubeconfig) as conn:
        apply_workloads(conn, stack)                         # Deployments and Services only

Only the services' Deployments/StatefulSets and Services are applied (not the agent's own
Deployment, which would need an image that runs here: the tests run the agent in-process).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlifier.platform.kubernetes.api import Cluster
from sqlifier.platform.kubernetes.apply import apply
from sqlifier.platform.kubernetes.render import render
from sqlifier.stack import load_stack
from sqlifier.stack.model import Stack

__all__ = ["ENV", "apply_workloads", "write_stack"]

ENV = "k8s"

STACK = """\
[stack]
name = "kshop"
rules = ["rules/*.sql"]

[environments.k8s]
platform = "kubernetes"
kubernetes = {{ namespace = "{namespace}" }}
{extra}
[services.image-processor-svc]
image = "registry.example.com/shop/services:1"
run = "python3 shop_service.py image-processor-svc"
instances = {instances}
resources = {{ cpu = "500m", memory = "256Mi" }}

[services.web]
image = "registry.example.com/shop/services:1"
run = "python3 shop_service.py web"
instances = 1
"""


def write_stack(
    folder: Path, namespace: str, rules: str = "", extra: str = "", instances: int = 2
) -> Stack:
    (folder / "rules").mkdir(parents=True, exist_ok=True)
    (folder / "rules" / "main.sql").write_text(rules)
    path = folder / "sqlifier.toml"
    path.write_text(STACK.format(namespace=namespace, extra=extra, instances=instances))
    stack, _ = load_stack(path)
    return stack


def apply_workloads(conn: Cluster, stack: Stack) -> list[dict[str, Any]]:
    objects = [
        o
        for o in render(stack, ENV)
        if o["kind"] in ("Deployment", "StatefulSet", "Service")
        and o["metadata"]["name"] != "sqlifier-agent"
    ]
    return apply(conn, objects)
