"""Putting a stack together: top-level tables, services, environment overrides, and the
checks that need every service at once (dependencies, routes, ports)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlifier.diagnostics import Diagnostic
from sqlifier.lang.errors import did_you_mean, quote
from sqlifier.lang.source import Source, Span
from sqlifier.stack import model as m
from sqlifier.stack.expand import check_run
from sqlifier.stack.gateway_metrics import read_gateway_metrics
from sqlifier.stack.reader import StackReader
from sqlifier.stack.tomlpos import Path as KeyPath

# kubernetes.py, tls.py and slo.py are imported only for a stack file that uses their
# keys (a Kubernetes environment, `tls`, `slo`): most stacks use none, and every `check`,
# `up` and `config` would otherwise load them (tests/cli/test_startup_imports.py).

__all__ = ["TOP_LEVEL", "assemble", "read_stack"]

TOP_LEVEL = (
    "stack",
    "environments",
    "services",
    "router",
    "engine",
    "notify",
    "prometheus",
    "metrics",
    "dashboard",
)
DEFAULT_RULES = ("rules/*.sql",)
# Keys whose tables merge key by key when an environment overrides them.
_MERGED = ("env", "secrets", "labels", "probes", "warmup", "timeouts", "rollout", "slo")
_SECRETISH = re.compile(r"(PASSWORD|PASSWD|TOKEN|SECRET|API_KEY|PRIVATE_KEY|ACCESS_KEY)", re.I)


@dataclass
class _Origin:
    """Where each resolved service key was written, for errors found after merging."""

    paths: dict[tuple[str, str], KeyPath] = field(default_factory=dict)


def assemble(reader: StackReader) -> m.Stack:
    data = reader.data
    for key in data:
        if key not in TOP_LEVEL:
            reader.error(
                (key,),
                f"unknown top-level table {quote(key)}; valid: {', '.join(TOP_LEVEL)}",
                did_you_mean(key, TOP_LEVEL),
                key=True,
            )
    if "stack" not in data:
        reader.diagnostics.append(
            _at_start(
                reader,
                "the stack file needs a [stack] table with a name",
                'add:  [stack]  name = "shop"',
            )
        )
    stack = _top(
        reader,
        "stack",
        {"name": reader.text, "rules": reader.patterns, "keep_releases": reader.integer(1, 100)},
        "[stack]",
    )
    router = _router(reader)
    engine = _top(
        reader,
        "engine",
        {
            "interval": reader.duration,
            "scale_down_delay": reader.duration,
            "action_budget": reader.integer(1, 10_000),
            "action_window": reader.duration,
            "cpu_window": reader.duration_at_most(300.0, "5m"),
        },
        "[engine]",
    )
    notify = _top(
        reader, "notify", {"webhook": reader.text, "timeout": reader.duration}, "[notify]"
    )
    prometheus = _top(
        reader,
        "prometheus",
        {
            "url": reader.text,
            "timeout": reader.duration,
            "gateway_metrics": read_gateway_metrics(reader),
            "gateway": reader.text,
            "queries": reader.text_map,
        },
        "[prometheus]",
    )
    _check_prometheus(reader, prometheus)
    metrics = _metrics(reader)
    dashboard = _dashboard(reader)

    base, origin = _base_services(reader)
    environments, overlays = _environments(reader, base)

    root = reader.path.parent
    services = _build_all(reader, base, {}, origin, root, None)
    resolved = {}
    for env, overlay in overlays.items():
        env_origin = _Origin(dict(origin.paths))
        for name, typed in overlay.items():
            for key in typed:
                env_origin.paths[(name, key)] = ("environments", env, "services", name, key)
        resolved[env] = _build_all(reader, base, overlay, env_origin, root, env)
    _check_ports(reader, services, router, origin)
    for env, env_services in resolved.items():
        env_origin = _Origin(dict(origin.paths))
        for name, typed in overlays[env].items():
            for key in typed:
                env_origin.paths[(name, key)] = ("environments", env, "services", name, key)
        if overlays[env]:  # the base's ports are checked above
            _check_ports(reader, env_services, router, env_origin, env)
        if environments[env].platform is m.PlatformKind.KUBERNETES:
            from sqlifier.stack.kubernetes import check_kubernetes  # noqa: PLC0415

            name = stack.get("name", reader.path.parent.name)
            check_kubernetes(
                reader, name, environments[env], env_services, env_origin.paths, overlays[env]
            )
    _check_listeners(reader, router, metrics, environments, services, resolved, origin)
    _check_tls(reader, router, environments, services, resolved)
    return m.Stack(
        path=reader.path,
        name=stack.get("name", reader.path.parent.name),
        rules=stack.get("rules", DEFAULT_RULES),
        keep_releases=stack.get("keep_releases", 5),
        services=services,
        environments=environments,
        resolved=resolved,
        router=router,
        engine=m.Engine(**engine),
        notify=m.Notify(**notify),
        prometheus=m.Prometheus(**prometheus),
        metrics=metrics,
        dashboard=dashboard,
    )


def _base_services(reader: StackReader) -> tuple[dict[str, dict[str, Any]], _Origin]:
    """Each `[services.NAME]` table typed, and where each of its keys was written."""
    raw_services = _names(
        reader,
        "services",
        m.SERVICE_NAME,
        "lower-case letters, digits and '-', starting with a letter (at most 63 characters)",
    )
    base: dict[str, dict[str, Any]] = {}
    origin = _Origin()
    for name, raw in raw_services.items():
        typed = reader.table(raw, ("services", name), reader.service_schema(), f"[services.{name}]")
        if typed is not None:
            base[name] = typed
            for key in typed:
                origin.paths[(name, key)] = ("services", name, key)
            _plaintext_secrets(reader, ("services", name), typed)
            port, count = typed.get("port"), typed.get("instances", 1)
            if isinstance(port, int) and isinstance(count, int) and port + count - 1 > 65535:
                # Instance i listens on port + i.
                reader.error(
                    ("services", name, "port"),
                    f"services.{name}.port {port} with {count} instances needs ports up to "
                    f"{port + count - 1}, past 65535: each instance listens on port + its number",
                )
    return base, origin


def _environments(
    reader: StackReader, base: dict[str, dict[str, Any]]
) -> tuple[dict[str, m.Environment], dict[str, dict[str, dict[str, Any]]]]:
    """Each `[environments.ENV]` table, and its services' overrides typed."""
    environments: dict[str, m.Environment] = {}
    overlays: dict[str, dict[str, dict[str, Any]]] = {}
    raw_envs = _names(
        reader,
        "environments",
        m.ENV_NAME,
        "lower-case letters, digits, '_' and '-', starting with a letter",
    )
    for env, raw in raw_envs.items():
        env_typed = reader.table(
            raw,
            ("environments", env),
            {
                "approval": reader.choice(m.Approval),
                "approvers": reader.text_list,
                "two_person": reader.boolean,
                "env_file": reader.text,
                "listen": reader.text,
                "tls": lambda value, path: value,
                "budget": reader.choice(m.BudgetPolicy),
                "services": lambda value, path: value,
                "platform": reader.choice(m.PlatformKind),
                "kubernetes": lambda value, path: value,
            },
            f"[environments.{env}]",
        )
        if env_typed is None:
            continue
        overlays[env] = _overlays(reader, env, env_typed.pop("services", {}), base)
        listen = env_typed.pop("listen", None)
        if listen is not None:
            env_typed["listen"] = _listen(reader, ("environments", env, "listen"), listen)
        if "platform" in env_typed or "kubernetes" in env_typed:
            from sqlifier.stack.kubernetes import read_platform  # noqa: PLC0415

            read_platform(reader, env, env_typed)
        if "tls" in env_typed:
            env_typed["tls"] = _read_tls(reader, env_typed["tls"], ("environments", env, "tls"))
        environments[env] = m.Environment(env, **env_typed)
        _check_approvers(reader, environments[env], "approvers" in env_typed)
    return environments, overlays


