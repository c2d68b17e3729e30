"""HTTPRoutes (gateway.networking.k8s.io/v1) from the services' `routes`, meaning what the
local router means by them.

Locally a route is a path prefix matched by whole segments (`/api` matches `/api` and
`/api/x`, not `/apix`), with or without a host; the longest matching path wins, and for
the same path a route naming the host beats one without. A Gateway's `PathPrefix` matches
by segments too, but it weighs the host first: a rule of an HTTPRoute naming the request's
host beats any rule of one naming none, whatever their paths. So that the longest path still
wins, the host-less routes of a service are repeated in its HTTPRoute for each host the
stack names (unless another service claims that very host and path, which wins locally
too), and requests to a host are then judged among rules that all name it.

One HTTPRoute per service and host: `<service>` for its host-less routes,
`<service>.<host>` for a host; each has one rule, matching its paths, to the service's
Service. A canary's weights are set on that rule's backendRefs.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlifier.platform.kubernetes.render_common import Manifest, Target, metadata
from sqlifier.platform.kubernetes.render_workloads import SERVICE_PORT
from sqlifier.stack.model import Service

__all__ = ["http_routes", "parent_ref"]


def parent_ref(gateway: str) -> Manifest:
    """The Gateway "NAMESPACE/NAME" (or "NAME", in the routes' namespace) as a parentRef."""
    namespace, _, name = gateway.rpartition("/")
    ref: Manifest = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": name}
    if namespace:
        ref["namespace"] = namespace
    return ref


def http_routes(target: Target, services: Mapping[str, Service]) -> dict[str, list[Manifest]]:
    """Each service's HTTPRoutes, host-less first, then by host."""
    hosts = sorted({r.host for s in services.values() for r in s.routes if r.host is not None})
    claimed = {
        (route.host, route.path): name
        for name, service in services.items()
        for route in service.routes
        if route.host is not None
    }
    out: dict[str, list[Manifest]] = {}
    for name, service in services.items():
        anywhere = [r.path for r in service.routes if r.host is None]
        found = []
        if anywhere:
            found.append(_route(target, service, None, anywhere))
        for host in hosts:
            paths = [r.path for r in service.routes if r.host == host]
            paths += [p for p in anywhere if claimed.get((host, p), name) == name]
            if paths:
                found.append(_route(target, service, host, paths))
        out[name] = found
    return out


def _route(target: Target, service: Service, host: str | None, paths: list[str]) -> Manifest:
    spec: Manifest = {}
    if target.gateway is not None:
        spec["parentRefs"] = [parent_ref(target.gateway)]
    if host is not None:
        spec["hostnames"] = [host]
    ordered = sorted(set(paths), key=lambda path: (-len(path), path))
    spec["rules"] = [
        {
            "matches": [{"path": {"type": "PathPrefix", "value": path}} for path in ordered],
            "backendRefs": [
                {"group": "", "kind": "Service", "name": service.name, "port": SERVICE_PORT}
            ],
        }
    ]
    name = service.name if host is None else f"{service.name}.{host}"
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": metadata(target, name, service.name),
        "spec": spec,
    }
