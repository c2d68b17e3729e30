"""Server-side apply, its dry run, prune and delete, against a real control plane."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sqlifier.platform.kubernetes.api import Cluster as Connection
from sqlifier.platform.kubernetes.api import connect
from sqlifier.platform.kubernetes.apply import Change, apply, delete_owned, owned, plan, prune
from sqlifier.platform.kubernetes.errors import (
    ApplyConflict,
    ClusterError,
    Forbidden,
    NamespaceNotFound,
)
from tests.k8s.fixtures import Cluster
from tests.platform.kubernetes.manifests import (
    OTHER_STACK,
    OWNER,
    configmap,
    deployment,
    secret,
    service,
)


@pytest.fixture
def conn(cluster: Cluster, namespace: str) -> Iterator[Connection]:
    with connect(namespace, kubeconfig=cluster.kubeconfig) as c:
        yield c


def live(conn: Connection, kind: str, name: str) -> Any:
    resource = conn.resource("apps/v1" if kind in ("Deployment",) else "v1", kind)
    return conn.request("GET", resource.path(conn.namespace, name), verb="get", what=name)


def names(objects: Any) -> list[str]:
    return sorted(f"{o['kind']} {o['metadata']['name']}" for o in objects)


def grant(
    cluster: Cluster, namespace: str, verbs: list[str], resources: list[str], group: str
) -> None:
    """Let the user "developer" do `verbs` on `resources` of API `group` in `namespace`."""
    from kubernetes import client

    rbac = client.RbacAuthorizationV1Api(cluster.api)
    rbac.create_namespaced_role(namespace, {
        "metadata": {"name": "developer"},
        "rules": [{"apiGroups": [group], "resources": resources, "verbs": verbs}],
    })  # fmt: skip
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "developer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "developer"},
        "subjects": [{"kind": "User", "name": "developer", "apiGroup": "rbac.authorization.k8s.io"}],
    })  # fmt: skip


def test_apply_creates_every_object_with_sqlifier_as_field_manager(conn: Connection) -> None:
    stored = apply(conn, [deployment("web"), service("web"), configmap("web", {"a": "1"})])
    # Dependencies first: the ConfigMap and the Service before the Deployment.
    assert [o["kind"] for o in stored] == ["ConfigMap", "Service", "Deployment"]
    web = live(conn, "Deployment", "web")
    assert web["metadata"]["namespace"] == conn.namespace
    assert {(m["manager"], m["operation"]) for m in web["metadata"]["managedFields"]} >= {
        ("sqlifier", "Apply")
    }


def test_a_plan_against_nothing_creates_everything_and_changes_nothing(conn: Connection) -> None:
    changes = plan(conn, [configmap("web", {"a": "1"}), deployment("web")], OWNER)
    assert changes == [
        Change(f"ConfigMap {conn.namespace}/web", "create"),
        Change(f"Deployment {conn.namespace}/web", "create"),
    ]
    assert list(owned(conn, OWNER)) == []  # a dry run


def test_a_plan_shows_each_changed_field_from_the_dry_run(conn: Connection) -> None:
    apply(conn, [configmap("web", {"greeting": "hello"}), deployment("web", replicas=1)])
    changes = plan(
        conn, [configmap("web", {"greeting": "hi"}), deployment("web", replicas=2)], OWNER
    )
    assert changes == [
        Change(f"ConfigMap {conn.namespace}/web", "update", ("data.greeting: 'hello' -> 'hi'",)),
        Change(f"Deployment {conn.namespace}/web", "update", ("spec.replicas: 1 -> 2",)),
    ]
    assert live(conn, "Deployment", "web")["spec"]["replicas"] == 1


def test_a_plan_of_what_is_applied_changes_nothing(conn: Connection) -> None:
    objects = [configmap("web", {"a": "1"}), deployment("web"), service("web")]
    apply(conn, objects)
    assert {c.action for c in plan(conn, objects, OWNER)} == {"unchanged"}


def test_a_plan_never_shows_a_secret_value(conn: Connection) -> None:
    apply(conn, [secret("db", {"password": "old-pw-1"})])
    changes = plan(conn, [secret("db", {"password": "new-pw-2", "user": "shop"})], OWNER)
    assert changes == [
        Change(
            f"Secret {conn.namespace}/db",
            "update",
            ("data.password: (value changed)", "data.user: added"),
        )
    ]
    assert "pw-" not in repr(changes)


def test_a_plan_lists_the_owned_objects_prune_would_delete(conn: Connection) -> None:
    apply(conn, [deployment("web"), deployment("old"), deployment("blog", owner=OTHER_STACK)])
    changes = plan(conn, [deployment("web")], OWNER)
    assert [c for c in changes if c.action == "delete"] == [
        Change(f"Deployment {conn.namespace}/old", "delete")
    ]


def test_prune_deletes_only_what_this_stack_owns_and_dropped(conn: Connection) -> None:
    apply(conn, [deployment("web"), service("web"), deployment("old"), configmap("old", {})])
    apply(conn, [deployment("blog", owner=OTHER_STACK), deployment("hand", owner=None)])
    gone = prune(conn, [deployment("web"), service("web")], OWNER)
    assert sorted(gone) == [f"ConfigMap {conn.namespace}/old", f"Deployment {conn.namespace}/old"]
    assert names(owned(conn, OWNER)) == ["Deployment web", "Service web"]
    assert names(owned(conn, OTHER_STACK)) == ["Deployment blog"]
    assert live(conn, "Deployment", "hand")["metadata"]["name"] == "hand"


def test_delete_owned_leaves_other_stacks_and_unlabelled_objects(conn: Connection) -> None:
    apply(conn, [deployment("web"), service("web"), secret("db", {"p": "x"})])
    apply(conn, [deployment("blog", owner=OTHER_STACK), configmap("hand", {}, owner=None)])
    assert sorted(delete_owned(conn, OWNER)) == [
        f"Deployment {conn.namespace}/web",
        f"Secret {conn.namespace}/db",
        f"Service {conn.namespace}/web",
    ]
    assert names(owned(conn, OWNER)) == []
    assert names(owned(conn, OTHER_STACK)) == ["Deployment blog"]
    assert live(conn, "ConfigMap", "hand")["metadata"]["name"] == "hand"


def test_owned_refuses_to_match_without_owner_labels(conn: Connection) -> None:
    with pytest.raises(ValueError, match="owner labels are required"):
        list(owned(conn, {}))


def test_a_field_another_manager_owns_is_a_conflict_unless_forced(conn: Connection) -> None:
    apply(conn, [deployment("web", replicas=1)])
    other = deployment("web", replicas=3)
    conn.request(
        "PATCH", f"/apis/apps/v1/namespaces/{conn.namespace}/deployments/web", verb="patch",
        what="web", body=other, content_type="application/apply-patch+yaml",
        query=[("fieldManager", "kubectl"), ("force", "true")],
    )  # fmt: skip
    with pytest.raises(ApplyConflict) as e:
        apply(conn, [deployment("web", replicas=1)])
    assert str(e.value) == (
        f"Deployment {conn.namespace}/web: fields that another field manager set differ from "
        'what sqlifier applies: .spec.replicas: conflict with "kubectl". sqlifier '
        "takes them over only when forced (the other manager then loses them), or make the "
        "stack file agree with the cluster"
    )
    apply(conn, [deployment("web", replicas=1)], force=True)
    assert live(conn, "Deployment", "web")["spec"]["replicas"] == 1


def test_a_failed_object_names_those_applied_before_it(conn: Connection) -> None:
    bad = deployment("web")
    bad["spec"]["template"]["spec"]["containers"][0]["name"] = "Not_A_Name"
    with pytest.raises(ClusterError) as e:
        apply(conn, [configmap("web", {}), service("web"), bad])
    assert str(e.value).startswith(
        f"Deployment {conn.namespace}/web: the cluster refused to patch it (422 Unprocessable "
        'Entity): spec.template.spec.containers[0].name: Invalid value: "Not_A_Name"'
    )
    assert str(e.value).endswith(
        f"\n  applied before it: ConfigMap {conn.namespace}/web, Service {conn.namespace}/web"
    )


def test_apply_into_a_namespace_that_does_not_exist(cluster: Cluster) -> None:
    with (
        connect("gone", kubeconfig=cluster.kubeconfig, check_namespace=False) as conn,
        pytest.raises(NamespaceNotFound) as e,
    ):
        apply(conn, [configmap("web", {})])
    assert str(e.value).startswith(
        "ConfigMap gone/web: namespace gone does not exist on the cluster (context 'test' of "
    )


def test_a_kind_the_cluster_does_not_serve_is_named(conn: Connection) -> None:
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    with pytest.raises(ClusterError) as e:
        apply(conn, [widget])
    assert str(e.value) == (
        f"the cluster ({conn.where}) does not serve Widget of example.com/v1: install what "
        "provides it, or use a cluster that has it"
    )


def test_a_verb_rbac_refuses_names_the_verb_and_the_resource(
    cluster: Cluster, namespace: str
) -> None:
    grant(cluster, namespace, ["get", "list"], ["deployments"], "apps")
    developer = cluster.control_plane.kubeconfig_for("developer")
    with connect(namespace, kubeconfig=developer) as conn, pytest.raises(Forbidden) as e:
        apply(conn, [deployment("web")])
    assert (e.value.verb, e.value.resource) == ("patch", "deployments.apps")
    assert str(e.value) == (
        f"Deployment {namespace}/web: user developer may not patch deployments.apps in "
        f"namespace {namespace} (context 'test' of {developer}): grant it a Role with verbs "
        '[patch] on resources [deployments] in apiGroups ["apps"], or use a context that may'
    )


def test_prune_without_the_right_to_delete_names_it(cluster: Cluster, namespace: str) -> None:
    with connect(namespace, kubeconfig=cluster.kubeconfig) as admin:
        apply(admin, [configmap("old", {})])
    grant(cluster, namespace, ["get", "list", "patch"], ["*"], "*")
    developer = cluster.control_plane.kubeconfig_for("developer")
    with connect(namespace, kubeconfig=developer) as conn, pytest.raises(Forbidden) as e:
        prune(conn, [], OWNER)
    assert (e.value.verb, e.value.resource) == ("delete", "configmaps")


def test_an_httproute_is_applied_with_its_weights(gateway_api: Cluster, namespace: str) -> None:
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web", "labels": {"app.kubernetes.io/managed-by": "sqlifier", **OWNER}},
        "spec": {
            "parentRefs": [{"name": "public", "namespace": "infra"}],
            "rules": [{"backendRefs": [{"name": "web", "port": 80, "weight": 90},
                                       {"name": "web-canary", "port": 80, "weight": 10}]}],
        },
    }  # fmt: skip
    with connect(namespace, kubeconfig=gateway_api.kubeconfig) as conn:
        apply(conn, [route])
        route["spec"]["rules"][0]["backendRefs"][0]["weight"] = 50
        route["spec"]["rules"][0]["backendRefs"][1]["weight"] = 50
        changes = plan(conn, [route], OWNER)
        assert changes[0].differences == (
            "spec.rules[0].backendRefs[0].weight: 90 -> 50",
            "spec.rules[0].backendRefs[1].weight: 10 -> 50",
        )
        assert names(owned(conn, OWNER)) == ["HTTPRoute web"]
