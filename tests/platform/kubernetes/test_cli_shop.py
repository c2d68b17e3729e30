"""The example shop on the test control plane through the CLI, as its docs walk through
it (docs/kubernetes.md): render validates, plan, up brings it ready, ps, scale, restart,
logs, down leaves nothing sqlifier owned. The fake node (tests/k8s/fake_node.py) plays the
kubelet: it "pulls" every image and reports the pods Running and Ready."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.k8s.fixtures import Cluster
from tests.platform.kubernetes.cli_helpers import copy_shop, kubectl_get, ps_rows, run

SHOP_PODS = {"image-processor-svc": 2, "orders": 2, "payment-gateway": 1, "storefront": 2}


@pytest.fixture
def shop(
    gateway_api: Cluster, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    monkeypatch.setenv("KUBECONFIG", str(gateway_api.kubeconfig))
    return copy_shop(tmp_path, namespace)


@pytest.fixture
def shop_up(shop: Path) -> Path:
    up = run(shop, "up", "--detach")
    assert up.returncode == 0, up.stderr
    return shop


def by_service(rows: list[dict[str, object]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[str(row["service"])] = counts.get(str(row["service"]), 0) + 1
    return counts


def test_render_of_the_shop_is_what_up_applies(shop: Path) -> None:
    render = run(shop, "render")
    assert render.returncode == 0, render.stderr
    assert len(list(yaml.safe_load_all(render.stdout))) == 21
    plan = run(shop, "plan")
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.splitlines()[-1] == "21 to create; 0 unchanged"
    assert "  + create StatefulSet " in plan.stdout


def test_up_applies_the_shop_and_returns_once_every_pod_is_ready(
    shop: Path, namespace: str
) -> None:
    up = run(shop, "up", "--detach")
    assert up.returncode == 0, up.stderr
    lines = up.stdout.splitlines()
    assert lines[0].startswith(f"applying 21 objects of shop (cluster) to namespace {namespace}")
    assert "applied 21 objects (server-side apply, field manager sqlifier)" in lines
    assert lines[-1].startswith(
        f"shop (cluster) is up: 7 pods ready in 5 workloads on namespace {namespace}"
    )
    rows = ps_rows(shop)
    assert by_service(rows) == SHOP_PODS
    assert {(r["state"], r["ready"], r["node"], r["track"], r["release"]) for r in rows} == {
        ("ready", True, "fake-node-1", "stable", "latest")
    }
    assert {r["instance"] for r in rows} >= {"orders-0", "orders-1"}


def test_a_plan_after_up_changes_nothing(shop_up: Path) -> None:
    plan = run(shop_up, "plan")
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.splitlines()[-1] == "nothing to change; 21 unchanged"


def test_up_again_changes_nothing_and_is_ready_at_once(shop_up: Path) -> None:
    again = run(shop_up, "up", "--detach")
    assert again.returncode == 0, again.stderr
    assert "is up: 7 pods ready" in again.stdout


def test_ps_prints_the_pods_as_a_table(shop_up: Path) -> None:
    ps = run(shop_up, "ps")
    assert ps.returncode == 0, ps.stderr
    header, *rows = ps.stdout.splitlines()
    assert header.split() == [
        "SERVICE", "INSTANCE", "RELEASE", "TRACK", "STATE", "NODE", "ADDRESS", "RESTARTS", "REASON"
    ]  # fmt: skip
    assert len(rows) == 7
    assert rows[2].split()[:2] == ["orders", "orders-0"]


def test_scale_goes_through_the_scale_subresource(
    shop_up: Path, gateway_api: Cluster, namespace: str
) -> None:
    scaled = run(shop_up, "scale", "image-processor-svc", "3")
    assert scaled.returncode == 0, scaled.stderr
    assert (
        scaled.stdout.splitlines()[0] == "image-processor-svc: 2 -> 3 replicas (scale subresource)"
    )
    deployment = kubectl_get(gateway_api.api, namespace, "Deployment", "image-processor-svc")
    assert deployment.spec.replicas == 3
    assert by_service(ps_rows(shop_up))["image-processor-svc"] == 3
    down = run(shop_up, "scale", "orders", "1", "--json")
    assert down.returncode == 0, down.stderr
    assert [r["instance"] for r in ps_rows(shop_up) if r["service"] == "orders"] == ["orders-0"]


def test_restart_rolls_every_pod_of_the_service(
    shop_up: Path, gateway_api: Cluster, namespace: str
) -> None:
    before = {r["instance"] for r in ps_rows(shop_up) if r["service"] == "storefront"}
    restarted = run(shop_up, "restart", "storefront", "--json")
    assert restarted.returncode == 0, restarted.stderr
    after = {
        r["instance"]
        for r in ps_rows(shop_up)
        if r["service"] == "storefront" and r["state"] == "ready"
    }
    assert len(after) == 2
    assert not before & after
    deployment = kubectl_get(gateway_api.api, namespace, "Deployment", "storefront")
    assert "kubectl.kubernetes.io/restartedAt" in deployment.spec.template.metadata.annotations
    assert run(shop_up, "plan").stdout.splitlines()[-1] == "nothing to change; 21 unchanged"


def test_down_leaves_nothing_sqlifier_owned_but_the_data(
    shop_up: Path, gateway_api: Cluster, namespace: str
) -> None:
    from kubernetes import client

    core = client.CoreV1Api(gateway_api.api)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "not-ours"}})
    down = run(shop_up, "down")
    assert down.returncode == 0, down.stderr
    assert down.stdout.splitlines()[0].startswith("deleted 21 objects: ")
    assert (
        "kept 2 volume claims holding the stateful services' data: data-orders-0, data-orders-1"
        in down.stdout
    )
    assert down.stdout.splitlines()[-1] == "shop (cluster) is down"
    assert ps_rows(shop_up) == []
    assert run(shop_up, "plan").stdout.splitlines()[-1] == "21 to create; 0 unchanged"
    assert core.read_namespaced_config_map("not-ours", namespace).metadata.name == "not-ours"
    assert core.list_namespaced_pod(namespace).items == []
    again = run(shop_up, "down")
    assert (again.returncode, again.stdout.split(" is on ")[0]) == (0, "nothing of shop (cluster)")


def test_the_same_stack_file_still_runs_the_shop_locally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No cluster: the shop's default environment runs on this machine, its `image` keys
    # and its `cluster` environment ignored. Its `python3` is the one with alembic.
    from tests.conftest import BIN, run_sqlifier

    monkeypatch.setenv("PATH", f"{BIN}:{os.environ['PATH']}")
    shop = copy_shop(tmp_path, "shop")
    try:
        # Seven instances and a migration: longer than run_sqlifier's minute on a busy machine.
        up = subprocess.run(
            [str(BIN / "sqlifier"), "up", "--detach"],
            cwd=shop, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert up.returncode == 0, up.stderr
        assert up.stdout.startswith("shop (dev) is up: 7 instances ready")
        ps = run_sqlifier("ps", "--json", cwd=shop)
        rows = json.loads(ps.stdout)
        assert by_service(rows) == SHOP_PODS
        assert {r["state"] for r in rows} == {"ready"}
        assert all(r["pid"] for r in rows)
    finally:
        down = run_sqlifier("down", cwd=shop)
    assert (down.returncode, down.stdout) == (0, "shop (dev) is down\n")
