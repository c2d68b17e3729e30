"""A Kubernetes environment of the stack file: its `kubernetes` table, and what its services
must be to run there (docs/kubernetes.md, "What maps to what").

    [environments.production]
    platform = "kubernetes"
    kubernetes = { context = "prod", namespace = "shop", gateway = "infra/public" }

The same file runs locally too, so the keys only a local environment uses (`source`,
`build`, `timeouts`, `[router]`) are allowed on a base service and ignored on Kubernetes;
written in the Kubernetes environment's own overrides they could only be meant for it, and
are refused. What Kubernetes cannot do as sqlifier does locally is refused wherever it is
written, with the positioned error of any other mistake: a service without an image, a
restart policy other than "always", a router address, probe timings that are not whole
seconds, names Kubernetes does not accept, an `egress` host by name (a NetworkPolicy holds
addresses), an environment's `tls` (TLS there is the Gateway's).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any

from sqlifier.lang.errors import quote
from sqlifier.stack import model as m
from sqlifier.stack.expand import UnknownName, names_in
from sqlifier.stack.reader import StackReader
from sqlifier.stack.tomlpos import Path as KeyPath

__all__ = ["AGENT_NAME", "LOCAL_ONLY", "check_kubernetes", "read_kubernetes", "read_platform"]

AGENT_NAME = "sqlifier-agent"  # the agent's Deployment, ServiceAccount, Role, RoleBinding

# Keys of a service that mean nothing on Kubernetes, and why.
LOCAL_ONLY = {
    "source": "a release there is an image, not a folder",
    "build": "a release there is an image your build pushes, not a folder built here",
    "timeouts": "the Gateway's own timeouts apply to requests there",
}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?\Z")
_IMAGE = re.compile(
    r"^[a-z0-9]+([._-]+[a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?\Z"
)
_ENV_VAR = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*\Z")
_HOSTNAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
# A Gateway API path value: these characters or a percent-encoded byte, no empty,
# "." or ".." segment.
_GATEWAY_PATH = re.compile(r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|%[0-9a-fA-F]{2})+\Z")
_BAD_SEGMENT = re.compile(r"//|/\./|/\.\./|/\.{1,2}\Z")


def read_platform(reader: StackReader, env: str, typed: dict[str, Any]) -> None:
    """`platform` and its `kubernetes` table, read into the environment's fields."""
    raw = typed.pop("kubernetes", None)
    kubernetes = typed.get("platform") is m.PlatformKind.KUBERNETES
    written = reader.data["environments"][env].get("platform") is not None
    if raw is not None and not kubernetes and not written:
        reader.error(
            ("environments", env, "kubernetes"),
            f"environments.{env}.kubernetes is read only for a Kubernetes environment "
            "(platform is local by default)",
            f'add platform = "kubernetes" to [environments.{env}]',
            key=True,
        )
    elif kubernetes and raw is None:
        reader.error(
            ("environments", env, "platform"),
            f"environment {env} runs on Kubernetes but has no kubernetes table",
            'add kubernetes = { namespace = "NAME", gateway = "NAMESPACE/NAME" }',
        )
    elif kubernetes:
        typed["kubernetes"] = read_kubernetes(reader, env, raw)


def read_kubernetes(reader: StackReader, env: str, raw: object) -> m.Kubernetes | None:
    """The `kubernetes` table of environment `env`, or None when it has errors."""
    path: KeyPath = ("environments", env, "kubernetes")
    typed = reader.table(
        raw,
        path,
        {
            "context": reader.text,
            "namespace": reader.text,
            "gateway": reader.text,
            "agent_image": reader.text,
        },
        f"environments.{env}.kubernetes",
    )
    if typed is None:
        return None
    namespace = typed.get("namespace")
    if namespace is None:
        reader.error(
            path,
            f"environments.{env}.kubernetes needs a namespace, like "
            f'kubernetes = {{ namespace = "shop" }}',
        )
        return None
    ok = True
    if not _DNS_LABEL.match(namespace):
        reader.error(
            (*path, "namespace"),
            f"environments.{env}.kubernetes.namespace {quote(namespace)} is not a namespace "
            "name: lower-case letters, digits and '-', starting and ending with a letter or "
            "digit, at most 63 characters",
        )
        ok = False
    gateway = typed.get("gateway")
    if gateway is not None and not all(_DNS_LABEL.match(part) for part in gateway.split("/", 1)):
        reader.error(
            (*path, "gateway"),
            f"environments.{env}.kubernetes.gateway must name a Gateway as NAMESPACE/NAME or "
            f'NAME, like "infra/public", found {quote(gateway)}',
        )
        ok = False
    image = typed.get("agent_image")
    if image is not None and not _IMAGE.match(image):
        reader.error(
            (*path, "agent_image"), _bad_image(f"environments.{env}.kubernetes.agent_image", image)
        )
        ok = False
    return m.Kubernetes(**typed) if ok else None


