"""A release as recorded: `Release` (one release of one service in one environment, its
record on disk is `Release.to_json`), its status, the error releases raise, and the service's
config recorded with it (`service_config`, `service_from_config`): a release runs with the
config it was made with, so a rollback brings back the old settings with the old code.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from sqlifier.errors import UserError
from sqlifier.stack.model import (
    Egress,
    Isolation,
    Probe,
    ProbeKind,
    Probes,
    Resources,
    RestartPolicy,
    Rollout,
    Route,
    SecretRef,
    Service,
    Timeouts,
    Warmup,
)
from sqlifier.stack.slo import slo_from_config

__all__ = [
    "VERSION",
    "Release",
    "ReleaseError",
    "ReleaseStatus",
    "config_hash",
    "few",
    "service_config",
    "service_from_config",
]

VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}\Z")  # a release version's form


class ReleaseStatus(enum.StrEnum):
    BUILT = "built"
    LIVE = "live"
    FAILED = "failed"
    ROLLED_BACK = "rolled back"
    SUPERSEDED = "superseded"


class ReleaseError(UserError):
    """A release that cannot be made or found; the message says what would be valid."""

    def __init__(
        self, message: str, *, service: str, version: str | None = None, output: str = ""
    ) -> None:
        super().__init__(message)
        self.service = service
        self.version = version
        self.output = output  # a failed build's output: the last OUTPUT_LIMIT bytes


@dataclass(frozen=True, slots=True)
class Release:
    """One release of one service in one environment, as recorded."""

    service: str
    env: str
    version: str
    path: Path  # .sqlifier/<env>/releases/<service>/<version>/
    commit: str | None  # git sources: the full sha, its committer time, the ref named
    commit_time: float | None
    ref: str | None
    content_hash: str  # of the files before the build: see content_hash()
    config: dict[str, Any]  # the service as resolved for `env`: secrets by reference only
    created: float
    created_by: str
    reason: str
    status: ReleaseStatus
    built: bool  # a build command ran (and succeeded: a failed build makes no release)
    build_output: str  # the last OUTPUT_LIMIT bytes of it
    live_at: float | None = None  # when it last became live
    details: dict[str, Any] = field(default_factory=dict)  # mark()'s extra fields

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["path"] = str(self.path)
        data["status"] = str(self.status)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Release:
        """The release `to_json` gave; KeyError, TypeError or ValueError for other data."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["path"] = Path(values["path"])
        values["status"] = ReleaseStatus(values["status"])
        return cls(**values)


def service_config(service: Service) -> dict[str, Any]:
    """The service as JSON-able data; secrets stay references (the model holds no values)."""
    result = _jsonable(service)
    assert isinstance(result, dict)
    # Left out at their defaults: a service that does not use them keeps its config hash.
    for key, default in (("isolation", "none"), ("egress", []), ("user", None)):
        if result.get(key) == default:
            del result[key]
    return result


def service_from_config(config: Mapping[str, Any]) -> Service:
    """The service `service_config` recorded: a release runs with the config it was made
    with, so a rollback brings back the old settings with the old code. KeyError,
    TypeError or ValueError for a record that is not one."""

    def probe(data: Mapping[str, Any] | None) -> Probe | None:
        if data is None:
            return None
        return Probe(**{**data, "kind": ProbeKind(data["kind"])})

    def route(text: str) -> Route:
        if text.startswith("/"):
            return Route(None, text)
        host, _, path = text.partition("/")
        return Route(host, "/" + path)

    values = dict(config)
    values["source"] = Path(values["source"])
    values["routes"] = tuple(route(str(r)) for r in values.get("routes", ()))
    values["secrets"] = {k: SecretRef(**v) for k, v in values.get("secrets", {}).items()}
    values["depends_on"] = tuple(values.get("depends_on", ()))
    values["compatible_schemas"] = tuple(values.get("compatible_schemas", ()))
    values["restart"] = RestartPolicy(values.get("restart", RestartPolicy.ALWAYS.value))
    probes = values.get("probes") or {}
    values["probes"] = Probes(*(probe(probes.get(k)) for k in ("startup", "readiness", "liveness")))
    values["warmup"] = Warmup(**values.get("warmup", {}))
    values["timeouts"] = Timeouts(**values.get("timeouts", {}))
    rollout = dict(values.get("rollout", {}))
    for key in ("steps", "analysis"):
        if key in rollout:
            rollout[key] = tuple(rollout[key])
    values["rollout"] = Rollout(**rollout)
    values["isolation"] = Isolation(values.get("isolation", Isolation.NONE.value))
    values["egress"] = tuple(Egress(**entry) for entry in values.get("egress", ()))
    if values.get("resources") is not None:
        values["resources"] = Resources(**values["resources"])
    values["slo"] = slo_from_config(values.get("slo"))
    known = {f.name for f in fields(Service)}
    return Service(**{k: v for k, v in values.items() if k in known})


def _jsonable(value: object) -> object:
    if isinstance(value, Route):
        return str(value)
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    return value


def config_hash(config: Mapping[str, Any]) -> str:
    """The first 8 hex digits of sha256 over the config's canonical JSON."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def few(names: list[str], limit: int = 10) -> str:
    if not names:
        return "none"
    more = f", … ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
