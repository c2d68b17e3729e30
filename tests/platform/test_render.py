"""`render`: what each part of a service becomes on Kubernetes, asserted on the objects'
structure (no golden files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sqlifier.errors import UserError
from sqlifier.platform.kubernetes.render import file_names, render, to_yaml, write_dir
from sqlifier.platform.kubernetes.render_agent import role_rules
from sqlifier.platform.kubernetes.render_common import Target
from sqlifier.platform.kubernetes.render_routes import http_routes
from sqlifier.platform.kubernetes.render_workloads import command, image_for, resources
from sqlifier.stack import load_stack
from sqlifier.stack.model import Route, Service
from tests.platform.render_stacks import full, shop

Manifest = dict[str, Any]


def find(objects: list[Manifest], kind: str, name: str) -> Manifest:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)}"
    return found[0]


def container(workload: Manifest) -> Manifest:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: Manifest = containers[0]
    return result


def env_of(workload: Manifest) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(workload)["env"]}


# --- order and shape ---------------------------------------------------------------------


def test_the_shop_renders_in_apply_order() -> None:
    objects = render(shop(), "cluster")
    assert [f"{o['kind']}/{o['metadata']['name']}" for o in objects] == [
        "ServiceAccount/sqlifier-agent",
        "Role/sqlifier-agent",
        "RoleBinding/sqlifier-agent",
        # dependencies first: storefront depends on payment-gateway and orders
        "Service/payment-gateway",
        "Deployment/payment-gateway",
        "HTTPRoute/payment-gateway",
        "HTTPRoute/payment-gateway.shop.localhost",
        "Service/orders",
        "StatefulSet/orders",
        "HTTPRoute/orders",
        "HTTPRoute/orders.shop.localhost",
        "Service/storefront",
        "Deployment/storefront",
        "HTTPRoute/storefront",
        "HTTPRoute/storefront.shop.localhost",
        "Service/image-processor-svc",
        "Deployment/image-processor-svc",
        "HTTPRoute/image-processor-svc",
        "HTTPRoute/image-processor-svc.shop.localhost",
        "ConfigMap/sqlifier-agent-stack",
        "Deployment/sqlifier-agent",
    ]
    assert {o["metadata"]["namespace"] for o in objects} == {"shop"}


def test_the_same_stack_renders_the_same_text(tmp_path: Path) -> None:
    first = to_yaml(render(full(tmp_path), "prod"))
    assert to_yaml(render(full(tmp_path), "prod")) == first
    assert list(yaml.safe_load_all(first)) == render(full(tmp_path), "prod")


def test_every_object_carries_the_standard_labels(tmp_path: Path) -> None:
    for obj in render(full(tmp_path), "prod"):
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "sqlifier"
        assert labels["app.kubernetes.io/part-of"] == "full"
        assert labels["sqlifier.dev/stack"] == "full"
        assert labels["sqlifier.dev/env"] == "prod"
        service = labels.get("sqlifier.dev/service")
        assert labels["app.kubernetes.io/name"] == (service or "sqlifier-agent")


def test_a_local_environment_has_no_manifests() -> None:
    with pytest.raises(UserError) as caught:
        render(shop(), "dev")
    assert str(caught.value) == (
        "environment dev of sqlifier.toml runs on the local platform: only a Kubernetes "
        'environment has manifests; set platform = "kubernetes" and kubernetes = '
        '{ namespace = "..." } in [environments.dev]'
    )


# --- stateless services -------------------------------------------------------------------


def test_a_stateless_service_is_a_deployment_behind_a_service() -> None:
    objects = render(shop(), "cluster")
    deployment = find(objects, "Deployment", "storefront")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= spec["template"]["metadata"]["labels"].items()
    assert selector["sqlifier.dev/track"] == "stable"
    # One new pod at a time, each ready before an old one stops: restart as locally.
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    service = find(objects, "Service", "storefront")
    assert service["spec"]["selector"] == selector
    assert "clusterIP" not in service["spec"]
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    assert container(deployment)["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"}
    ]
    assert container(deployment)["command"] == ["python3", "shop_service.py", "storefront"]
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False


def test_the_environment_is_the_env_file_then_env_then_sqlifiers_own(tmp_path: Path) -> None:
    web = find(render(full(tmp_path), "prod"), "Deployment", "web")
    assert env_of(web) == {
        # The other services' Service DNS names (render_policy.py): db is headless.
        "DB_URL": "http://db.apps.svc:5000",
        **{f"DB_{i}_URL": f"http://db-{i}.db.apps.svc:5000" for i in range(3)},
        "WORKER_URL": "http://worker.apps.svc",
        "GREETING": "from the stack",  # env wins over the env file, as locally
        "REGION": "eu",
        "LOG_LEVEL": "info",
        "PORT": "8080",
        "SERVICE": "web",
        "INSTANCE": {"fieldRef": {"fieldPath": "metadata.name"}},
        "RELEASE": "latest",
        "ENV": "prod",
    }


def test_run_reads_variables_as_kubernetes_expands_them() -> None:
    def cmd(run: str, shell: bool = False) -> list[str]:
        return command(Service("s", run, Path("."), shell=shell))

    assert cmd("app --port $PORT --name ${SERVICE}x") == [
        "app",
        "--port",
        "$(PORT)",
        "--name",
        "$(SERVICE)x",
    ]
    # A literal dollar stays one: Kubernetes reads `$$` as `$`.
    assert cmd("app '$$5' a$ $(x)") == ["app", "$$5", "a$$", "$$(x)"]
    assert cmd("exec app --port $PORT", shell=True) == ["/bin/sh", "-c", "exec app --port $$PORT"]


def test_a_release_sets_the_image_tag() -> None:
    assert image_for("registry.example.com/shop/web", "1.4") == "registry.example.com/shop/web:1.4"
    assert image_for("localhost:5000/web:old", "1.4") == "localhost:5000/web:1.4"
    assert image_for("r.example.com/web@sha256:" + "a" * 64, "2") == "r.example.com/web:2"
    assert image_for("localhost:5000/web", None) == "localhost:5000/web"
    objects = render(shop(), "cluster", releases={"storefront": "v7"})
    storefront = find(objects, "Deployment", "storefront")
    assert container(storefront)["image"] == "registry.example.com/shop/services:v7"
    assert env_of(storefront)["RELEASE"] == "v7"
    assert storefront["spec"]["template"]["metadata"]["annotations"] == {
        "sqlifier.dev/release": "v7"
    }
    other = find(objects, "Deployment", "payment-gateway")
    assert container(other)["image"] == "registry.example.com/shop/services"


# --- probes --------------------------------------------------------------------------------


def test_probes_map_one_to_one(tmp_path: Path) -> None:
    db = container(find(render(full(tmp_path), "prod"), "StatefulSet", "db"))
    assert db["startupProbe"] == {
        "tcpSocket": {"port": "http"},
        "periodSeconds": 2,
        "timeoutSeconds": 1,
        "failureThreshold": 30,
        "successThreshold": 1,
    }
    assert db["readinessProbe"] == {
        "exec": {"command": ["db-ready", "--quick"]},
        "periodSeconds": 5,
        "timeoutSeconds": 3,
        "failureThreshold": 3,
        "successThreshold": 2,
    }
    assert db["livenessProbe"] == {
        "httpGet": {"path": "/alive", "port": "http"},
        "periodSeconds": 10,
        "timeoutSeconds": 1,
        "failureThreshold": 6,
        "successThreshold": 1,
    }
    web = container(find(render(full(tmp_path), "prod"), "Deployment", "web"))
    assert not {"startupProbe", "readinessProbe", "livenessProbe"} & set(web)


# --- stateful services -----------------------------------------------------------------------


def test_a_stateful_service_is_a_statefulset_with_a_headless_service(tmp_path: Path) -> None:
    objects = render(full(tmp_path), "prod")
    db = find(objects, "StatefulSet", "db")
    spec = db["spec"]
    assert spec["replicas"] == 3
    assert spec["serviceName"] == "db"
    assert spec["podManagementPolicy"] == "OrderedReady"  # each ready before the next
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}},
    }
    assert {"name": "data", "mountPath": "/data"} in container(db)["volumeMounts"]
    env = env_of(db)
    assert env["DATA_DIR"] == "/data"
    assert env["INSTANCE_INDEX"] == {
        "fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}
    }
    assert env["PORT"] == "5000"  # a fixed port is the container's, the same in every pod
    assert container(db)["ports"][0]["containerPort"] == 5000
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] == 30
    service = find(objects, "Service", "db")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]


# --- routes ----------------------------------------------------------------------------------


def _paths(route: Manifest) -> list[str]:
    (rule,) = route["spec"]["rules"]
    return [match["path"]["value"] for match in rule["matches"]]


def test_routes_become_httproutes_on_the_named_gateway() -> None:
    objects = render(shop(), "cluster")
    route = find(objects, "HTTPRoute", "image-processor-svc")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "public",
            "namespace": "infra",
        }
    ]
    assert "hostnames" not in route["spec"]
    (rule,) = route["spec"]["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/images"}}]
    assert rule["backendRefs"] == [
        {"group": "", "kind": "Service", "name": "image-processor-svc", "port": 80}
    ]


def test_the_longest_path_wins_on_a_host_as_locally() -> None:
    # Locally shop.localhost/images goes to image-processor-svc (a longer path than the
    # storefront's shop.localhost/); a Gateway weighs the host first, so the host-less
    # /images is repeated in an HTTPRoute naming the host.
    objects = render(shop(), "cluster")
    on_host = find(objects, "HTTPRoute", "image-processor-svc.shop.localhost")
    assert on_host["spec"]["hostnames"] == ["shop.localhost"]
    assert _paths(on_host) == ["/images"]
    storefront = find(objects, "HTTPRoute", "storefront.shop.localhost")
    assert _paths(storefront) == ["/"]


def test_a_host_route_beats_another_services_hostless_route_on_the_same_path() -> None:
    services = {
        "a": Service("a", "a", Path("."), routes=(Route(None, "/api"), Route(None, "/a"))),
        "b": Service("b", "b", Path("."), routes=(Route("x.example.com", "/api"),)),
    }
    routes = http_routes(Target("s", "e", "ns", "gw"), services)
    assert [r["metadata"]["name"] for r in routes["a"]] == ["a", "a.x.example.com"]
    assert _paths(routes["a"][1]) == ["/a"]  # /api on x.example.com is b's
    assert [_paths(r) for r in routes["b"]] == [["/api"]]


def test_paths_are_ordered_longest_first(tmp_path: Path) -> None:
    route = find(render(full(tmp_path), "prod"), "HTTPRoute", "web.full.example.com")
    assert _paths(route) == ["/api/admin", "/api", "/"]
    assert route["spec"]["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public"}
    ]


# --- resources ---------------------------------------------------------------------------


def test_resources_are_requests_and_limits_alike(tmp_path: Path) -> None:
    assert resources(Service("s", "s", Path("."))) is None  # no limits: none asked for
    objects = render(full(tmp_path), "prod")
    web = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "web")
    (container,) = web["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"cpu": "250m", "memory": "256Mi"},
    }
    db = next(o for o in objects if o["kind"] == "StatefulSet")
    (container,) = db["spec"]["template"]["spec"]["containers"]
    # 500M is not a whole number of Mi: written in bytes, as Kubernetes reads it
    assert container["resources"]["limits"] == {"memory": "500000000"}
    worker = next(
        o for o in objects if o["metadata"]["name"] == "worker" and "template" in o.get("spec", {})
    )
    assert "resources" not in worker["spec"]["template"]["spec"]["containers"][0]


# --- the agent -------------------------------------------------------------------------------


def test_the_agents_role_grants_exactly_what_it_needs(tmp_path: Path) -> None:
    objects = render(full(tmp_path), "prod")
    role = find(objects, "Role", "sqlifier-agent")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert not any("*" in part for grant in granted for part in grant)
    assert ("", "pods", "watch") in granted
    assert ("", "pods", "delete") not in granted
    assert ("", "pods/log", "get") in granted
    assert ("apps", "deployments/scale", "patch") in granted
    assert ("coordination.k8s.io", "leases", "update") in granted
    assert ("", "events", "create") in granted
    secrets = [rule for rule in role["rules"] if rule["resources"] == ["secrets"]]
    assert secrets == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["db-secrets"],
            "verbs": ["get", "patch", "update"],
        }
    ]
    routes = [rule for rule in role["rules"] if rule["resources"] == ["httproutes"]]
    assert routes[0]["resourceNames"] == [
        "web",
        "web.full.example.com",
        "worker",
        "worker.full.example.com",
    ]
    assert routes[0]["verbs"] == ["get", "patch"]
    binding = find(objects, "RoleBinding", "sqlifier-agent")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "sqlifier-agent",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "sqlifier-agent", "namespace": "apps"}
    ]


def test_a_stack_without_secrets_or_routes_grants_neither() -> None:
    resources_granted = {r for rule in role_rules([], []) for r in rule["resources"]}
    assert not {"secrets", "httproutes"} & resources_granted


def test_each_rule_of_the_role_says_why_in_the_yaml(tmp_path: Path) -> None:
    role = find(render(full(tmp_path), "prod"), "Role", "sqlifier-agent")
    text = to_yaml([role])
    blocks = text.split("\n- apiGroups:")[1:]
    before = text.split("\n- apiGroups:")
    assert len(blocks) == len(role["rules"])
    for preceding in before[:-1]:
        assert preceding.splitlines()[-1].startswith("# ")


def test_the_agent_runs_the_stack_from_a_configmap_as_its_service_account(tmp_path: Path) -> None:
    objects = render(full(tmp_path), "prod")
    config = find(objects, "ConfigMap", "sqlifier-agent-stack")
    assert set(config["data"]) == {"sqlifier.toml", "rules__scale.sql"}
    assert config["data"]["rules__scale.sql"].startswith("CREATE RULE busy")
    agent = find(objects, "Deployment", "sqlifier-agent")
    pod = agent["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "sqlifier-agent"
    assert pod["securityContext"]["runAsNonRoot"] is True
    (box,) = pod["containers"]
    assert box["command"] == [
        "sqlifier",
        "agent",
        "--env",
        "prod",
        "-f",
        "/etc/sqlifier/sqlifier.toml",
    ]
    assert box["securityContext"]["readOnlyRootFilesystem"] is True
    stack_volume = next(v for v in pod["volumes"] if v["name"] == "stack")
    assert stack_volume["configMap"]["items"] == [
        {"key": "sqlifier.toml", "path": "sqlifier.toml"},
        {"key": "rules__scale.sql", "path": "rules/scale.sql"},
    ]
    assert agent["spec"]["strategy"] == {"type": "Recreate"}


def test_the_agents_image_can_be_named(tmp_path: Path) -> None:
    full(tmp_path)
    path = tmp_path / "sqlifier.toml"
    path.write_text(
        path.read_text().replace(
            'gateway = "public"', 'gateway = "public", agent_image = "r.example.com/sqlifier:1"'
        )
    )
    stack = load_stack(path)[0]
    agent = find(render(stack, "prod"), "Deployment", "sqlifier-agent")
    assert container(agent)["image"] == "r.example.com/sqlifier:1"


# --- files -------------------------------------------------------------------------------------


def test_write_dir_writes_a_file_per_object_and_replaces_only_its_own(tmp_path: Path) -> None:
    (tmp_path / "stack").mkdir()
    stack = full(tmp_path / "stack")
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.yaml").write_text("kind: Namespace\n")
    (out / "99-deployment-gone.yaml").write_text("# Rendered by sqlifier (old)\n")
    objects = render(stack, "prod")
    written = write_dir(objects, out, "sqlifier render --env prod")
    assert [p.name for p in written] == file_names(objects)
    assert sorted(p.name for p in out.iterdir()) == sorted([*file_names(objects), "mine.yaml"])
    assert written[0].name == "01-serviceaccount-sqlifier-agent.yaml"
    assert [yaml.safe_load(p.read_text()) for p in written] == objects