def check_kubernetes(
    reader: StackReader,
    stack_name: str,
    environment: m.Environment,
    services: Mapping[str, m.Service],
    origin: Mapping[tuple[str, str], KeyPath],
    overlay: Mapping[str, Mapping[str, Any]],
) -> None:
    """Report what the services of a Kubernetes environment cannot be there."""
    env = environment.name
    if not _LABEL_VALUE.match(env):
        reader.error(
            ("environments", env),
            f"environment {env} cannot label Kubernetes objects: its name must end with a "
            "letter or digit",
            key=True,
        )
    if not _LABEL_VALUE.match(stack_name):
        reader.error(
            ("stack", "name"),
            f"the stack's name {quote(stack_name)} cannot label Kubernetes objects "
            f"(environment {env} runs there): at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit",
        )
    if environment.listen is not None:
        reader.error(
            ("environments", env, "listen"),
            f"environments.{env}.listen means nothing on Kubernetes: requests reach the "
            "services through the Gateway named in its kubernetes table",
            f"remove listen from [environments.{env}]",
        )
    if environment.tls is not None and environment.tls.enabled:
        reader.error(
            ("environments", env, "tls"),
            f"environments.{env}.tls cannot be rendered: on Kubernetes (environment {env}) "
            "TLS is the Gateway's, which sqlifier does not own",
            "put the certificate in a Secret (kubectl create secret tls NAME --cert --key) "
            "named by the certificateRefs of the Gateway's HTTPS listener, and remove tls "
            f"from [environments.{env}]",
            key=True,
        )
    for name, service in services.items():
        _check_service(reader, stack_name, env, service, origin, overlay.get(name, {}))
    routed = [name for name, service in services.items() if service.routes]
    kubernetes = environment.kubernetes
    if routed and kubernetes is not None and kubernetes.gateway is None:
        reader.error(
            ("environments", env, "kubernetes"),
            f"services {', '.join(routed)} have routes, but environments.{env}.kubernetes "
            "names no gateway for their HTTPRoutes",
            'add gateway = "NAMESPACE/NAME" (or "NAME" in the same namespace)',
        )


