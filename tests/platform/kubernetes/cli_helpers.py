"""The CLI on a Kubernetes environment, as a user runs it: the installed command in its own
process, its kubeconfig from $KUBECONFIG, against the test control plane (tests/k8s/)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import run_sqlifier
from tests.platform.render_stacks import SHOP

__all__ = ["SMALL", "copy_shop", "kubectl_get", "ps_rows", "run", "small_stack"]

SMALL = """\
[stack]
name = "small"

[environments.cluster]
platform = "kubernetes"
kubernetes = {{ namespace = "{namespace}" }}
{environment}
[services.web]
image = "{image}"
run = "python3 web.py"
instances = {instances}
{service}
"""


def copy_shop(tmp_path: Path, namespace: str) -> Path:
    """The example shop in a folder of its own, its cluster environment in `namespace`."""
    folder = tmp_path / "shop"
    shutil.copytree(SHOP.parent, folder, ignore=shutil.ignore_patterns(".sqlifier", "__pycache__"))
    stack = folder / "sqlifier.toml"
    text = stack.read_text()
    assert 'namespace = "shop"' in text
    stack.write_text(text.replace('namespace = "shop"', f'namespace = "{namespace}"'))
    return folder


def small_stack(
    tmp_path: Path,
    namespace: str,
    *,
    image: str = "registry.example.com/small/web:1",
    instances: int = 1,
    service: str = "",
    environment: str = "",
) -> Path:
    """A stack of one service, `web`, whose environment `cluster` is in `namespace`."""
    folder = tmp_path / "small"
    folder.mkdir(exist_ok=True)
    (folder / "sqlifier.toml").write_text(
        SMALL.format(
            namespace=namespace,
            image=image,
            instances=instances,
            service=service,
            environment=environment,
        )
    )
    return folder


def run(folder: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`sqlifier ARGS --env cluster` in `folder`."""
    return run_sqlifier(*args, "--env", "cluster", cwd=folder, stdin=stdin)


def ps_rows(folder: Path) -> list[dict[str, Any]]:
    result = run(folder, "ps", "--json")
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def kubectl_get(api: Any, namespace: str, kind: str, name: str) -> Any:
    """An object as the admin reads it (the kubernetes client, not sqlifier)."""
    from kubernetes import client

    if kind in ("Deployment", "StatefulSet"):
        apps = client.AppsV1Api(api)
        read = (
            apps.read_namespaced_deployment
            if kind == "Deployment"
            else apps.read_namespaced_stateful_set
        )
        return read(name, namespace)
    if kind == "Secret":
        return client.CoreV1Api(api).read_namespaced_secret(name, namespace)
    raise ValueError(kind)
