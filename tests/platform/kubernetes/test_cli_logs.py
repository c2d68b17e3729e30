"""`sqlifier logs` on a Kubernetes environment: pods/log through the API server, from the
fake node's kubelet endpoint (tests/k8s/fake_node.py: a stand-in for the kubelet, which
cannot run here), with the local command's filters and shapes."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BIN
from tests.k8s.fixtures import Cluster
from tests.platform.kubernetes.cli_helpers import ps_rows, run, small_stack


@pytest.fixture
def web(
    cluster: Cluster, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, list[str]]:
    """A stack of two web pods, up; its folder and its pods."""
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    stack = small_stack(tmp_path, namespace, instances=2)
    up = run(stack, "up", "--detach")
    assert up.returncode == 0, up.stderr
    return stack, sorted(str(r["instance"]) for r in ps_rows(stack))


def test_logs_of_every_pod_oldest_first_with_their_levels(
    cluster: Cluster, namespace: str, web: tuple[Path, list[str]]
) -> None:
    stack, (first, second) = web
    now = time.time()
    cluster.node.set_log(namespace, second, ["ERROR two"], at=now - 4)
    cluster.node.set_log(namespace, first, ["INFO one"], at=now - 6)
    cluster.node.append_log(namespace, first, ["WARN three"])
    result = run(stack, "logs", "web")
    assert result.returncode == 0, result.stderr
    assert [line.split(" ", 1)[1] for line in result.stdout.splitlines()] == [
        f"{first} INFO     INFO one",
        f"{second} ERROR    ERROR two",
        f"{first} WARN     WARN three",
    ]
    warned = run(stack, "logs", "web", "--level", "warn", "--json")
    records = [json.loads(line) for line in warned.stdout.splitlines()]
    assert [(r["instance"], r["level"], r["line"], r["stream"]) for r in records] == [
        (second, "error", "ERROR two", "output"),
        (first, "warn", "WARN three", "output"),
    ]
    only = run(stack, "logs", "web", "--instance", second)
    assert only.stdout.endswith(f" {second} ERROR    ERROR two\n")


def test_since_asks_the_cluster_for_the_recent_lines_only(
    cluster: Cluster, namespace: str, web: tuple[Path, list[str]]
) -> None:
    stack, (first, _) = web
    cluster.node.set_log(namespace, first, ["INFO an hour ago"], at=time.time() - 3600)
    cluster.node.append_log(namespace, first, ["INFO just now"])
    result = run(stack, "logs", "web", "--since", "10m")
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(f" {first} INFO     INFO just now\n")
    assert "an hour ago" not in result.stdout


def test_an_instance_that_is_not_one_of_the_services_pods(web: tuple[Path, list[str]]) -> None:
    stack, pods = web
    result = run(stack, "logs", "web", "--instance", "web-gone")
    assert result.returncode == 1
    assert result.stderr == (
        f"sqlifier: error: no pod 'web-gone' of web in cluster; web's pods: {', '.join(pods)}\n"
    )


def test_follow_prints_lines_as_the_pods_write_them(
    cluster: Cluster, namespace: str, web: tuple[Path, list[str]]
) -> None:
    stack, (first, second) = web
    cluster.node.set_log(namespace, first, ["INFO before"])
    cluster.node.set_log(namespace, second, [])
    command = [str(BIN / "sqlifier"), "logs", "web", "--follow", "--env", "cluster"]
    with subprocess.Popen(command, cwd=stack, stdout=subprocess.PIPE, text=True) as follower:
        try:
            assert follower.stdout is not None
            assert follower.stdout.readline().endswith(f" {first} INFO     INFO before\n")
            cluster.node.append_log(namespace, second, ["ERROR after"])
            assert follower.stdout.readline().endswith(f" {second} ERROR    ERROR after\n")
        finally:
            follower.terminate()
