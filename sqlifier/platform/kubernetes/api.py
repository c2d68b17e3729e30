"""A connection to a cluster, and the one path every request takes.

`connect` finds credentials as kubectl does (a kubeconfig named, else $KUBECONFIG, else
~/.kube/config; in a pod, its service account), asks the API server once whether the
namespace exists, and returns a `Cluster`. Requests go through `Cluster.request`, which
turns every failure into a ClusterError naming the object, the verb and what to do; the
objects themselves stay plain dicts (as their YAML reads), whatever their kind: a kind's
resource path comes from discovery of its API group version, asked once per connection.

The `kubernetes` client is imported here, inside functions only: `sqlifier --help` and
every local command start without it.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlifier.platform.kubernetes.errors import (
    ClusterError,
    ClusterUnreachable,
    Forbidden,
    NamespaceNotFound,
)

__all__ = ["REQUEST_TIMEOUT", "Cluster", "Resource", "connect", "open_stream", "ref"]

# (connect, read) seconds of one request; a watch or a wait sets its own.
REQUEST_TIMEOUT = (5.0, 30.0)
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Resource:
    """Where objects of one kind live in the API."""

    api_version: str  # "v1", "apps/v1"
    kind: str
    plural: str  # "deployments"
    namespaced: bool

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def qualified(self) -> str:
        """As RBAC and error messages name it: "deployments.apps", "services"."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def path(self, namespace: str | None, name: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base


def ref(obj: Mapping[str, Any], namespace: str | None = None) -> str:
    """An object as messages name it: "Deployment shop/web", "Namespace shop"."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace") or namespace
    name = meta.get("name", "?")
    return f"{obj.get('kind', '?')} {ns}/{name}" if ns else f"{obj.get('kind', '?')} {name}"


class Cluster:
    """A connection to one cluster, for one namespace (the environment's)."""

    def __init__(self, api_client: Any, namespace: str, where: str) -> None:
        self.api_client = api_client
        self.namespace = namespace
        self.where = where  # 'context "prod" of /home/me/.kube/config', for messages
        self._resources: dict[str, dict[str, Resource]] = {}

    @property
    def host(self) -> str:
        return str(self.api_client.configuration.host)

    def close(self) -> None:
        self.api_client.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- discovery --------------------------------------------------------------------

    def resource(self, api_version: str, kind: str) -> Resource:
        """Where objects of `kind` live; ClusterError when the cluster does not serve it."""
        found = self._kinds(api_version).get(kind)
        if found is None:
            what = (
                " (the Gateway API CRDs are not installed on it)"
                if api_version.startswith("gateway.networking.k8s.io/")
                else ""
            )
            raise ClusterError(
                f"the cluster ({self.where}) does not serve {kind} of {api_version}{what}: "
                "install what provides it, or use a cluster that has it"
            )
        return found

    def served(self, api_version: str, kind: str) -> bool:
        """Whether the cluster has `kind` (an older one may not; CRDs may be missing)."""
        return kind in self._kinds(api_version)

    def _kinds(self, api_version: str) -> dict[str, Resource]:
        """The kinds of an API group version, by discovery, asked once."""
        if api_version in self._resources:
            return self._resources[api_version]
        path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        try:
            answer = self.request("GET", path, verb="get", what=f"API {api_version}")
        except ClusterError as e:
            if e.status != 404:
                raise
            answer = {}
        out = {}
        for item in (answer or {}).get("resources", []):
            if "/" not in item["name"]:  # "deployments/scale" is a subresource
                out[item["kind"]] = Resource(
                    api_version, item["kind"], item["name"], bool(item["namespaced"])
                )
        self._resources[api_version] = out
        return out

    # --- requests ---------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        verb: str,
        what: str,
        resource: Resource | None = None,
        body: Any = None,
        query: Iterable[tuple[str, str]] = (),
        content_type: str = JSON,
        timeout: tuple[float, float] = REQUEST_TIMEOUT,
    ) -> Any:
        """One API call, its JSON answer as dicts. `verb` (RBAC's: get, list, patch, ...),
        `what` (the object, as messages name it) and `resource` word the errors."""
        data = self._send(method, path, query, content_type, body, timeout, verb, what, resource)
        return json.loads(data) if data else None

    def request_text(self, path: str, *, what: str, query: Iterable[tuple[str, str]] = ()) -> str:
        """A GET whose answer is text (a pod's log), decoded."""
        data = self._send("GET", path, query, None, None, REQUEST_TIMEOUT, "get", what, None)
        return data.decode("utf-8", errors="replace")

    def _send(
        self,
        method: str,
        path: str,
        query: Iterable[tuple[str, str]],
        content_type: str | None,
        body: Any,
        timeout: tuple[float, float],
        verb: str,
        what: str,
        resource: Resource | None,
    ) -> bytes:
        # The client's connection pool (its TLS and client certificates) and its credentials
        # (tokens, refreshed by exec plugins), but not its request layer, whose shape
        # changes between the client's major versions.
        import urllib3  # noqa: PLC0415

        configuration = self.api_client.configuration
        headers = {"Accept": JSON if content_type else "*/*", "User-Agent": "sqlifier"}
        if content_type:
            headers["Content-Type"] = content_type
        auth = configuration.auth_settings().get("BearerToken")
        if auth and auth.get("value"):
            headers[auth["key"]] = auth["value"]
        url = self.host + path
        pairs = list(query)
        if pairs:
            url += "?" + urllib.parse.urlencode(pairs)
        try:
            answer = self.api_client.rest_client.pool_manager.request(
                method,
                url,
                body=None if body is None else json.dumps(body),
                headers=headers,
                timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]),
                retries=False,
                preload_content=True,
            )
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise self.unreachable(e) from None
        data = bytes(answer.data or b"")
        if not 200 <= answer.status < 300:
            raise api_error(answer.status, answer.reason, data, self, verb, what, resource)
        return data

    def unreachable(self, e: BaseException) -> ClusterUnreachable:
        reason = _connection_reason(e)
        return ClusterUnreachable(
            f"cannot reach the Kubernetes API at {self.host} ({self.where}): {reason}; check "
            "that the cluster runs and that this is the context meant (kubectl cluster-info)"
        )


