"""The CLI's requests to the agent on a cluster, as ConfigMaps: no port to open.

On a cluster the CLI cannot reach the agent's socket; both reach the Kubernetes API. A
request is a ConfigMap in the environment's namespace, made by the CLI:

    metadata.generateName  sqlifier-request-
    metadata.labels        sqlifier.dev/request: "rules"   (what it is about)
                           sqlifier.dev/stack, sqlifier.dev/env
    data.request           {"method": "POST", "path": "/v1/rules/pause",
                            "body": {"rule": "scale-images"}, "who": "alice"}

The agent watches ConfigMaps so labelled (list once, then a watch), carries out each new
one and writes its answer into the same ConfigMap:

    data.answer            the JSON the agent's API answers locally to the same request
    labels                 sqlifier.dev/request-state: "done"

The CLI waits for that label (reading the one ConfigMap again, every 0.1 s, for at most
`timeout` seconds), prints the answer as it would the local API's, and deletes the
ConfigMap; the agent deletes answered requests older than `KEEP_ANSWERED` that a CLI left.

The requests the agent takes this way: `GET /v1/rules` (`rules list`), `POST
/v1/rules/explain`, `/v1/rules/pause` and `/v1/rules/resume`. Any other is answered
`{"ok": false, "error": "... not yet on Kubernetes"}`. Who may ask is who may create
ConfigMaps in the namespace (RBAC); the request's `who` is what the CLI says of its user,
and goes to the audit log as such.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from sqlifier.errors import UserError
from sqlifier.platform.kubernetes.api import Cluster
from sqlifier.platform.kubernetes.errors import ClusterError
from sqlifier.platform.kubernetes.render_common import LABEL_ENV, LABEL_STACK, MANAGED_BY, Target
from sqlifier.stack.model import Stack

__all__ = [
    "LABEL_REQUEST",
    "LABEL_STATE",
    "ClusterAgentClient",
    "answer_request",
    "cluster_client",
    "pending_requests",
]

LABEL_REQUEST = "sqlifier.dev/request"
LABEL_STATE = "sqlifier.dev/request-state"
PREFIX = "sqlifier-request-"
POLL = 0.1
KEEP_ANSWERED = 600.0  # seconds an answered request may wait for its CLI to delete it


def _labels(stack: str, env: str, about: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_STACK: stack,
        LABEL_ENV: env,
        LABEL_REQUEST: about,
    }


def _path(cluster: Cluster, name: str = "") -> str:
    base = f"/api/v1/namespaces/{cluster.namespace}/configmaps"
    return f"{base}/{name}" if name else base


class ClusterAgentClient:
    """The CLI's side: `request(method, path, body)` as `AgentClient` has it, answered by
    the agent on the cluster through a request ConfigMap."""

    def __init__(
        self,
        cluster: Cluster,
        stack: str,
        env: str,
        who: str,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.cluster = cluster
        self.stack = stack
        self.env = env
        self.who = who
        self.timeout = timeout
        self.clock = clock
        self.sleep = sleep

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        about = path.strip("/").split("/")[1] if path.count("/") > 1 else "agent"
        payload = {"method": method, "path": path, "body": body or {}, "who": self.who}
        obj = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"generateName": PREFIX, "labels": _labels(self.stack, self.env, about)},
            "data": {"request": json.dumps(payload)},
        }
        made = self.cluster.request(
            "POST",
            _path(self.cluster),
            verb="create",
            what=f"a request to the agent of {self.stack} ({self.env})",
            body=obj,
        )
        name = made["metadata"]["name"]
        deadline = self.clock() + self.timeout
        try:
            while True:
                live = self.cluster.request(
                    "GET",
                    _path(self.cluster, name),
                    verb="get",
                    what=f"ConfigMap {self.cluster.namespace}/{name} (a request to the agent)",
                )
                labels = (live.get("metadata") or {}).get("labels") or {}
                if labels.get(LABEL_STATE) == "done":
                    return json.loads((live.get("data") or {}).get("answer") or "{}")
                if self.clock() >= deadline:
                    raise UserError(
                        f"the agent of {self.stack} ({self.env}) did not answer within "
                        f"{self.timeout:g} s (request ConfigMap {self.cluster.namespace}/{name}): "
                        "is it running? kubectl -n "
                        f"{self.cluster.namespace} get deployment sqlifier-agent"
                    )
                self.sleep(POLL)
        finally:
            with contextlib.suppress(ClusterError):  # the agent deletes what is left
                self.cluster.request(
                    "DELETE",
                    _path(self.cluster, name),
                    verb="delete",
                    what=f"ConfigMap {self.cluster.namespace}/{name}",
                )


def pending_requests(cluster: Cluster, stack: str, env: str) -> list[dict[str, Any]]:
    """The request ConfigMaps of this stack and environment not yet answered."""
    selector = f"{LABEL_STACK}={stack},{LABEL_ENV}={env},{LABEL_REQUEST},!{LABEL_STATE}"
    answer = cluster.request(
        "GET",
        _path(cluster),
        verb="list",
        what=f"the requests to the agent in namespace {cluster.namespace}",
        query=[("labelSelector", selector)],
    )
    return list(answer.get("items") or [])


def answer_request(cluster: Cluster, obj: Mapping[str, Any], answer: Any) -> None:
    """Write the answer into the request's ConfigMap and mark it done."""
    name = obj["metadata"]["name"]
    patch = {
        "metadata": {"labels": {LABEL_STATE: "done"}},
        "data": {"answer": json.dumps(answer)},
    }
    cluster.request(
        "PATCH",
        _path(cluster, name),
        verb="patch",
        what=f"ConfigMap {cluster.namespace}/{name} (an answer of the agent)",
        body=patch,
        content_type="application/merge-patch+json",
    )


def old_answers(cluster: Cluster, stack: str, env: str, now: float) -> list[str]:
    """Answered requests no CLI deleted within KEEP_ANSWERED: their names."""
    selector = f"{LABEL_STACK}={stack},{LABEL_ENV}={env},{LABEL_REQUEST},{LABEL_STATE}=done"
    answer = cluster.request(
        "GET",
        _path(cluster),
        verb="list",
        what=f"the answered requests in namespace {cluster.namespace}",
        query=[("labelSelector", selector)],
    )
    import datetime  # noqa: PLC0415

    out = []
    for item in answer.get("items") or []:
        made = (item.get("metadata") or {}).get("creationTimestamp")
        if made is None:
            continue
        t = datetime.datetime.fromisoformat(str(made).replace("Z", "+00:00")).timestamp()
        if now - t > KEEP_ANSWERED:
            out.append(str(item["metadata"]["name"]))
    return out


def parse_request(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The request a ConfigMap carries; None when it carries none that can be read."""
    try:
        payload = json.loads((obj.get("data") or {}).get("request") or "")
    except ValueError:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("path"), str):
        return None
    return payload


def cluster_client(stack: Stack, env: str, who: str) -> ClusterAgentClient:
    """The client of the agent of Kubernetes environment `env`, through its cluster."""
    from sqlifier.platform.kubernetes.api import connect  # noqa: PLC0415

    target = Target.of(stack, env)
    cluster = connect(target.namespace, target.context)
    return ClusterAgentClient(cluster, stack.name, env, who)
