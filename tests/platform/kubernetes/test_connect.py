"""Connecting to a cluster (a real control plane, tests/k8s/), and every way it fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sqlifier.platform.kubernetes.api import connect
from sqlifier.platform.kubernetes.errors import (
    ClusterError,
    ClusterUnreachable,
    NamespaceNotFound,
)
from tests.k8s.fixtures import Cluster
from tests.servers import free_port


def kubeconfig_like(cluster: Cluster, tmp_path: Path, **changes: str) -> Path:
    text = cluster.kubeconfig.read_text()
    for old, new in changes.items():
        text = text.replace(old, new)
    path = tmp_path / "kubeconfig"
    path.write_text(text)
    return path


def test_connect_reads_the_kubeconfig_and_names_where_it_connected(
    cluster: Cluster, namespace: str
) -> None:
    with connect(namespace, kubeconfig=cluster.kubeconfig) as conn:
        assert conn.namespace == namespace
        assert conn.where == f"context 'test' of {cluster.kubeconfig}"
        assert conn.host == cluster.control_plane.url


def test_connect_finds_the_kubeconfig_of_the_environment_variable(
    cluster: Cluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    with connect(namespace, context="test") as conn:
        assert conn.where == f"context 'test' of {cluster.kubeconfig}"


def test_a_namespace_that_does_not_exist_is_named(cluster: Cluster) -> None:
    with pytest.raises(NamespaceNotFound) as e:
        connect("nowhere", kubeconfig=cluster.kubeconfig)
    assert str(e.value) == (
        f"namespace nowhere does not exist on the cluster (context 'test' of "
        f"{cluster.kubeconfig}): create it (kubectl create namespace nowhere) or name another "
        "in the environment's kubernetes = { namespace = ... }"
    )


def test_a_cluster_that_does_not_answer_is_named_with_its_address(
    cluster: Cluster, tmp_path: Path
) -> None:
    port = free_port()
    config = kubeconfig_like(
        cluster, tmp_path, **{cluster.control_plane.url: f"https://127.0.0.1:{port}"}
    )
    with pytest.raises(ClusterUnreachable) as e:
        connect("default", kubeconfig=config)
    assert str(e.value) == (
        f"cannot reach the Kubernetes API at https://127.0.0.1:{port} (context 'test' of "
        f"{config}): connection refused; check that the cluster runs and that this is the "
        "context meant (kubectl cluster-info)"
    )


def test_credentials_the_cluster_refuses_say_so(cluster: Cluster, tmp_path: Path) -> None:
    config = kubeconfig_like(cluster, tmp_path, **{cluster.control_plane.token: "wrong"})
    with pytest.raises(ClusterUnreachable) as e:
        connect("default", kubeconfig=config)
    assert str(e.value) == (
        f"namespace default: the cluster (context 'test' of {config}) does not accept these "
        "credentials (401 Unauthorized): log in again or renew the token of that context"
    )


def test_an_unknown_context_lists_the_known_ones(cluster: Cluster) -> None:
    with pytest.raises(ClusterUnreachable) as e:
        connect("default", context="prod", kubeconfig=cluster.kubeconfig)
    assert (
        str(e.value) == f"kubeconfig {cluster.kubeconfig} has no context 'prod'; its contexts: test"
    )


def test_a_kubeconfig_that_is_not_there_is_named(tmp_path: Path) -> None:
    with pytest.raises(ClusterUnreachable) as e:
        connect("default", kubeconfig=tmp_path / "absent")
    assert str(e.value) == f"kubeconfig {tmp_path / 'absent'} does not exist or is not a file"


def test_no_kubeconfig_and_no_cluster_around_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ClusterUnreachable) as e:
        connect("default")
    assert str(e.value).startswith(
        "no kubeconfig found (looked at $KUBECONFIG and ~/.kube/config) and not running in a "
        "cluster"
    )


def test_without_the_kubernetes_client_the_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "kubernetes", None)  # as if not installed
    with pytest.raises(ClusterError) as e:
        connect("default")
    assert "pip install 'sqlifier[kubernetes]'" in str(e.value)


def test_the_platform_package_does_not_import_the_client_until_it_connects() -> None:
    code = (
        "import sys, sqlifier.platform.kubernetes.apply, sqlifier.platform.kubernetes.wait;"
        "print('kubernetes' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_damaged_kubeconfig_is_named(tmp_path: Path) -> None:
    damaged = tmp_path / "kubeconfig"
    damaged.write_text("clusters: [unclosed\n")
    with pytest.raises(ClusterUnreachable) as e:
        connect("default", kubeconfig=damaged)
    assert str(e.value).startswith(f"kubeconfig {damaged} cannot be read: ")
