"""What the agent must remember, kept in the cluster so that a new leader continues where
the old one stopped.

Locally the agent keeps its state in files under `.sqlifier/<env>/`: `engine.json` (the
rules' pending windows, cooldowns, action budgets, pauses, the releases already rolled
back from: engine/persist.py) and `deploys/<id>.json` (each deploy's progress). On a
cluster the same documents are ConfigMaps of the environment's namespace, one per key:

    ConfigMap sqlifier-state-<key>      data["state.json"]: the document, as JSON
      annotations sqlifier.dev/leader       the identity of the leader that wrote it
                  sqlifier.dev/term         that leader's term (leader.py)

`engine` holds what engine.json holds; `deploy-<id>` a deploy's record. Anyone may read
(`sqlifier deploy status` does); only the leader writes, and every write is **fenced**:

1. the agent's own elector must say it leads now (its renewal deadline not passed);
2. the Lease must still name it, with its term, and not have expired;
3. the object's stored term must not be higher than ours (a newer leader wrote it), and
   the write is conditional on the resourceVersion read (409: written since, read again).

Kubernetes offers no transaction over two objects, so (2) and (3) are two requests: a
leader paused for longer than the 5 s between its renewal deadline and the Lease's expiry,
right between them, could still land one late write. `claim()`, which a new leader calls
before it reads the state, stamps its term on every state object, so such a write is
refused by (3) from then on, and a new leader never reads state from under a late write.

The ConfigMaps carry the stack's and environment's labels but not `managed-by`: `up`'s
prune and `down` leave them alone (the records outlive the workloads).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from sqlifier.errors import UserError
from sqlifier.platform.kubernetes.api import Cluster, Resource
from sqlifier.platform.kubernetes.errors import ClusterError
from sqlifier.platform.kubernetes.leader import LEADER_LEASE, NotLeader, Term
from sqlifier.platform.kubernetes.locks import lease_resource, parse_time, record_labels

__all__ = ["ENGINE_KEY", "MAX_BYTES", "ClusterState", "StateTooLarge", "deploy_key"]

ENGINE_KEY = "engine"  # what engine.json holds locally: {"saved_at": ..., "engine": ...}
PREFIX = "sqlifier-state-"
FIELD = "state.json"
LEADER = "sqlifier.dev/leader"
TERM = "sqlifier.dev/term"
# A ConfigMap holds at most 1 MiB; a document is kept well under it.
MAX_BYTES = 900 * 1024
ATTEMPTS = 5
_KEY = re.compile(r"[a-z0-9]([a-z0-9.-]{0,200}[a-z0-9])?\Z")


def deploy_key(deploy_id: str) -> str:
    """The key of a deploy's or rollback's record (locally deploys/<id>.json)."""
    return "deploy-" + deploy_id.lower()


class StateTooLarge(UserError):
    """A state document that a ConfigMap cannot hold."""


class ClusterState:
    """The agent's state documents of one stack and environment, in ConfigMaps."""

    def __init__(
        self,
        cluster: Cluster,
        stack: str,
        env: str,
        fence: Callable[[], Term],
        *,
        clock: Callable[[], float] = time.time,
        leader_lease: str = LEADER_LEASE,
    ) -> None:
        self.cluster = cluster
        self.stack = stack
        self.env = env
        self.fence = fence  # the elector's: this leader's term, or NotLeader
        self.clock = clock
        self.leader_lease = leader_lease
        self._configmaps: Resource | None = None

    # --- reading (anyone) -------------------------------------------------------------

    def load(self, key: str) -> dict[str, Any] | None:
        """The document saved under `key`, or None when there is none."""
        found = self._get(key)
        if found is None:
            return None
        return _document(found, self._what(key))

    def keys(self, prefix: str = "") -> list[str]:
        """The keys saved, those starting with `prefix`, sorted."""
        names = (
            item["metadata"]["name"].removeprefix(PREFIX)
            for item in self._list()
            if item["metadata"]["name"].startswith(PREFIX)
        )
        return sorted(k for k in names if k.startswith(prefix))

    # --- writing (the leader) ---------------------------------------------------------

    def save(self, key: str, document: Mapping[str, Any]) -> None:
        """Write `document` under `key`, fenced: NotLeader when this agent does not lead
        (any more), and nothing is written."""
        _check_key(key)
        text = json.dumps(document, sort_keys=True, separators=(",", ":"))
        if len(text.encode()) > MAX_BYTES:
            raise StateTooLarge(
                f"{self._what(key)}: the state is {len(text.encode())} bytes, more than a "
                f"ConfigMap holds ({MAX_BYTES}); this is a bug in what is kept"
            )
        term = self._check_leader()
        self._write(key, term, {FIELD: text})

    def delete(self, key: str) -> None:
        """Remove the document under `key` (a finished deploy's record, say); fenced."""
        term = self._check_leader()
        found = self._get(key)
        if found is None:
            return
        self._refuse_newer(found, term, key)
        meta = found["metadata"]
        try:
            self.cluster.request(
                "DELETE",
                self._resource().path(self.cluster.namespace, PREFIX + key),
                verb="delete",
                what=self._what(key),
                resource=self._resource(),
                body={
                    "apiVersion": "v1",
                    "kind": "DeleteOptions",
                    "preconditions": {"resourceVersion": meta["resourceVersion"]},
                },
            )
        except ClusterError as e:
            if e.status == 409:
                raise NotLeader(
                    f"{self._what(key)} was written while it was being removed"
                ) from None
            if e.status != 404:
                raise

    def claim(self) -> int:
        """Stamp this leader's term on every state object (a new leader, before it reads):
        a deposed leader's late write is refused from then on. How many were stamped."""
        term = self._check_leader()
        stamped = 0
        for item in self._list():
            key = item["metadata"]["name"].removeprefix(PREFIX)
            if _term_of(item) < term.term:
                self._write(key, term, None)
                stamped += 1
        return stamped

    # --- the fence --------------------------------------------------------------------

    def _check_leader(self) -> Term:
        term = self.fence()
        resource = lease_resource(self.cluster)
        lease_what = f"Lease {self.cluster.namespace}/{self.leader_lease}"
        try:
            lease = self.cluster.request(
                "GET",
                resource.path(self.cluster.namespace, self.leader_lease),
                verb="get",
                what=lease_what,
                resource=resource,
            )
        except ClusterError as e:
            if e.status != 404:
                raise
            raise NotLeader(f"{lease_what} does not exist: no agent leads {self.env}") from None
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or "no one"
        transitions = int(spec.get("leaseTransitions") or 0)
        renewed = parse_time(spec.get("renewTime")) or 0.0
        expires = renewed + float(spec.get("leaseDurationSeconds") or 0)
        if holder != term.identity or transitions != term.term:
            raise NotLeader(
                f"agent {term.identity} (term {term.term}) is no longer the leader of "
                f"{self.env}: {lease_what} names {holder} (term {transitions})"
            )
        if self.clock() >= expires:
            raise NotLeader(f"agent {term.identity}'s {lease_what} has expired")
        return term

    def _refuse_newer(self, found: Mapping[str, Any], term: Term, key: str) -> None:
        stored = _term_of(found)
        if stored > term.term:
            who = (found["metadata"].get("annotations") or {}).get(LEADER, "?")
            raise NotLeader(
                f"{self._what(key)} was written by a newer leader ({who}, term {stored}) "
                f"than agent {term.identity} (term {term.term}): it no longer leads"
            )

    # --- the API ----------------------------------------------------------------------

    def _write(self, key: str, term: Term, data: dict[str, str] | None) -> None:
        """Create or replace the object, conditional on what was read; `data` None keeps
        the document and only stamps the term."""
        for _ in range(ATTEMPTS):
            found = self._get(key)
            if found is not None:
                self._refuse_newer(found, term, key)
            body = self._body(key, term, data if data is not None else _data(found))
            try:
                if found is None:
                    self._request("POST", None, "create", key, body)
                else:
                    body["metadata"]["resourceVersion"] = found["metadata"]["resourceVersion"]
                    self._request("PUT", PREFIX + key, "update", key, body)
            except ClusterError as e:
                if e.status != 409:
                    raise
                continue  # written (or created) since it was read: read it again
            return
        raise ClusterError(
            f"{self._what(key)}: written by someone else at each of {ATTEMPTS} attempts; "
            "is another agent writing it without leading? (sqlifier agent logs say)"
        )

    def _body(self, key: str, term: Term, data: dict[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": PREFIX + key,
                "labels": record_labels(self.stack, self.env, "state"),
                "annotations": {LEADER: term.identity, TERM: str(term.term)},
            },
            "data": data,
        }

    def _get(self, key: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self._request("GET", PREFIX + key, "get", key, None)
        except ClusterError as e:
            if e.status == 404:
                return None
            raise
        return found

    def _list(self) -> list[dict[str, Any]]:
        labels = record_labels(self.stack, self.env, "state")
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        answer = self.cluster.request(
            "GET",
            self._resource().path(self.cluster.namespace),
            verb="list",
            what=f"the state of {self.stack} ({self.env})",
            resource=self._resource(),
            query=[("labelSelector", selector)],
        )
        return list(answer.get("items", []))

    def _request(self, method: str, name: str | None, verb: str, key: str, body: Any) -> Any:
        return self.cluster.request(
            method,
            self._resource().path(self.cluster.namespace, name),
            verb=verb,
            what=self._what(key),
            resource=self._resource(),
            body=body,
        )

    def _resource(self) -> Resource:
        if self._configmaps is None:
            self._configmaps = self.cluster.resource("v1", "ConfigMap")
        return self._configmaps

    def _what(self, key: str) -> str:
        return f"ConfigMap {self.cluster.namespace}/{PREFIX}{key}"


def _check_key(key: str) -> None:
    if not _KEY.match(key):
        raise ValueError(f"not a state key: {key!r} (lowercase letters, digits, '-' and '.')")


def _term_of(found: Mapping[str, Any]) -> int:
    notes = (found.get("metadata") or {}).get("annotations") or {}
    try:
        return int(notes.get(TERM, "0"))
    except ValueError:
        return 0


def _data(found: Mapping[str, Any] | None) -> dict[str, str]:
    return dict((found or {}).get("data") or {})


def _document(found: Mapping[str, Any], what: str) -> dict[str, Any]:
    text = _data(found).get(FIELD)
    try:
        document = json.loads(text) if text is not None else None
    except ValueError as e:
        raise UserError(
            f"{what}: data[{FIELD!r}] is not JSON ({e}); it was edited by hand. Restore it, "
            "or delete the ConfigMap for the agent to start without that state"
        ) from None
    if not isinstance(document, dict):
        raise UserError(
            f"{what}: data[{FIELD!r}] is not a JSON object; it was edited by hand. Restore "
            "it, or delete the ConfigMap for the agent to start without that state"
        )
    return document