def _connection_reason(e: BaseException) -> str:
    seen: BaseException | None = e
    reason = str(e)
    while seen is not None:  # urllib3 wraps the OSError that says it best
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        inner = getattr(seen, "reason", None)
        if isinstance(inner, BaseException):
            reason = str(inner)
            seen = inner
        else:
            seen = seen.__cause__ or seen.__context__
    if "Connection refused" in reason:
        return "connection refused"
    if "timed out" in reason.lower():
        return "no answer (timed out)"
    return reason


def api_error(
    status: int,
    reason: str | None,
    data: bytes,
    cluster: Cluster,
    verb: str,
    what: str,
    resource: Resource | None,
) -> ClusterError:
    """The ClusterError an answer with `status` (not 2xx) and body `data` stands for."""
    body = _status_body(data)
    message = str(body.get("message") or reason or "")
    details = body.get("details") or {}
    if status == 401:
        return ClusterUnreachable(
            f"{what}: the cluster ({cluster.where}) does not accept these credentials "
            "(401 Unauthorized): log in again or renew the token of that context",
            401,
        )
    if status == 403:
        return _forbidden(cluster, verb, what, resource, message)
    if status == 404 and details.get("kind") == "namespaces":
        return NamespaceNotFound(
            f"{what}: namespace {details.get('name') or cluster.namespace} does not exist on "
            f"the cluster ({cluster.where}): create it (kubectl create namespace "
            f"{details.get('name') or cluster.namespace}) or name another in the "
            "environment's kubernetes = { namespace = ... }",
            404,
        )
    causes = [
        f"{c.get('field', '')}: {c.get('message', '')}".strip(": ")
        for c in details.get("causes") or []
    ]
    said = "; ".join(causes) if causes else message
    return ClusterError(
        f"{what}: the cluster refused to {verb} it ({status} {reason}): {said}", status
    )


def _status_body(data: bytes) -> dict[str, Any]:
    try:
        body = json.loads(data or b"{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _forbidden(
    cluster: Cluster, verb: str, what: str, resource: Resource | None, message: str
) -> Forbidden:
    user = re.search(r'User "([^"]+)"', message)
    who = f"user {user.group(1)}" if user else "this user"
    plural = resource.plural if resource else _said_resource(message)
    group = resource.group if resource else ""
    scoped = not resource or resource.namespaced
    where = f" in namespace {cluster.namespace}" if scoped else ""
    role = "a Role" if scoped else "a ClusterRole"
    return Forbidden(
        f"{what}: {who} may not {verb} {resource.qualified if resource else plural}{where} "
        f"({cluster.where}): grant it {role} with verbs [{verb}] on resources [{plural}] "
        f'in apiGroups ["{group}"], or use a context that may',
        verb,
        resource.qualified if resource else plural,
    )


def _said_resource(message: str) -> str:
    found = re.search(r'resource "([^"]+)"', message)
    return found.group(1) if found else "?"