def _at_start(reader: StackReader, message: str, hint: str) -> Diagnostic:
    return Diagnostic.at(reader.source, Span(1, 1, 1, 2), message, hint=hint)


def _top(reader: StackReader, key: str, schema: dict[str, Any], what: str) -> dict[str, Any]:
    if key not in reader.data:
        return {}
    return reader.table(reader.data[key], (key,), schema, what) or {}


def _router(reader: StackReader) -> m.Router:
    schema = {"kind": reader.choice(m.RouterKind), "listen": reader.text, "tls": _raw}
    typed = _top(reader, "router", schema, "[router]")
    tls = _read_tls(reader, typed["tls"], ("router", "tls")) if "tls" in typed else None
    router = m.Router(kind=typed.get("kind", m.RouterKind.AUTO), tls=tls)
    listen = typed.get("listen")
    address = _listen(reader, ("router", "listen"), listen) if listen is not None else None
    if address is None:
        return router
    return m.Router(router.kind, *address, tls=tls)


def _check_prometheus(reader: StackReader, prometheus: dict[str, Any]) -> None:
    """[prometheus] gateway names one whose queries sqlifier has; queries name signals."""
    gateway = prometheus.get("gateway")
    if gateway is not None and gateway not in m.PROMETHEUS_GATEWAYS:
        reader.error(
            ("prometheus", "gateway"),
            f"[prometheus] gateway = {gateway!r} is not one sqlifier has queries for: use one "
            f"of {', '.join(m.PROMETHEUS_GATEWAYS)}, or give rps, error_rate and latency in "
            "[prometheus] queries",
        )
        del prometheus["gateway"]
    for key in list(prometheus.get("queries") or {}):
        if key not in m.PROMETHEUS_SIGNALS:
            reader.error(
                ("prometheus", "queries", key),
                f"[prometheus] queries.{key} is not a signal a query can be given for: "
                f"{', '.join(m.PROMETHEUS_SIGNALS)}",
            )
            del prometheus["queries"][key]


