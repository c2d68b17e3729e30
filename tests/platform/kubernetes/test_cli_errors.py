"""The CLI on a Kubernetes environment when something is wrong, against the test control
plane: each failure a clear message naming the object and what to do, exit code 1, and
nothing applied left unsaid. Pods' fates (OOM kills, images that never pull) are played by
the fake node (tests/k8s/fake_node.py), a stand-in for the kubelet, which cannot run here."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tests.k8s.fixtures import Cluster
from tests.platform.kubernetes.cli_helpers import kubectl_get, ps_rows, run, small_stack
from tests.platform.kubernetes.test_apply import grant
from tests.servers import free_port


@pytest.fixture
def kubeconfig(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    return cluster.kubeconfig


def test_a_cluster_that_cannot_be_reached(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    dead = tmp_path / "kubeconfig"
    dead.write_text(
        cluster.kubeconfig.read_text().replace(
            cluster.control_plane.url, f"https://127.0.0.1:{port}"
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(dead))
    ps = run(small_stack(tmp_path, "anywhere"), "ps")
    assert (ps.returncode, ps.stdout) == (1, "")
    assert ps.stderr == (
        f"sqlifier: error: cannot reach the Kubernetes API at https://127.0.0.1:{port} "
        f"(context 'test' of {dead}): connection refused; check that the cluster runs and "
        "that this is the context meant (kubectl cluster-info)\n"
    )


def test_a_namespace_that_does_not_exist(kubeconfig: Path, tmp_path: Path) -> None:
    up = run(small_stack(tmp_path, "nowhere"), "up", "--detach")
    assert up.returncode == 1
    assert up.stderr.startswith(
        "sqlifier: error: namespace nowhere does not exist on the cluster (context 'test' of "
    )
    assert up.stderr.endswith(
        "create it (kubectl create namespace nowhere) or name another in the environment's "
        "kubernetes = { namespace = ... }\n"
    )


def test_a_verb_rbac_refuses(
    cluster: Cluster, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    grant(cluster, namespace, ["get", "list"], ["*"], "*")
    developer = cluster.control_plane.kubeconfig_for("developer")
    monkeypatch.setenv("KUBECONFIG", str(developer))
    up = run(small_stack(tmp_path, namespace), "up", "--detach")
    assert up.returncode == 1
    assert up.stderr.startswith(
        f"sqlifier: error: ServiceAccount {namespace}/sqlifier-agent: user developer may not "
        f"patch serviceaccounts in namespace {namespace} (context 'test' of {developer}): "
        "grant it a Role with verbs [patch] on resources [serviceaccounts]"
    )
    assert ps_rows(small_stack(tmp_path, namespace)) == []  # listing is allowed: nothing ran


def test_a_conflict_on_apply_names_the_field_and_the_other_manager(
    cluster: Cluster, kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    stack = small_stack(tmp_path, namespace)
    assert run(stack, "up", "--detach").returncode == 0
    from kubernetes import client

    client.AppsV1Api(cluster.api).patch_namespaced_deployment(
        "web", namespace,
        {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "registry.example.com/small/web:hotfix"}]}}}},
        field_manager="kubectl-edit",
    )  # fmt: skip
    for command in ("plan", "up"):
        result = run(stack, command, "--detach") if command == "up" else run(stack, command)
        assert result.returncode == 1, command
        assert (
            f"sqlifier: error: Deployment {namespace}/web: fields that another field manager "
            'set differ from what sqlifier applies: .spec.template.spec.containers[name="web"]'
            '.image: conflict with "kubectl-edit"'
        ) in result.stderr, result.stderr
    assert "applied before it: ServiceAccount" in result.stderr


def test_an_image_that_never_pulls_names_the_pod_and_its_events(
    kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    stack = small_stack(tmp_path, namespace, image="registry.invalid/small/web:1")
    up = run(stack, "up", "--detach", "--timeout", "3")
    assert (up.returncode, up.stdout.splitlines()[-1]) == (1, "waiting for 2 workloads to be ready")
    assert up.stderr.startswith(
        f"sqlifier: error: Deployment {namespace}/web is not ready after 3 s: 0 of 1 pods "
        f"ready; pod web-"
    )
    assert 'ImagePullBackOff (Back-off pulling image "registry.invalid/small/web:1")' in up.stderr
    assert 'Warning Failed: Failed to pull image "registry.invalid/small/web:1"' in up.stderr
    assert "every object was applied (7); the stack runs, not ready: sqlifier ps" in up.stderr
    [row] = ps_rows(stack)
    assert (row["state"], row["ready"]) == ("image-error", False)


def test_ps_names_an_oom_kill(
    cluster: Cluster, kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    stack = small_stack(tmp_path, namespace)
    assert run(stack, "up", "--detach").returncode == 0
    [row] = ps_rows(stack)
    cluster.node.oom(namespace, str(row["instance"]))
    [row] = ps_rows(stack)
    assert (row["state"], row["restarts"], row["last_exit"], row["oom_killed"]) == (
        "crashloop", 1, "OOMKilled", True,
    )  # fmt: skip
    assert row["reason"] == (
        "last exit OOMKilled (out of memory: its memory limit was reached), exit code 137; "
        "restarting after a back-off"
    )


def test_down_of_an_environment_that_needs_approval_asks_first(
    kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    stack = small_stack(
        tmp_path, namespace, environment='approval = "required"\napprovers = ["alice"]'
    )
    assert run(stack, "up", "--detach").returncode == 0
    refused = run(stack, "down")
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (
        "sqlifier: error: this environment asks before it is taken down, and this is not a "
        "terminal, so there is no one to confirm: pass --yes to take it down without asking\n"
    )
    assert len(ps_rows(stack)) == 1
    down = run(stack, "down", "--yes")
    assert down.returncode == 0, down.stderr
    assert ps_rows(stack) == []


def test_secrets_are_filled_at_apply_and_masked_in_logs(
    cluster: Cluster, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = "tok-6f1d2a9be0c4"
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.setenv("SMALL_TOKEN", value)
    stack = small_stack(tmp_path, namespace, service='secrets = { TOKEN = "env://SMALL_TOKEN" }')
    up = run(stack, "up", "--detach")
    assert up.returncode == 0, up.stderr
    assert value not in up.stdout + up.stderr
    secret = kubectl_get(cluster.api, namespace, "Secret", "web-secrets")
    assert base64.b64decode(secret.data["TOKEN"]).decode() == value
    [row] = ps_rows(stack)
    pod = str(row["instance"])
    cluster.node.set_log(namespace, pod, ["INFO started", f"ERROR the token {value} was refused"])
    logs = run(stack, "logs", "web", "--level", "error")
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout.endswith(f" {pod} ERROR    ERROR the token **** was refused\n")
    assert value not in logs.stdout
    plan = run(stack, "plan")
    assert (plan.returncode, plan.stdout.splitlines()[-1]) == (0, "nothing to change; 8 unchanged")