def connect(
    namespace: str,
    context: str | None = None,
    kubeconfig: Path | str | None = None,
    *,
    check_namespace: bool = True,
) -> Cluster:
    """A connection to the cluster of `context` (the kubeconfig's current one when None),
    as kubectl finds it, or in-cluster from a pod's service account; ClusterError when
    there is none, when it cannot be reached, or when the namespace does not exist."""
    try:
        from kubernetes import client, config  # noqa: PLC0415
    except ImportError:
        raise ClusterError(
            "a Kubernetes environment needs the kubernetes client: "
            "pip install 'sqlifier[kubernetes]'"
        ) from None
    configuration = client.Configuration()
    files = _kubeconfig_files(kubeconfig)
    if files:
        where = _load_kubeconfig(configuration, files, context)
    elif os.environ.get("KUBERNETES_SERVICE_HOST") and context is None:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        where = "in-cluster service account"
    else:
        raise ClusterUnreachable(
            "no kubeconfig found (looked at "
            + (str(kubeconfig) if kubeconfig else "$KUBECONFIG and ~/.kube/config")
            + ") and not running in a cluster: point KUBECONFIG at one, or log in to the "
            "cluster (its tool writes ~/.kube/config)"
        )
    configuration.retries = 0  # an unreachable cluster is said at once, not after retries
    cluster = Cluster(client.ApiClient(configuration), namespace, where)
    if check_namespace:
        _check_namespace(cluster)
    return cluster


def _kubeconfig_files(kubeconfig: Path | str | None) -> list[Path]:
    if kubeconfig is not None:
        path = Path(kubeconfig).expanduser()
        if not path.is_file():
            raise ClusterUnreachable(f"kubeconfig {path} does not exist or is not a file")
        return [path]
    if os.environ.get("KUBECONFIG"):
        return [Path(p).expanduser() for p in os.environ["KUBECONFIG"].split(os.pathsep) if p]
    default = Path("~/.kube/config").expanduser()
    return [default] if default.is_file() else []


def _load_kubeconfig(configuration: Any, files: list[Path], context: str | None) -> str:
    from kubernetes import config  # noqa: PLC0415

    named = os.pathsep.join(str(f) for f in files)
    try:
        contexts, current = config.list_kube_config_contexts(config_file=named)  # type: ignore[no-untyped-call]
    except Exception as e:  # the loader raises YAML, key and type errors on a damaged file
        raise ClusterUnreachable(f"kubeconfig {named} cannot be read: {e}") from None
    known = [c["name"] for c in contexts or []]
    if context is not None and context not in known:
        raise ClusterUnreachable(
            f"kubeconfig {named} has no context {context!r}; its contexts: "
            + (", ".join(known) or "none")
        )
    chosen = context or (current or {}).get("name")
    try:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=named, context=context, client_configuration=configuration
        )
    except Exception as e:  # as above; and an exec plugin that fails
        raise ClusterUnreachable(
            f"context {chosen!r} of kubeconfig {named} cannot be used: {e}"
        ) from None
    return f"context {chosen!r} of {named}"


def _check_namespace(cluster: Cluster) -> None:
    what = f"namespace {cluster.namespace}"
    try:
        cluster.request("GET", f"/api/v1/namespaces/{cluster.namespace}", verb="get", what=what)
    except Forbidden:
        return  # a namespaced Role may not read namespaces: a missing one shows at apply
    except ClusterError as e:
        if e.status == 404:
            raise NamespaceNotFound(
                f"namespace {cluster.namespace} does not exist on the cluster "
                f"({cluster.where}): create it (kubectl create namespace {cluster.namespace}) "
                "or name another in the environment's kubernetes = { namespace = ... }"
            ) from None
        raise


def open_stream(
    cluster: Cluster,
    path: str,
    query: list[tuple[str, str]],
    read: float | None,
    *,
    accept: str = "application/json",
    verb: str = "watch",
    what: str | None = None,
) -> Any:
    """A GET whose answer is read as it comes (a watch, a followed log): urllib3's response,
    not yet read; ClusterError for an answer that is not 2xx."""
    import urllib3  # noqa: PLC0415

    configuration = cluster.api_client.configuration
    headers = {"Accept": accept, "User-Agent": "sqlifier"}
    auth = configuration.auth_settings().get("BearerToken")
    if auth and auth.get("value"):
        headers[auth["key"]] = auth["value"]
    url = f"{cluster.host}{path}?{urllib.parse.urlencode(query)}"
    try:
        answer = cluster.api_client.rest_client.pool_manager.request(
            "GET",
            url,
            headers=headers,
            timeout=urllib3.Timeout(connect=5.0, read=read),
            retries=False,
            preload_content=False,
        )
    except (urllib3.exceptions.HTTPError, OSError) as e:
        raise cluster.unreachable(e) from None
    if not 200 <= answer.status < 300:
        data = answer.read()
        answer.release_conn()
        raise api_error(answer.status, answer.reason, data, cluster, verb, what or path, None)
    return answer