def _raw(value: object, path: KeyPath) -> object:
    return value


def _read_tls(reader: StackReader, value: object, path: KeyPath) -> m.Tls | None:
    from sqlifier.stack.tls import read_tls  # noqa: PLC0415 (a stack with tls only)

    return read_tls(reader, value, path)


def _check_tls(
    reader: StackReader,
    router: m.Router,
    environments: dict[str, m.Environment],
    services: dict[str, m.Service],
    resolved: dict[str, dict[str, m.Service]],
) -> None:
    """The certificate files of [router] tls and of each environment's own `tls`."""
    checks: list[tuple[m.Tls | None, KeyPath, dict[str, m.Service]]] = [
        (router.tls, ("router", "tls"), services)
    ]
    for name, env in environments.items():
        checks.append((env.tls, ("environments", name, "tls"), resolved.get(name, services)))
    for tls, path, served in checks:
        if tls is not None and tls.certificates:
            from sqlifier.stack.tls import check_tls  # noqa: PLC0415 (certificates only)

            hosts = {r.host: s.name for s in served.values() for r in s.routes if r.host}
            check_tls(reader, tls, path, hosts)


def _metrics(reader: StackReader) -> tuple[str, int] | None:
    """Where the agent serves /metrics: `[metrics] listen`, or "off"."""
    typed = _top(reader, "metrics", {"listen": reader.text}, "[metrics]")
    listen = typed.get("listen")
    if listen is None:
        return m.DEFAULT_METRICS
    if listen.strip().lower() == "off":
        return None
    return _listen(reader, ("metrics", "listen"), listen)


def _dashboard(reader: StackReader) -> tuple[str, int] | None:
    """Where the agent serves its web dashboard: `[dashboard] listen`, or "off"."""
    listen = _top(reader, "dashboard", {"listen": reader.text}, "[dashboard]").get("listen")
    if listen is None:
        return m.DEFAULT_DASHBOARD
    if listen.strip().lower() == "off":
        return None
    return _listen(reader, ("dashboard", "listen"), listen)


