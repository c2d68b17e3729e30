"""Internal addresses through both data planes, each run as the real process the agent
starts: a service's listener takes any Host and path to that service, balances over its
ready instances, gives a draining one nothing new and follows the canary share; an
instance's listener reaches that instance only. HAProxy's cases run when it is installed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sqlifier.router.internal import (
    PortBook,
    discovery_env,
    env_var,
    with_internal_services,
)
from sqlifier.router.state import DesiredState, Listener
from tests.router.test_dataplanes import Backends, Plane, ask, backend, instances
from tests.servers import KINDS, free_port


@pytest.fixture(params=KINDS)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Plane, Backends]]:
    servers = Backends()
    plane = Plane(request.param, tmp_path / "state")
    plane.start()
    try:
        yield plane, servers
    finally:
        plane.stop()
        servers.close()


def listener(name: str, service: str, instance: str | None = None) -> dict[str, Any]:
    return Listener(name, service, instance, "127.0.0.1", free_port()).to_json()


def sync(plane: Plane, services: dict[str, Any], internal: list[dict[str, Any]]) -> None:
    routes = {"web": [{"host": None, "path": "/"}]}
    state = {"routes": routes, "services": services, "internal": internal}
    plane.call({"op": "sync", "state": state})


def port_of(entry: dict[str, Any]) -> int:
    return int(entry["address"].rpartition(":")[2])


def test_a_service_listener_balances_over_ready_instances_whatever_the_host_and_path(
    world: tuple[Plane, Backends],
) -> None:
    plane, servers = world
    web = servers.start("web-0")
    orders = [backend(f"orders-{i}", servers.start(f"orders-{i}")) for i in range(2)]
    drained = backend("orders-2", servers.start("orders-2"), state="drain")
    internal = [listener("orders", "orders"), listener("web", "web")]
    sync(
        plane,
        {"web": {"backends": [backend("web-0", web)]}, "orders": {"backends": [*orders, drained]}},
        internal,
    )
    status, body = ask(port_of(internal[0]), "/any/path", host="whatever.example")
    assert status == 200 and json.loads(body)["instance"].startswith("orders-")
    seen = instances(port_of(internal[0]), 20)
    assert seen == Counter({"orders-0": 10, "orders-1": 10})  # never the draining one
    assert json.loads(ask(port_of(internal[1]), "/x")[1])["instance"] == "web-0"
    # The front door is unchanged: orders has no route there.
    assert json.loads(ask(plane.port, "/x")[1])["instance"] == "web-0"


def test_a_service_listener_follows_the_canary_share(world: tuple[Plane, Backends]) -> None:
    plane, servers = world
    stable = backend("orders-0", servers.start("orders-0"))
    canary = backend("orders-c", servers.start("orders-c"), track="canary")
    internal = [listener("orders", "orders"), listener("web", "web")]
    web = backend("web-0", servers.start("web-0"))
    services = {"web": {"backends": [web]}, "orders": {"canary": 250, "backends": [stable, canary]}}
    sync(plane, services, internal)
    seen = instances(port_of(internal[0]), 400)
    assert seen == Counter({"orders-0": 300, "orders-c": 100}), seen  # 25%, exactly


def test_a_draining_instance_gets_no_new_internal_request(world: tuple[Plane, Backends]) -> None:
    plane, servers = world
    one, two = (backend(f"orders-{i}", servers.start(f"orders-{i}")) for i in range(2))
    internal = [listener("orders", "orders"), listener("web", "web")]
    web = {"backends": [backend("web-0", servers.start("web-0"))]}
    sync(plane, {"web": web, "orders": {"backends": [one, two]}}, internal)
    assert set(instances(port_of(internal[0]), 4)) == {"orders-0", "orders-1"}
    sync(plane, {"web": web, "orders": {"backends": [one, {**two, "state": "drain"}]}}, internal)
    assert instances(port_of(internal[0]), 10) == Counter({"orders-0": 10})


def test_an_instance_listener_reaches_that_instance_only(world: tuple[Plane, Backends]) -> None:
    plane, servers = world
    db = [backend(f"db-{i}", servers.start(f"db-{i}")) for i in range(2)]
    internal = [
        listener("db", "db"),
        listener("db-0", "db", "db-0"),
        listener("db-1", "db", "db-1"),
        listener("web", "web"),
    ]
    web = {"backends": [backend("web-0", servers.start("web-0"))]}
    sync(plane, {"web": web, "db": {"backends": db}}, internal)
    assert instances(port_of(internal[1]), 6) == Counter({"db-0": 6})
    assert instances(port_of(internal[2]), 6) == Counter({"db-1": 6})
    # Draining, it takes nothing new: no instance ready.
    sync(plane, {"web": web, "db": {"backends": [db[0], {**db[1], "state": "drain"}]}}, internal)
    assert ask(port_of(internal[2]))[0] == 503
    assert instances(port_of(internal[1]), 2) == Counter({"db-0": 2})


def test_names_become_variables_and_an_instance_is_told_the_others_only() -> None:
    assert env_var("orders") == "ORDERS_URL"
    assert env_var("order-db-0") == "ORDER_DB_0_URL"
    listeners = [
        Listener("orders", "orders", None, "127.0.0.1", 4100),
        Listener("orders-0", "orders", "orders-0", "127.0.0.1", 4101),
        Listener("web", "web", None, "127.0.0.1", 4102),
    ]
    assert discovery_env(listeners, "web") == {
        "ORDERS_URL": "http://127.0.0.1:4100",
        "ORDERS_0_URL": "http://127.0.0.1:4101",
    }
    assert discovery_env(listeners, "orders") == {"WEB_URL": "http://127.0.0.1:4102"}


def test_ports_are_kept_across_restarts(tmp_path: Path) -> None:
    book = PortBook(tmp_path / "internal-ports.json")
    first = {name: book.port(name) for name in ("orders", "web", "orders-0")}
    assert len(set(first.values())) == 3
    again = PortBook(tmp_path / "internal-ports.json")
    assert {name: again.port(name) for name in first} == first


def test_services_without_a_route_get_backends_in_haproxy() -> None:
    state = DesiredState(internal=(Listener("db", "db", None, "127.0.0.1", 4100),))
    assert with_internal_services(state).routes == {"db": ()}


def test_an_instance_listener_keeps_to_the_stable_instance_of_that_name(
    world: tuple[Plane, Backends],
) -> None:
    plane, servers = world
    stable = backend("db-0", servers.start("db-0"))
    # A rollout's canary of a stateful service has the same name, a port of its own.
    canary = {**backend("db-0", servers.start("db-0-canary"), track="canary"), "id": "db-0_c"}
    internal = [listener("db", "db"), listener("db-0", "db", "db-0"), listener("web", "web")]
    web = {"backends": [backend("web-0", servers.start("web-0"))]}
    sync(plane, {"web": web, "db": {"backends": [stable, canary]}}, internal)
    assert instances(port_of(internal[1]), 6) == Counter({"db-0": 6})
    sync(plane, {"web": web, "db": {"backends": [canary]}}, internal)
    assert instances(port_of(internal[1]), 2) == Counter({"db-0-canary": 2})