def _check_service(
    reader: StackReader,
    stack_name: str,
    env: str,
    service: m.Service,
    origin: Mapping[tuple[str, str], KeyPath],
    overlay: Mapping[str, Any],
) -> None:
    name = service.name

    def where(key: str, *rest: str | int) -> KeyPath:
        written = origin.get((name, key), ("services", name, key))
        over: KeyPath = ("environments", env, "services", name, key, *rest)
        if key in overlay and reader.positions.value(over) is not None:
            return over
        return (*written, *rest)

    if name.endswith("-") or name == AGENT_NAME:
        reader.error(
            ("services", name),
            f"service {name} cannot be named so on Kubernetes (environment {env}): "
            + (
                "the name must end with a letter or digit"
                if name.endswith("-")
                else f"{AGENT_NAME} is the name of sqlifier's agent there"
            ),
            key=True,
        )
    if service.image is None:
        reader.error(
            ("services", name),
            f"service {name} has no image: environment {env} runs on Kubernetes, where a "
            "release is a container image",
            f'add image = "registry.example.com/{stack_name}/{name}" to [services.{name}] '
            "(local environments ignore it)",
            key=True,
        )
    elif not _IMAGE.match(service.image):
        reader.error(where("image"), _bad_image(f"services.{name}.image", service.image))
    for key, why in LOCAL_ONLY.items():
        if key in overlay:
            reader.error(
                ("environments", env, "services", name, key),
                f"{key} means nothing on Kubernetes, where environment {env} runs: {why}",
                f"remove it from [environments.{env}.services.{name}]",
                key=True,
            )
    if service.restart is not m.RestartPolicy.ALWAYS:
        reader.error(
            where("restart"),
            f'services.{name}.restart = "{service.restart.value}" cannot hold on Kubernetes '
            f"(environment {env}): the pods of a Deployment or StatefulSet are always restarted",
            f'set restart = "always" in [environments.{env}.services.{name}]',
        )
    for table in ("env", "secrets"):
        for variable in getattr(service, table):
            if not _ENV_VAR.match(variable):
                reader.error(
                    where(table, variable),
                    f"{variable!r} cannot be an environment variable on Kubernetes "
                    f"(environment {env}): letters, digits, '-', '.' and '_', not starting "
                    "with a digit",
                    key=True,
                )
    if not service.stateful and not service.shell and "INSTANCE_INDEX" in _run_names(service):
        reader.error(
            where("run"),
            f"services.{name}.run uses $INSTANCE_INDEX, which the pods of a Deployment do not "
            f"have (environment {env} runs on Kubernetes)",
            "use $INSTANCE (the pod's name), or make the service stateful = true",
        )
    _check_probes(reader, env, service, where)
    _check_routes(reader, env, service, where)
    for index, entry in enumerate(service.egress):
        if entry.kind == "host":
            reader.error(
                where("egress", index),
                f"services.{name}.egress {quote(str(entry))} names a host, which a "
                f"NetworkPolicy cannot (environment {env} runs on Kubernetes): it allows "
                "addresses and networks only",
                f'write its address or network, like "192.0.2.7/32:{entry.port}", in '
                f"[environments.{env}.services.{name}]",
            )


def _run_names(service: m.Service) -> set[str]:
    try:
        return {n for word in shlex.split(service.run) for n in names_in(word)}
    except (UnknownName, ValueError):  # reported by the check of `run` itself
        return set()


def _check_probes(reader: StackReader, env: str, service: m.Service, where: Any) -> None:
    for kind in ("startup", "readiness", "liveness"):
        probe: m.Probe | None = getattr(service.probes, kind)
        if probe is None:
            continue
        for key in ("period", "timeout"):
            seconds = getattr(probe, key)
            if seconds != int(seconds):
                reader.error(
                    where("probes", kind, key),
                    f"services.{service.name}.probes.{kind}.{key} is {seconds:g}s: Kubernetes "
                    f"(environment {env}) counts probe times in whole seconds",
                    f'write "{max(1, round(seconds))}s"',
                )
        if probe.status is not None and not 200 <= probe.status <= 399:
            reader.error(
                where("probes", kind, "status"),
                f"services.{service.name}.probes.{kind}.status {probe.status} cannot pass on "
                f"Kubernetes (environment {env}), where an HTTP probe passes on 200 to 399 only",
            )
        if kind != "readiness" and probe.success_threshold != 1:
            reader.error(
                where("probes", kind, "success_threshold"),
                f"services.{service.name}.probes.{kind}.success_threshold must be 1 on "
                f"Kubernetes (environment {env}): only a readiness probe counts successes",
            )


def _check_routes(reader: StackReader, env: str, service: m.Service, where: Any) -> None:
    for index, route in enumerate(service.routes):
        problem = None
        if route.host is not None and not _HOSTNAME.match(route.host):
            problem = "its host must be a DNS name, like shop.example.com"
        elif route.host is not None and len(service.name) + 1 + len(route.host) > 253:
            problem = f"its HTTPRoute's name, {service.name}.HOST, would be over 253 characters"
        elif not _GATEWAY_PATH.match(route.path) or _BAD_SEGMENT.search(route.path):
            problem = "its path must have no empty, '.' or '..' segment and no bare '%'"
        if problem is not None:
            reader.error(
                where("routes", index),
                f"route {quote(str(route))} of {service.name} cannot be an HTTPRoute "
                f"(environment {env} runs on Kubernetes): {problem}",
            )


def _bad_image(what: str, image: str) -> str:
    return (
        f"{what} {quote(image)} is not an image reference: write REGISTRY/PATH[:TAG], "
        'like "registry.example.com/shop/checkout" (lower-case path)'
    )
