"""A service's secrets on Kubernetes: one Secret per service, `<service>-secrets`.

Rendered, the Secret lists its keys (one per name in the service's `secrets`) with empty
values, and says in annotations which reference fills each key and that the values are
filled at apply time: no value is ever in a rendered file or on a terminal. `filled_secret`
is what the apply step sends instead: the same object, each key resolved through
sqlifier's secret providers (the same references as locally), in an object whose printed
form masks every value, so that it cannot be logged by mistake.

A secret with `file = "..."` is mounted from the same Secret as a read-only file under
`/run/secrets/sqlifier/`; its variable holds the file's path, as locally.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from sqlifier.platform.kubernetes.render_common import Manifest, Target, metadata
from sqlifier.secrets.errors import SecretError
from sqlifier.secrets.providers import Context, resolve
from sqlifier.secrets.redact import MASK, Redactor
from sqlifier.stack.model import Service

__all__ = [
    "FILLED_AT_APPLY",
    "REFERENCES",
    "SECRET_FILES",
    "FilledSecret",
    "filled_secret",
    "secret_name",
    "secret_object",
]

SECRET_FILES = "/run/secrets/sqlifier"
FILLED_AT_APPLY = "sqlifier.dev/filled-at-apply"  # "true": the values are not rendered
REFERENCES = "sqlifier.dev/references"  # JSON: key -> the reference that fills it


def secret_name(service: str) -> str:
    return f"{service}-secrets"


def secret_object(target: Target, service: Service) -> Manifest | None:
    """The service's Secret with its keys and empty values; None without secrets."""
    if not service.secrets:
        return None
    names = sorted(service.secrets)
    references = {name: service.secrets[name].ref for name in names}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(
            target,
            secret_name(service.name),
            service.name,
            {FILLED_AT_APPLY: "true", REFERENCES: json.dumps(references, sort_keys=True)},
        ),
        "type": "Opaque",
        "data": dict.fromkeys(names, ""),
    }


class FilledSecret(dict[str, Any]):
    """A Secret with its values: printed (or logged), every value shows as a mask."""

    def __repr__(self) -> str:
        shown = dict(self)
        if isinstance(shown.get("data"), dict):
            shown["data"] = dict.fromkeys(shown["data"], MASK)
        return repr(shown)

    __str__ = __repr__


def filled_secret(
    target: Target, service: Service, context: Context, redactor: Redactor | None = None
) -> FilledSecret | None:
    """The service's Secret with each key resolved through its provider, for apply; None
    without secrets. SecretError names the service, the key and the reference (never a
    value); each value is added to `redactor`, to be masked wherever it would show."""
    rendered = secret_object(target, service)
    if rendered is None:
        return None
    data: dict[str, str] = {}
    for name in rendered["data"]:
        reference = service.secrets[name].ref
        try:
            value = resolve(reference, context)
        except SecretError as exc:
            raise SecretError(f"service {service.name}: secret {name}: {exc}") from None
        if redactor is not None:
            redactor.add([value])
        data[name] = base64.b64encode(value.encode()).decode("ascii")
    return FilledSecret({**rendered, "data": data})
