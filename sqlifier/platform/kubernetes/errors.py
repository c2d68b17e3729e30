"""What can go wrong talking to a cluster, each a UserError whose message names the object
(kind, namespace/name), what the cluster said, and what to do."""

from __future__ import annotations

from sqlifier.errors import UserError

__all__ = [
    "ApplyConflict",
    "ClusterError",
    "ClusterUnreachable",
    "Forbidden",
    "NamespaceNotFound",
    "NotReady",
]


class ClusterError(UserError):
    """A Kubernetes API call that failed; the message names the object and what to do.
    `status`: the HTTP status the API server answered (None when it did not answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ClusterUnreachable(ClusterError):
    """No answer from the API server (or no credentials to ask it with)."""


class Forbidden(ClusterError):
    """RBAC refuses a verb on a resource: the message names both and the Role to grant."""

    def __init__(self, message: str, verb: str, resource: str) -> None:
        super().__init__(message, 403)
        self.verb = verb
        self.resource = resource


class NamespaceNotFound(ClusterError):
    """The environment's namespace does not exist on the cluster."""


class ApplyConflict(ClusterError):
    """Server-side apply refused: another field manager owns fields sqlifier sets."""


class NotReady(ClusterError):
    """A workload did not become ready in time: names a pod, its events and last log lines."""
