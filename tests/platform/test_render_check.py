"""`check` of a Kubernetes environment: the `platform` and `kubernetes` keys, services'
`image`, and the keys that mean nothing there, each refused at its line and column."""

from __future__ import annotations

from pathlib import Path

import pytest

from sqlifier.errors import DiagnosticsError
from sqlifier.lang.errors import quote
from sqlifier.stack import load_stack
from sqlifier.stack import model as m

BASE = """\
[stack]
name = "shop"

[environments.cluster]
platform = "kubernetes"
kubernetes = { context = "prod", namespace = "shop", gateway = "infra/public" }

[services.web]
run = "python3 app.py --port $PORT"
image = "registry.example.com/shop/web"
routes = ["/"]
"""


def load(tmp_path: Path, text: str) -> m.Stack:
    path = tmp_path / "sqlifier.toml"
    path.write_text(text)
    stack, warnings = load_stack(path, "sqlifier.toml")
    assert [w.message for w in warnings] == []
    return stack


def errors(tmp_path: Path, text: str) -> list[tuple[int, int, str]]:
    path = tmp_path / "sqlifier.toml"
    path.write_text(text)
    with pytest.raises(DiagnosticsError) as caught:
        load_stack(path, "sqlifier.toml")
    return [(d.line, d.col, d.message) for d in caught.value.diagnostics if d.is_error]


def test_a_kubernetes_environment_is_read_into_the_model(tmp_path: Path) -> None:
    stack = load(tmp_path, BASE)
    environment = stack.environment("cluster")
    assert environment.platform is m.PlatformKind.KUBERNETES
    assert environment.kubernetes == m.Kubernetes("shop", "prod", "infra/public")
    assert stack.services["web"].image == "registry.example.com/shop/web"


def test_an_environment_is_local_by_default_and_ignores_image(tmp_path: Path) -> None:
    stack = load(tmp_path, BASE + '\n[environments.dev]\napproval = "none"\n')
    assert stack.environment("dev").platform is m.PlatformKind.LOCAL
    assert stack.environment("dev").kubernetes is None
    assert stack.services_for("dev")["web"].image == "registry.example.com/shop/web"


def test_a_service_without_an_image_is_refused(tmp_path: Path) -> None:
    text = BASE.replace('image = "registry.example.com/shop/web"\n', "")
    assert errors(tmp_path, text) == [
        (
            8,
            11,
            "service web has no image: environment cluster runs on Kubernetes, where a "
            "release is a container image",
        )
    ]


def test_the_image_may_be_set_for_the_kubernetes_environment_only(tmp_path: Path) -> None:
    text = BASE.replace('image = "registry.example.com/shop/web"\n', "") + (
        '\n[environments.cluster.services.web]\nimage = "registry.example.com/shop/web:1.2"\n'
    )
    stack = load(tmp_path, text)
    assert stack.services["web"].image is None
    assert stack.services_for("cluster")["web"].image == "registry.example.com/shop/web:1.2"


def test_a_malformed_image_is_refused_where_it_is_written(tmp_path: Path) -> None:
    text = BASE.replace("registry.example.com/shop/web", "Registry/Shop Web")
    assert errors(tmp_path, text) == [
        (
            10,
            9,
            "services.web.image 'Registry/Shop Web' is not an image reference: write "
            'REGISTRY/PATH[:TAG], like "registry.example.com/shop/checkout" (lower-case path)',
        )
    ]


def test_kubernetes_needs_the_platform_and_the_platform_needs_kubernetes(tmp_path: Path) -> None:
    without_platform = BASE.replace('platform = "kubernetes"\n', "")
    assert errors(tmp_path, without_platform) == [
        (
            5,
            1,
            "environments.cluster.kubernetes is read only for a Kubernetes environment (platform is local by default)",
        )
    ]
    without_table = BASE.replace(
        'kubernetes = { context = "prod", namespace = "shop", gateway = "infra/public" }\n', ""
    )
    assert errors(tmp_path, without_table) == [
        (5, 12, "environment cluster runs on Kubernetes but has no kubernetes table")
    ]