def _listen(reader: StackReader, path: tuple[str, ...], listen: str) -> tuple[str, int] | None:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        reader.error(
            path,
            f'{".".join(path)} must be host:port, like "127.0.0.1:8080", found {quote(listen)}',
        )
        return None
    return host.strip("[]"), int(port)


def _names(reader: StackReader, table: str, pattern: Any, rule: str) -> dict[str, Any]:
    path: KeyPath = (table,)
    raw = reader.data.get(table, {})
    if not isinstance(raw, dict):
        reader.error(path, f"{table} must be a table, like [{table}.NAME]")
        return {}
    out = {}
    for name, value in raw.items():
        if not pattern.match(name):
            reader.error(
                (*path, name), f"invalid {table[:-1]} name {quote(name)}: use {rule}", key=True
            )
            continue
        if not isinstance(value, dict):
            reader.error(
                (*path, name),
                f"{table}.{name} must be a table, like [{table}.{name}]",
                key=True,
            )
            continue
        out[name] = value
    return out


def _overlays(
    reader: StackReader, env: str, raw: object, base: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    path: KeyPath = ("environments", env, "services")
    if not isinstance(raw, dict):
        reader.error(path, f"environments.{env}.services must be a table of service overrides")
        return {}
    out = {}
    for name, value in raw.items():
        if name not in base:
            reader.error(
                (*path, name),
                f"environment {env} overrides unknown service "
                f"{quote(name)}; services: {', '.join(base) or 'none'}",
                did_you_mean(name, base),
                key=True,
            )
            continue
        typed = reader.table(
            value, (*path, name), reader.service_schema(), f"[environments.{env}.services.{name}]"
        )
        if typed is not None:
            out[name] = typed
            _plaintext_secrets(reader, (*path, name), typed)
    return out


def _plaintext_secrets(reader: StackReader, path: KeyPath, typed: dict[str, Any]) -> None:
    for key, value in typed.get("env", {}).items():
        if _SECRETISH.search(key) and value and "://" not in value:
            reader.warning(
                (*path, "env", key),
                f"env.{key} looks like a secret written in plain text",
                f"move it to [{'.'.join(map(str, path))}.secrets] as a reference, like "
                f'{key} = "secret://local/{key.lower()}"',
            )


def _build_all(
    reader: StackReader,
    base: dict[str, dict[str, Any]],
    overlay: dict[str, dict[str, Any]],
    origin: _Origin,
    root: Any,
    env: str | None,
) -> dict[str, m.Service]:
    services = {}
    for name, typed in base.items():
        merged = _merge(typed, overlay.get(name, {}))
        if "run" not in merged:
            if env is None:
                reader.error(
                    ("services", name),
                    f'services.{name} needs a run command, like run = "python3 app.py"',
                    key=True,
                )
            continue
        services[name] = _service(name, merged, root)
    check_run(reader, services, origin.paths, overlay, env)
    _check_dependencies(reader, services, origin)
    _check_routes(reader, services, origin)
    _check_egress(reader, services, origin)
    return services


def _check_egress(reader: StackReader, services: dict[str, m.Service], origin: _Origin) -> None:
    """Services named in `egress` exist; `egress` without isolation is said to do nothing."""
    for name, service in services.items():
        if service.egress and service.isolation is m.Isolation.NONE:
            reader.warning(
                origin.paths[(name, "egress")],
                f'services.{name}.egress has no effect without isolation = "network"',
            )
        for index, entry in enumerate(service.egress):
            if entry.kind == "service" and entry.target not in services:
                reader.error(
                    (*origin.paths[(name, "egress")], index),
                    f"services.{name}.egress names unknown service {quote(entry.target)}; "
                    f"services: {', '.join(services)}",
                    did_you_mean(entry.target, services),
                )


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if key in _MERGED and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _service(name: str, typed: dict[str, Any], root: Any) -> m.Service:
    fields = dict(typed)
    fields["source"] = (root / fields.get("source", ".")).resolve()
    fields["probes"] = m.Probes(**fields.get("probes", {}))
    fields["warmup"] = m.Warmup(**fields.get("warmup", {}))
    fields["timeouts"] = m.Timeouts(**fields.get("timeouts", {}))
    fields["rollout"] = m.Rollout(**fields.get("rollout", {}))
    if fields.get("slo"):
        from sqlifier.stack.slo import build_slo  # noqa: PLC0415 (a service with an slo)

        fields["slo"] = build_slo(fields["slo"])
    else:
        fields["slo"] = None
    return m.Service(name=name, **fields)


def _check_dependencies(
    reader: StackReader, services: dict[str, m.Service], origin: _Origin
) -> None:
    for name, service in services.items():
        for index, dependency in enumerate(service.depends_on):
            where = (*origin.paths[(name, "depends_on")], index)
            if dependency == name:
                reader.error(where, f"service {name} depends on itself")
            elif dependency not in services:
                reader.error(
                    where,
                    f"service {name} depends on unknown service "
                    f"{quote(dependency)}; services: {', '.join(services)}",
                    did_you_mean(dependency, services),
                )
    cycle = _find_cycle(services)
    if cycle:
        first = cycle[0]
        index = services[first].depends_on.index(cycle[1])
        reader.error(
            (*origin.paths[(first, "depends_on")], index),
            "dependency cycle: " + " -> ".join(cycle),
            "services start in dependency order; remove one of these depends_on",
        )


def _find_cycle(services: dict[str, m.Service]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for dependency in services[name].depends_on:
            if dependency not in services or dependency == name:
                continue
            if state.get(dependency) == 1:
                return [*stack[stack.index(dependency) :], dependency]
            if dependency not in state:
                found = visit(dependency)
                if found:
                    return found
        stack.pop()
        state[name] = 2
        return None

    for name in services:
        if name not in state:
            found = visit(name)
            if found:
                return found
    return None


def _check_approvers(reader: StackReader, environment: m.Environment, written: bool) -> None:
    """An environment that requires approval and names no approvers refuses every deploy:
    `approve` needs someone on the list."""
    if environment.approval is not m.Approval.REQUIRED or environment.approvers:
        return
    key = "approvers" if written else "approval"
    reader.warning(
        ("environments", environment.name, key),
        f"environment {environment.name} requires approval but names no approvers: every "
        "deploy to it will be refused",
        'name who may approve, like approvers = ["alice", "bob"], or set approval = "none"',
    )


def _check_routes(reader: StackReader, services: dict[str, m.Service], origin: _Origin) -> None:
    claimed: dict[m.Route, str] = {}
    for name, service in services.items():
        for index, route in enumerate(service.routes):
            if route in service.routes[:index]:
                reader.warning(
                    (*origin.paths[(name, "routes")], index),
                    f"route {quote(str(route))} is listed twice in the routes of {name}",
                    "remove one: the second changes nothing",
                )
                continue
            owner = claimed.setdefault(route, name)
            if owner != name:
                reader.error(
                    (*origin.paths[(name, "routes")], index),
                    f"route {quote(str(route))} is claimed by both {owner} and {name}",
                    "each host/path prefix belongs to one service",
                )


def _check_ports(
    reader: StackReader,
    services: dict[str, m.Service],
    router: m.Router,
    origin: _Origin,
    env: str | None = None,
) -> None:
    used: dict[int, str] = {router.port: "the router"}
    where = f" in environment {env}" if env else ""
    for name, service in services.items():
        if service.port is None:
            continue
        for port in range(service.port, service.port + max(service.instances, 1)):
            owner = used.setdefault(port, name)
            if owner != name:
                path = origin.paths[(name, "port")]
                for changed in (name, owner):  # where the environment changed a count
                    override = origin.paths.get((changed, "instances"), path)
                    if env and override[0] == "environments":
                        path = override
                        break
                reader.error(
                    path,
                    f"port {port} of service {name}{where} is already used by {owner}",
                    f"instances of {name} use ports {service.port} to "
                    f"{service.port + max(service.instances, 1) - 1}",
                )
                break


_WILDCARDS = ("", "0.0.0.0", "::", "*")


def _same_address(a: tuple[str, int], b: tuple[str, int]) -> bool:
    """Two listeners collide on one port when their hosts are equal or one is a wildcard."""
    return a[1] == b[1] and (a[0] == b[0] or a[0] in _WILDCARDS or b[0] in _WILDCARDS)


def _check_listeners(
    reader: StackReader,
    router: m.Router,
    metrics: tuple[str, int] | None,
    environments: dict[str, m.Environment],
    services: dict[str, m.Service],
    resolved: dict[str, dict[str, m.Service]],
    origin: _Origin,
) -> None:
    """Two of sqlifier's listeners on one address: the second cannot start. The router
    (per environment), /metrics, and the fixed ports of services' instances (127.0.0.1)."""
    metrics_key: KeyPath = ("metrics", "listen")
    listeners: list[tuple[str, tuple[str, int], KeyPath]] = []
    for env in environments.values():
        if env.listen is not None:
            listeners.append(
                (f"the router of {env.name}", env.listen, ("environments", env.name, "listen"))
            )
    listeners.append(("the router", (router.host, router.port), ("router", "listen")))
    if router.tls is not None and router.tls.redirect is not None:
        listeners.append(
            ("router.tls.redirect", router.tls.redirect, ("router", "tls", "redirect"))
        )
    if metrics is not None:
        listeners.append(("/metrics", metrics, metrics_key))
    for first, (name, address, path) in enumerate(listeners):
        for other, other_address, other_path in listeners[first + 1 :]:
            if name.startswith("the router") and other.startswith("the router"):
                continue  # one router runs per environment
            if _same_address(address, other_address):
                written = path if reader.positions.value(path) else other_path
                reader.warning(
                    written,
                    f"{name} and {other} both listen on {address[0]}:{address[1]}",
                    "give each its own port: the second one cannot start",
                )
    seen: set[tuple[str, int, str]] = set()  # an environment repeats the base's findings
    for env_name, env_services in [(None, services), *resolved.items()]:
        for service_name, service in env_services.items():
            if service.port is None:
                continue
            ports = range(service.port, service.port + max(service.instances, 1))
            for name, address, _ in listeners:
                if name == "the router" or (
                    name.startswith("the router of") and name != f"the router of {env_name}"
                ):
                    continue  # a fixed port on the base router's is an error (_check_ports)
                clash = address[1] in ports and _same_address(address, ("127.0.0.1", address[1]))
                if clash and (service_name, address[1], name) not in seen:
                    seen.add((service_name, address[1], name))
                    where = f" in environment {env_name}" if env_name else ""
                    reader.warning(
                        origin.paths[(service_name, "port")],
                        f"instance {service_name}-{address[1] - service.port}{where} would "
                        f"listen on port {address[1]}, where {name} listens",
                        f"move services.{service_name}.port or {name}'s listen address",
                    )


def read_stack(
    source: Source, data: dict[str, Any], path: Path
) -> tuple[m.Stack | None, list[Diagnostic]]:
    """The typed stack and every diagnostic (None when there are errors)."""
    reader = StackReader(source, data, path)
    stack = assemble(reader)
    diagnostics = _unique(reader.diagnostics)
    if any(d.is_error for d in diagnostics):
        return None, diagnostics
    return stack, diagnostics


def _unique(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    seen: set[tuple[int, int, str]] = set()
    out = []
    for diagnostic in sorted(diagnostics, key=lambda d: (d.line, d.col)):
        key = (diagnostic.line, diagnostic.col, diagnostic.message)
        if key not in seen:
            seen.add(key)
            out.append(diagnostic)
    return out
