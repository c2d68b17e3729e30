"""What isolation, egress, user and the services' addresses become on Kubernetes
(render_policy.py): a NetworkPolicy denying egress but DNS and what `egress` allows, the
container's securityContext, `<NAME>_URL` as the Services' DNS names; and what cannot be
rendered (an egress host by name, an environment's TLS) refused at its line and column.
Every object passes kubernetes-validate --strict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from sqlifier.errors import DiagnosticsError
from sqlifier.platform.kubernetes.api import connect
from sqlifier.platform.kubernetes.apply import apply, plan
from sqlifier.platform.kubernetes.render import render
from sqlifier.stack import load_stack
from tests.k8s.fixtures import Cluster
from tests.platform.test_render_validate import VERSION

OWNER = {"sqlifier.dev/stack": "fenced", "sqlifier.dev/env": "cluster"}
KINDS = {"NetworkPolicy", "Service", "Deployment"}  # what the test applies

STACK = """\
[stack]
name = "fenced"

[environments.cluster]
platform = "kubernetes"
kubernetes = { namespace = "shop", gateway = "infra/public" }

[services.web]
run = "web"
image = "registry.example.com/shop/web"
routes = ["/"]
isolation = "network"
egress = ["orders", "db", "10.20.0.0/16:443"]
user = "nobody"

[services.orders]
run = "orders"
image = "registry.example.com/shop/orders"
port = 7000
isolation = "network"

[services.db]
run = "db"
image = "registry.example.com/shop/db"
stateful = true
instances = 2
port = 5432

[services.plain]
run = "plain"
image = "registry.example.com/shop/plain"
"""


def objects(tmp_path: Path, text: str = STACK) -> list[dict[str, Any]]:
    path = tmp_path / "sqlifier.toml"
    path.write_text(text)
    stack, _ = load_stack(path, "sqlifier.toml")
    return render(stack, "cluster")


def find(items: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in items if o["kind"] == kind and o["metadata"]["name"] == name)


def container(workload: dict[str, Any]) -> dict[str, Any]:
    return dict(workload["spec"]["template"]["spec"]["containers"][0])


def test_an_isolated_service_gets_a_default_deny_egress_policy(tmp_path: Path) -> None:
    items = objects(tmp_path)
    policy = find(items, "NetworkPolicy", "web-egress")
    pods = {"sqlifier.dev/stack": "fenced", "sqlifier.dev/service": "web"}
    assert policy["spec"] == {
        "podSelector": {"matchLabels": pods},  # every track: a canary is fenced too
        "policyTypes": ["Egress"],
        "egress": [
            {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
            {
                "to": [{"podSelector": {"matchLabels": {**pods, "sqlifier.dev/service": "orders"}}}],
                "ports": [{"protocol": "TCP", "port": 7000}],
            },
            {
                "to": [{"podSelector": {"matchLabels": {**pods, "sqlifier.dev/service": "db"}}}],
                "ports": [{"protocol": "TCP", "port": 5432}],
            },
            {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"protocol": "TCP", "port": 443}]},
        ],
    }  # fmt: skip
    # An isolated service with no egress may resolve names and nothing else.
    assert find(items, "NetworkPolicy", "orders-egress")["spec"]["egress"] == [
        {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    ]
    # Before the pods it fences; none for a service that is not isolated.
    names = [(o["kind"], o["metadata"]["name"]) for o in items]
    assert names.index(("NetworkPolicy", "web-egress")) < names.index(("Deployment", "web"))
    assert {n for k, n in names if k == "NetworkPolicy"} == {"web-egress", "orders-egress"}


def test_user_and_isolation_become_the_containers_security_context(tmp_path: Path) -> None:
    items = objects(tmp_path)
    web = container(find(items, "Deployment", "web"))
    assert web["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in web["volumeMounts"]
    pod = find(items, "Deployment", "web")["spec"]["template"]["spec"]
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    assert container(find(items, "Deployment", "orders"))["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["NET_ADMIN", "NET_RAW"]},
    }
    assert "securityContext" not in container(find(items, "Deployment", "plain"))


def test_service_urls_are_the_services_dns_names(tmp_path: Path) -> None:
    env = {
        e["name"]: e.get("value")
        for e in container(find(objects(tmp_path), "Deployment", "web"))["env"]
    }
    assert env["ORDERS_URL"] == "http://orders.shop.svc"  # the ClusterIP Service, port 80
    # A stateful service's headless Service names its pods: the container's port.
    assert env["DB_URL"] == "http://db.shop.svc:5432"
    assert env["DB_0_URL"] == "http://db-0.db.shop.svc:5432"
    assert env["DB_1_URL"] == "http://db-1.db.shop.svc:5432"
    assert "WEB_URL" not in env
    # The service's own env wins, as locally.
    text = STACK.replace('user = "nobody"', 'user = "nobody"\nenv = { ORDERS_URL = "http://x" }')
    env = {
        e["name"]: e.get("value")
        for e in container(find(objects(tmp_path, text), "Deployment", "web"))["env"]
    }
    assert env["ORDERS_URL"] == "http://x"


def test_every_object_passes_kubernetes_validate_strict(tmp_path: Path) -> None:
    for obj in objects(tmp_path):
        if obj["kind"] != "HTTPRoute":
            kubernetes_validate.validate(obj, VERSION, strict=True)


def errors(tmp_path: Path, text: str) -> list[tuple[int, int, str, str | None]]:
    path = tmp_path / "sqlifier.toml"
    path.write_text(text)
    with pytest.raises(DiagnosticsError) as caught:
        load_stack(path, "sqlifier.toml")
    return [(d.line, d.col, d.message, d.hint) for d in caught.value.diagnostics if d.is_error]


def test_an_egress_host_by_name_is_refused_where_it_is_written(tmp_path: Path) -> None:
    text = STACK.replace('"10.20.0.0/16:443"', '"db.example.com:5432"')
    [(line, col, message, hint)] = errors(tmp_path, text)
    assert (line, col) == (13, 27)  # the entry itself
    assert message.startswith("services.web.egress 'db.example.com:5432' names a host")
    assert hint is not None and '"192.0.2.7/32:5432"' in hint


def test_tls_of_a_kubernetes_environment_is_refused_with_what_to_do(tmp_path: Path) -> None:
    text = STACK.replace(
        'gateway = "infra/public" }', 'gateway = "infra/public" }\ntls = "self-signed"'
    )
    [(line, _, message, hint)] = errors(tmp_path, text)
    assert line == 7 and message.startswith("environments.cluster.tls cannot be rendered")
    assert hint is not None and "certificateRefs" in hint


def test_the_policy_and_hardened_workload_apply_to_a_real_control_plane(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    text = STACK.replace('namespace = "shop"', f'namespace = "{namespace}"')
    wanted = [o for o in objects(tmp_path, text) if o["kind"] in KINDS]
    with connect(namespace, kubeconfig=cluster.kubeconfig) as conn:
        stored = apply(conn, wanted)
        policy = next(o for o in stored if o["kind"] == "NetworkPolicy")
        assert policy["spec"]["egress"][1]["ports"] == [{"protocol": "TCP", "port": 7000}]
        web = next(
            o for o in stored if o["kind"] == "Deployment" and o["metadata"]["name"] == "web"
        )
        assert container(web)["securityContext"]["runAsNonRoot"] is True
        # As the server keeps them: a second plan finds nothing to change.
        assert {change.action for change in plan(conn, wanted, OWNER)} == {"unchanged"}