def test_an_unknown_platform_says_which_are_valid(tmp_path: Path) -> None:
    text = BASE.replace('platform = "kubernetes"', 'platform = "kubernets"')
    assert errors(tmp_path, text) == [
        (
            5,
            12,
            "environments.cluster.platform must be one of 'local', 'kubernetes', found 'kubernets'",
        )
    ]


@pytest.mark.parametrize(
    ("table", "where", "message"),
    [
        (
            '{ context = "prod" }',
            (6, 14),
            'environments.cluster.kubernetes needs a namespace, like kubernetes = { namespace = "shop" }',
        ),
        (
            '{ namespace = "Shop", gateway = "public" }',
            (6, 28),
            "environments.cluster.kubernetes.namespace 'Shop' is not a namespace name: "
            "lower-case letters, digits and '-', starting and ending with a letter or digit, "
            "at most 63 characters",
        ),
        (
            '{ namespace = "shop", gateway = "a/b/c" }',
            (6, 46),
            "environments.cluster.kubernetes.gateway must name a Gateway as NAMESPACE/NAME or "
            "NAME, like \"infra/public\", found 'a/b/c'",
        ),
        (
            '{ namespace = "shop", gateway = "public", nmespace = "x" }',
            (6, 56),
            "unknown key 'nmespace' in environments.cluster.kubernetes; valid: context, "
            "namespace, gateway, agent_image",
        ),
    ],
)
def test_the_kubernetes_table_is_checked(
    tmp_path: Path, table: str, where: tuple[int, int], message: str
) -> None:
    text = BASE.replace('{ context = "prod", namespace = "shop", gateway = "infra/public" }', table)
    assert errors(tmp_path, text) == [(*where, message)]


def test_routes_need_a_gateway(tmp_path: Path) -> None:
    text = BASE.replace(', gateway = "infra/public"', "")
    assert errors(tmp_path, text) == [
        (
            6,
            14,
            "services web have routes, but environments.cluster.kubernetes names no gateway "
            "for their HTTPRoutes",
        )
    ]


def test_local_only_keys_are_allowed_on_the_base_service(tmp_path: Path) -> None:
    text = BASE + 'build = "make"\nsource = "."\ntimeouts = { connect = "2s" }\n'
    assert load(tmp_path, text).services["web"].build == "make"


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("source", '"web"', "a release there is an image, not a folder"),
        (
            "build",
            '"make"',
            "a release there is an image your build pushes, not a folder built here",
        ),
        ("timeouts", '{ connect = "2s" }', "the Gateway's own timeouts apply to requests there"),
    ],
)
def test_local_only_keys_are_refused_in_the_kubernetes_overrides(
    tmp_path: Path, key: str, value: str, why: str
) -> None:
    text = BASE + f"\n[environments.cluster.services.web]\n{key} = {value}\n"
    assert errors(tmp_path, text) == [
        (14, 1, f"{key} means nothing on Kubernetes, where environment cluster runs: {why}")
    ]


def test_a_restart_policy_kubernetes_cannot_keep_is_refused(tmp_path: Path) -> None:
    text = BASE + 'restart = "on-failure"\n'
    assert errors(tmp_path, text) == [
        (
            12,
            11,
            'services.web.restart = "on-failure" cannot hold on Kubernetes (environment '
            "cluster): the pods of a Deployment or StatefulSet are always restarted",
        )
    ]
    fixed = text + '\n[environments.cluster.services.web]\nrestart = "always"\n'
    assert load(tmp_path, fixed).services_for("cluster")["web"].restart is m.RestartPolicy.ALWAYS


def test_a_router_address_is_refused(tmp_path: Path) -> None:
    text = BASE.replace(
        'platform = "kubernetes"\n', 'platform = "kubernetes"\nlisten = "127.0.0.1:9000"\n'
    )
    assert errors(tmp_path, text) == [
        (
            6,
            10,
            "environments.cluster.listen means nothing on Kubernetes: requests reach the "
            "services through the Gateway named in its kubernetes table",
        )
    ]


