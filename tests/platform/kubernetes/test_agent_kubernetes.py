"""The agent of a Kubernetes environment on a real control plane: the engine's SCALE goes
through the scale subresource; the CLI reaches it through request ConfigMaps. CPU comes from
a REAL Prometheus scraping tests/k8s/fake_exporter.py (a mock of the kubelet's cAdvisor,
which cannot run here)."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sqlifier.agent.kubernetes_requests import ClusterAgentClient
from sqlifier.platform.kubernetes.api import Cluster as Connection
from sqlifier.platform.kubernetes.api import connect
from sqlifier.platform.kubernetes.promql import RESOURCE_QUERIES
from tests.conftest import run_sqlifier
from tests.k8s.agent_runner import running_agent
from tests.k8s.agent_stack import apply_workloads, write_stack
from tests.k8s.fake_exporter import FakeExporter
from tests.k8s.fixtures import Cluster, until
from tests.prom import needs_prometheus, running_prometheus

SERVICE = "image-processor-svc"
# The seed's rule (examples/shop/rules), with a FOR of seconds instead of 3 minutes.
SCALE_RULE = """\
RULE scale-images
ON high_cpu(>80%) FOR 3s
IF service.name = 'image-processor-svc'
DO SCALE service.name TO instances + 2
LIMIT 20;
"""


@pytest.fixture
def conn(cluster: Cluster, namespace: str) -> Iterator[Connection]:
    with connect(namespace, kubeconfig=cluster.kubeconfig) as c:
        yield c


def replicas(conn: Connection, name: str) -> int:
    path = conn.resource("apps/v1", "Deployment").path(conn.namespace, name)
    return int(conn.request("GET", path, verb="get", what=name)["spec"]["replicas"])


def pods(conn: Connection, namespace: str) -> list[str]:
    answer = conn.request(
        "GET",
        f"/api/v1/namespaces/{namespace}/pods",
        verb="list",
        what="pods",
        query=[("labelSelector", f"sqlifier.dev/service={SERVICE}")],
    )
    return sorted(p["metadata"]["name"] for p in answer["items"])


@needs_prometheus
def test_the_seed_scale_rule_scales_through_the_scale_subresource(
    cluster: Cluster, namespace: str, conn: Connection, tmp_path: Path
) -> None:
    with (
        FakeExporter() as exporter,
        running_prometheus(tmp_path / "prom", [exporter.address]) as prom,
    ):
        # The built-in cpu query with a short window: the test's series are seconds old.
        cpu = RESOURCE_QUERIES["cpu"].replace("$window", "3s")
        extra = f"\n[prometheus]\nurl = \"{prom.url}\"\nqueries = {{ cpu = '{cpu}' }}\n"
        stack = write_stack(tmp_path / "stack", namespace, rules=SCALE_RULE, extra=extra)
        apply_workloads(conn, stack)
        first, second = until(lambda: (p := pods(conn, namespace)) and len(p) == 2 and p, "2 pods")
        with running_agent(stack, tmp_path / "state", cluster.kubeconfig) as agent:
            for pod in (first, second):
                exporter.cpu(namespace, pod, 0.9)  # 90% of a core each: over 80%
            until(lambda: replicas(conn, SERVICE) == 4, "SCALE to 4 through the API", 90)
            assert replicas(conn, "web") == 1
            # The new pods are watched, and the platform sees them ready.
            until(
                lambda: sum(i.ready for i in agent.platform.instances(SERVICE)) == 4,  # type: ignore[union-attr]
                "four ready pods",
            )
            assert agent.platform is not None and agent.platform.watch.lists == 1
            until(lambda: decisions(tmp_path / "state", "done"), "the decision recorded")
        done = decisions(tmp_path / "state", "done")
        assert done[0]["action"] == "SCALE" and done[0]["service"] == SERVICE
        audit = audit_rows(tmp_path / "state")
        assert any(r["who"] == "rule scale-images" and r["result"] == "ok" for r in audit)


def decisions(state: Path, outcome: str) -> list[dict[str, Any]]:
    with sqlite3.connect(state / "decisions.db") as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM decisions WHERE outcome = ?", (outcome,)).fetchall()
    return [dict(r) for r in rows]


def audit_rows(state: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(state / "audit.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM audit").fetchall()]


def test_the_cli_pauses_and_explains_through_request_configmaps(
    cluster: Cluster, namespace: str, conn: Connection, tmp_path: Path
) -> None:
    stack = write_stack(tmp_path / "stack", namespace, rules=SCALE_RULE)
    apply_workloads(conn, stack)
    with running_agent(stack, tmp_path / "state", cluster.kubeconfig) as agent:
        client = ClusterAgentClient(conn, stack.name, "k8s", "alice")
        answer = client.request("POST", "/v1/rules/pause", {"rule": "scale-images"})
        assert answer["ok"], answer
        assert answer["message"] == "scale-images paused: evaluated and explained, but not acting"
        assert agent.automation is not None and "scale-images" in agent.automation.engine.paused
        listing = client.request("GET", "/v1/rules")
        assert {r["rule"] for r in listing["rules"]} == {"scale-images"}
        # The CLI itself, as a user runs it, through the same ConfigMaps.
        env = {"KUBECONFIG": str(cluster.kubeconfig)}
        stack_file = str(tmp_path / "stack" / "sqlifier.toml")
        with _environ(env):
            resumed = run_sqlifier(
                "rules", "resume", "scale-images", "--env", "k8s", "-f", stack_file
            )
            explained = run_sqlifier(
                "rules", "explain", "scale-images", "--env", "k8s", "-f", stack_file, "--json"
            )
            wrong = run_sqlifier("rules", "pause", "nope", "--env", "k8s", "-f", stack_file)
        assert resumed.returncode == 0, resumed.stderr
        assert resumed.stdout.strip() == "scale-images resumed"
        assert "scale-images" not in agent.automation.engine.paused
        assert explained.returncode == 0, explained.stderr
        assert json.loads(explained.stdout)[0]["service"] == SERVICE
        assert wrong.returncode == 1
        assert "no rule 'nope'; rules: scale-images" in wrong.stderr
        assert agent.requests_answered == 5
    # Every request ConfigMap was deleted by the CLI that made it.
    left = conn.request(
        "GET", f"/api/v1/namespaces/{namespace}/configmaps", verb="list", what="configmaps",
        query=[("labelSelector", "sqlifier.dev/request")],
    )  # fmt: skip
    assert left["items"] == []
    audit = audit_rows(tmp_path / "state")
    actions = [(r["who"], r["what"]) for r in audit if r["what"].startswith("rules ")]
    assert actions[0] == ("alice", "rules pause")
    assert [a for _, a in actions] == ["rules pause", "rules resume"]


class _environ:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.before: dict[str, str | None] = {}

    def __enter__(self) -> None:
        for k, v in self.values.items():
            self.before[k] = os.environ.get(k)
            os.environ[k] = v

    def __exit__(self, *exc: object) -> None:
        for k, v in self.before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_sqlifier_agent_refuses_a_local_environment(tmp_path: Path) -> None:
    stack = write_stack(tmp_path, "shop")
    done = run_sqlifier("agent", "--env", "dev", "-f", str(stack.path))
    assert done.returncode == 1
    assert "environment dev of sqlifier.toml runs on the local platform" in done.stderr
    assert "sqlifier up --env dev" in done.stderr


def test_sqlifier_agent_says_when_the_cluster_cannot_be_reached(tmp_path: Path) -> None:
    stack = write_stack(tmp_path, "shop")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "gone",
            "clusters": [{"name": "gone", "cluster": {"server": "https://127.0.0.1:1"}}],
            "users": [{"name": "me", "user": {"token": "t"}}],
            "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "me"}}],
        })
    )  # fmt: skip
    done = run_sqlifier(
        "agent", "--env", "k8s", "-f", str(stack.path), "--kubeconfig", str(kubeconfig)
    )
    assert done.returncode == 1, done.stderr
    assert "cannot reach the Kubernetes API at https://127.0.0.1:1" in done.stderr
    assert "connection refused" in done.stderr
    assert "Traceback" not in done.stderr
