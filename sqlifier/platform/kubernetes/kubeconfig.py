"""A connection from a plain kubeconfig without the `kubernetes` client's import.

Importing the official client takes seconds (its generated models, pydantic, its config
loaders): more than `sqlifier ps` may take in all. Most kubeconfigs are plain — a server,
its CA, and a client certificate or a token — and need none of it: `quick_connect` reads
such a context itself (YAML, then a urllib3 pool with the certificates) and returns the
same `Cluster` as `api.connect`. Anything else — an exec plugin, an auth provider, a
context or a file that is missing or damaged, in-cluster credentials — goes to
`api.connect`, which reads it as kubectl does and words every error.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sqlifier.platform.kubernetes.api import Cluster, _check_namespace, connect

__all__ = ["quick_connect"]

_PLAIN_USER = {
    "client-certificate", "client-certificate-data", "client-key", "client-key-data",
    "token", "tokenFile",
}  # fmt: skip


def quick_connect(
    namespace: str, context: str | None = None, kubeconfig: Path | str | None = None
) -> Cluster:
    """`api.connect`, without importing the client when the context is a plain one."""
    found = _plain_context(context, kubeconfig)
    if found is None:
        return connect(namespace, context, kubeconfig)
    name, path, server, user = found
    client = _LightClient(server, user, path)
    cluster = Cluster(client, namespace, f"context {name!r} of {path}")
    try:
        _check_namespace(cluster)
    except BaseException:
        cluster.close()
        raise
    return cluster


def _plain_context(
    context: str | None, kubeconfig: Path | str | None
) -> tuple[str, Path, dict[str, Any], dict[str, Any]] | None:
    """The context's name, file, cluster and user, when all are in one readable file and
    the user is a certificate or a token; else None."""
    if kubeconfig is not None:
        files = [Path(kubeconfig).expanduser()]
    elif os.environ.get("KUBECONFIG"):
        files = [Path(p).expanduser() for p in os.environ["KUBECONFIG"].split(os.pathsep) if p]
    else:
        files = [Path("~/.kube/config").expanduser()]
    if len(files) != 1 or not files[0].is_file():
        return None
    import yaml  # noqa: PLC0415

    try:
        config = yaml.safe_load(files[0].read_text(encoding="utf-8"))
        name = context or config["current-context"]
        chosen = _named(config["contexts"], name)["context"]
        server = _named(config["clusters"], chosen["cluster"])["cluster"]
        user = _named(config["users"], chosen["user"])["user"] or {}
    except (OSError, ValueError, KeyError, TypeError, LookupError, yaml.YAMLError):
        return None
    if not isinstance(server, dict) or not server.get("server") or not set(user) <= _PLAIN_USER:
        return None
    return str(name), files[0], server, user


def _named(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for item in items:
        if item.get("name") == name:
            return item
    raise LookupError(name)


class _Configuration:
    def __init__(self, host: str, token: str | None) -> None:
        self.host = host.rstrip("/")
        self._token = token

    def auth_settings(self) -> dict[str, dict[str, str]]:
        if not self._token:
            return {}
        return {"BearerToken": {"key": "authorization", "value": f"Bearer {self._token}"}}


class _Rest:
    def __init__(self, pool_manager: Any) -> None:
        self.pool_manager = pool_manager


class _LightClient:
    """What `Cluster` uses of the client's ApiClient: its configuration (host, token)
    and its connection pool."""

    def __init__(self, server: dict[str, Any], user: dict[str, Any], path: Path) -> None:
        import urllib3  # noqa: PLC0415

        self._folder = tempfile.mkdtemp(prefix="sqlifier-kube-")
        options: dict[str, Any] = {}
        if server.get("insecure-skip-tls-verify"):
            options["cert_reqs"] = "CERT_NONE"
        else:
            options["cert_reqs"] = "CERT_REQUIRED"
            ca = self._file(server, "certificate-authority", path)
            if ca:
                options["ca_certs"] = ca
        cert = self._file(user, "client-certificate", path)
        key = self._file(user, "client-key", path)
        if cert and key:
            options["cert_file"], options["key_file"] = cert, key
        token = user.get("token")
        if not token and user.get("tokenFile"):
            token = Path(user["tokenFile"]).read_text(encoding="utf-8").strip()
        self.configuration = _Configuration(str(server["server"]), token)
        self.rest_client = _Rest(urllib3.PoolManager(maxsize=4, **options))

    def _file(self, section: dict[str, Any], key: str, path: Path) -> str | None:
        """A certificate or key as a file urllib3 can read: as named (relative to the
        kubeconfig), or the `-data` written to a private temporary file."""
        if section.get(f"{key}-data"):
            target = Path(self._folder) / key
            target.touch(mode=0o600)
            target.write_bytes(base64.b64decode(section[f"{key}-data"]))
            return str(target)
        if section.get(key):
            return str((path.parent / str(section[key])).expanduser())
        return None

    def close(self) -> None:
        self.rest_client.pool_manager.clear()
        shutil.rmtree(self._folder, ignore_errors=True)