@pytest.mark.parametrize(
    ("probe", "col", "message"),
    [
        (
            '{ http = "/ready", period = "500ms" }',
            48,
            "services.web.probes.readiness.period is 0.5s: Kubernetes (environment cluster) "
            "counts probe times in whole seconds",
        ),
        (
            '{ http = "/ready", status = 418 }',
            48,
            "services.web.probes.readiness.status 418 cannot pass on Kubernetes (environment "
            "cluster), where an HTTP probe passes on 200 to 399 only",
        ),
    ],
)
def test_probes_kubernetes_cannot_map_one_to_one_are_refused(
    tmp_path: Path, probe: str, col: int, message: str
) -> None:
    text = BASE + f"probes.readiness = {probe}\n"
    assert errors(tmp_path, text) == [(12, col, message)]


def test_a_liveness_probe_counts_one_success(tmp_path: Path) -> None:
    text = BASE + "probes.liveness = { tcp = true, success_threshold = 2 }\n"
    assert errors(tmp_path, text) == [
        (
            12,
            53,
            "services.web.probes.liveness.success_threshold must be 1 on Kubernetes "
            "(environment cluster): only a readiness probe counts successes",
        )
    ]


def test_a_route_host_must_be_a_dns_name(tmp_path: Path) -> None:
    text = BASE.replace('routes = ["/"]', 'routes = ["/", "*.shop.localhost/x", "/a//b"]')
    assert errors(tmp_path, text) == [
        (
            11,
            16,
            "route '*.shop.localhost/x' of web cannot be an HTTPRoute (environment cluster "
            "runs on Kubernetes): its host must be a DNS name, like shop.example.com",
        ),
        (
            11,
            38,
            "route '/a//b' of web cannot be an HTTPRoute (environment cluster runs on "
            "Kubernetes): its path must have no empty, '.' or '..' segment and no bare '%'",
        ),
    ]


def test_names_kubernetes_refuses_are_refused(tmp_path: Path) -> None:
    text = BASE.replace("[services.web]", "[services.web-]").replace(
        'routes = ["/"]', 'env = { "1ST" = "x" }'
    )
    assert errors(tmp_path, text) == [
        (
            8,
            11,
            "service web- cannot be named so on Kubernetes (environment cluster): the name "
            "must end with a letter or digit",
        ),
        (
            11,
            9,
            "'1ST' cannot be an environment variable on Kubernetes (environment cluster): "
            "letters, digits, '-', '.' and '_', not starting with a digit",
        ),
    ]


def test_the_example_shop_has_a_kubernetes_environment_and_still_runs_locally() -> None:
    shop = Path(__file__).parents[2] / "examples" / "shop" / "sqlifier.toml"
    stack, warnings = load_stack(shop)
    assert [w.message for w in warnings] == []
    assert stack.environment("cluster").platform is m.PlatformKind.KUBERNETES
    assert stack.environment("dev").platform is m.PlatformKind.LOCAL
    assert all(s.image for s in stack.services_for("cluster").values())


def test_a_deployment_has_no_instance_index(tmp_path: Path) -> None:
    text = BASE.replace("--port $PORT", "--port $PORT --shard $INSTANCE_INDEX")
    assert errors(tmp_path, text) == [
        (
            9,
            7,
            "services.web.run uses $INSTANCE_INDEX, which the pods of a Deployment do not "
            "have (environment cluster runs on Kubernetes)",
        )
    ]
    assert load(tmp_path, text + "stateful = true\n").services["web"].stateful


def test_a_host_too_long_for_an_httproute_name_is_refused(tmp_path: Path) -> None:
    host = ".".join(["a" * 49] * 5)  # 249 characters: web.HOST is 253
    assert load(tmp_path, BASE.replace('routes = ["/"]', f'routes = ["{host}/"]'))
    longer = host + "a"
    assert errors(tmp_path, BASE.replace('routes = ["/"]', f'routes = ["{longer}/"]')) == [
        (
            11,
            11,
            f"route {quote(longer + '/')} of web cannot be an HTTPRoute (environment cluster runs on "
            "Kubernetes): its HTTPRoute's name, web.HOST, would be over 253 characters",
        )
    ]
