"""Releases: immutable, built copies of a service's source, kept on disk for rollback.

A release is made from the service's `source`:

- inside a git work tree: the source folder as of a commit (`git archive`), so only
  committed files count (uncommitted changes, untracked files, submodules and paths marked
  `export-ignore` are not part of it);
- any other directory: a snapshot of it, without `.git`, `.sqlifier`, `.venv`,
  `__pycache__` and `*.pyc`.

The service's `build` command (if any) runs in the new release's folder, with the
service's `env` plus `RELEASE`, `SERVICE` and `ENV` (never its secrets); it is split into
words like `run` and goes through `/bin/sh -c` only for `shell = true` services. A failed
build leaves nothing behind. The files are then made read-only and the release is moved
into place. On disk, under the environment's state folder (`.sqlifier/<env>/`):

    releases/<service>/<version>/        the release: the source folder's files, built
    releases/<service>/<version>.json    its record (Release.to_json); written last, so a
                                         release exists once its record and folder do
    releases/<service>/.lock             serializes changes to the service's releases

Versions are immutable: making one again with the same content returns it unchanged,
with other content is refused.

`sqlifier up` records what it starts as a release too (`Releases.start`): until a
service's first deploy, each `up` runs its source and records that source, made like a
deploy's release without `--version` but labelled `up-<commit or content hash>`, as the
live release — completed, so that after the first deploy it is `previous_stable`. The
same source again is the same release; a changed source (or config) is a new release, and
the one before it is kept, superseded. Once a deploy or a rollback has made a release
live, `up` runs that release and records nothing.

After each release the oldest are pruned down to `keep` per service; the live releases and
the one live before them (the rollback target) always stay.

The record is records.py's, the files sources.py's, the build build.py's.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlifier.delivery.build import run_build
from sqlifier.delivery.records import (
    VERSION,
    Release,
    ReleaseError,
    ReleaseStatus,
    config_hash,
    few,
    service_config,
    service_from_config,
)
from sqlifier.delivery.sources import content_hash, make_read_only, materialize, uncommitted
from sqlifier.stack.model import Service, Stack
from sqlifier.store.audit import current_user

__all__ = [
    "KEEP",
    "UP_REASON",
    "Release",
    "ReleaseError",
    "ReleaseStatus",
    "Releases",
    "content_hash",
    "follows_source",
    "releases_table",
    "service_config",
    "service_from_config",
]

KEEP = 5  # releases kept per service by default
UP_REASON = "started by sqlifier up"  # the reason recorded with a release `up` made
UP_PREFIX = "up-"  # before the version of a release `up` made: up-5b8e0f2a1c3d
_SERVICE = re.compile(r"^[a-z][a-z0-9-]{0,62}\Z")


class Releases:
    """The releases of one environment, in `state_dir/releases/`."""

    def __init__(
        self,
        state_dir: Path,
        env: str,
        keep: int = KEEP,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, not {keep}")
        self.root = (state_dir / "releases").absolute()  # git runs elsewhere
        self.env = env
        self.keep = keep
        self._clock = clock

    def make(
        self,
        stack: Stack,
        service: str,
        version: str | None = None,
        ref: str | None = None,
        who: str | None = None,
        reason: str = "",
        build_timeout: float = 600.0,
        *,
        prefix: str = "",
    ) -> Release:
        """Make (materialize, build, record) a release of `service`, or return the one
        already made with this version and the same content.

        From git: `ref` (default HEAD) — or `version`, when it names a tag, a branch or a
        commit; the version is then that name, else the tag named by `ref`, else the first
        12 digits of the commit. From a directory: a snapshot labelled `version`, default
        its content hash. `prefix` goes before a default version (`up-` for `up`'s).
        """
        spec = _service(stack, self.env, service)
        if version is not None:
            _check_version(service, version)
        folder = self._folder(service)
        folder.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".making-", suffix=".tmp", dir=folder))
        try:
            work.chmod(0o700)
            origin = materialize(spec, version, ref, work, self.root, _secret_files(stack, spec))
            content = content_hash(work)
            config = service_config(spec)
            named = version is not None
            version = version or prefix + (origin.version or content)
            _check_version(service, version)
            existing = self._existing(service, version, content, config, named)
            if existing is None and not named and self._read(service, version) is not None:
                # The same files with another config (the stack file changed): a release
                # of its own, labelled with its config's hash.
                version = f"{version}+{config_hash(config)}"
                existing = self._existing(service, version, content, config, named)
            if existing is not None:
                return existing
            output = run_build(spec, self.env, version, work, build_timeout)
            make_read_only(work)
            release = Release(
                service=service,
                env=self.env,
                version=version,
                path=folder / version,
                commit=origin.commit,
                commit_time=origin.commit_time,
                ref=origin.ref,
                content_hash=content,
                config=config,
                created=self._clock(),
                created_by=who or current_user(),
                reason=reason,
                status=ReleaseStatus.BUILT,
                built=spec.build is not None,
                build_output=output,
            )
            return self._install(release, work)
        finally:
            if work.exists():
                shutil.rmtree(work)

    def start(self, stack: Stack, service: str, who: str | None = None) -> tuple[Release, str]:
        """The release `sqlifier up` runs for `service`, and what `up` did about it:

        - "kept": a deploy or a rollback made it live; `up` runs it as it is;
        - "unchanged": the live release is the one an earlier `up` recorded of this source
          and config;
        - "new": the source (or its config) was recorded as a release, now live and
          completed (a rollback's `previous_stable` after the next deploy); the release
          live before it, if any, is superseded and kept.

        Its version is the default a deploy would give, after `up-`: a deploy of the same
        source makes a release of its own, so the first deploy is never refused as the
        release already live.

        ReleaseError when the source cannot be made into a release (see `make`).
        """
        live = self.live(service)
        if live is not None and not follows_source(live):
            return live, "kept"
        made = self.make(stack, service, who=who, reason=UP_REASON, prefix=UP_PREFIX)
        if live is not None and made.version == live.version:
            return live, "unchanged"
        started = self.mark(
            service,
            made.version,
            ReleaseStatus.LIVE,
            started_by="up",
            completed_at=self._clock(),
        )
        if live is not None:
            self.mark(service, live.version, ReleaseStatus.SUPERSEDED)
        return started, "new"

    def uncommitted(self, stack: Stack, service: str) -> builtins.list[str]:
        """The files of `service`'s source, in a git work tree, that are not committed:
        they run with `up` (which runs the source folder) but are in no release."""
        return uncommitted(_service(stack, self.env, service).source)

    def live(self, service: str) -> Release | None:
        """The live release of `service`, or None before anything ran as a release."""
        return next((r for r in self.list(service) if r.status is ReleaseStatus.LIVE), None)

    def list(self, service: str) -> list[Release]:
        """The releases of `service`, newest first."""
        folder = self._folder(service)
        if not folder.is_dir():
            return []
        found = []
        for record in folder.glob("*.json"):
            if not VERSION.match(record.stem):
                continue
            release = self._read(service, record.stem)
            if release is not None:
                found.append(release)
        return sorted(found, key=lambda r: (r.created, r.version), reverse=True)

    def get(self, service: str, version: str) -> Release:
        """The release `version` of `service`; ReleaseError naming the known versions."""
        release = self._read(service, version) if VERSION.match(version) else None
        if release is None:
            known = [r.version for r in self.list(service)]
            where = f"releases: {few(known)}" if known else f"{service} has no releases yet"
            raise ReleaseError(
                f"no release {version} of {service} in {self.env}; {where}",
                service=service,
                version=version,
            )
        return release

    def mark(self, service: str, version: str, status: str, **details: Any) -> Release:
        """Set the release's status (and merge `details` into its details); the record is
        rewritten atomically. Becoming live sets `live_at`."""
        try:
            new_status = ReleaseStatus(status)
        except ValueError:
            valid = ", ".join(repr(str(s)) for s in ReleaseStatus)
            raise ReleaseError(
                f"cannot mark release {version} of {service} {status!r}: the statuses are {valid}",
                service=service,
                version=version,
            ) from None
        with self._locked(service):
            release = self.get(service, version)
            live_at = self._clock() if new_status is ReleaseStatus.LIVE else release.live_at
            updated = replace(
                release,
                status=new_status,
                live_at=live_at,
                details={**release.details, **details},
            )
            self._write(updated)
        return updated

    def prune(self, service: str) -> builtins.list[str]:
        """Remove all but the newest `keep` releases of `service`, the live ones and the
        one live before them; the versions removed."""
        with self._locked(service):
            return self._prune(service)

    # --- records --------------------------------------------------------------------------

    def _folder(self, service: str) -> Path:
        if not _SERVICE.match(service):
            raise ReleaseError(
                f"{service!r} is not a service name (lower-case letters, digits and '-', "
                "starting with a letter)",
                service=service,
            )
        return self.root / service

    def _install(self, release: Release, work: Path) -> Release:
        """Move the built folder into place and record it; the release made meanwhile by
        someone else, if any."""
        with self._locked(release.service):
            existing = self._existing(
                release.service, release.version, release.content_hash, release.config
            )
            if existing is not None:
                return existing
            if release.path.exists():  # a folder whose record was never written
                shutil.rmtree(release.path)
            work.rename(release.path)
            self._write(release)
            self._prune(release.service)
        return release

    def _prune(self, service: str) -> builtins.list[str]:
        releases = self.list(service)
        live = {r.version for r in releases if r.status is ReleaseStatus.LIVE}
        earlier = [r for r in releases if r.version not in live and r.live_at is not None]
        if earlier:
            live.add(max(earlier, key=lambda r: r.live_at or 0.0).version)
        removed = []
        for release in releases[self.keep :]:
            if release.version not in live:
                (self.root / service / f"{release.version}.json").unlink()
                shutil.rmtree(release.path)
                removed.append(release.version)
        return removed

    def _existing(
        self,
        service: str,
        version: str,
        content: str,
        config: dict[str, Any] | None = None,
        named: bool = True,
    ) -> Release | None:
        """The release `version` when it has this content (and config); None when there
        is none, or (for a version not named by the caller) when its config differs;
        ReleaseError when a named version exists with other content or config."""
        release = self._read(service, version)
        if release is None:
            return None
        same_config = config is None or release.config == config
        if release.content_hash == content and same_config:
            return release
        if release.content_hash == content and not named:
            return None
        what = "content" if release.content_hash != content else "config (the stack file changed)"
        raise ReleaseError(
            f"release {version} of {service} already exists with other {what}; "
            "releases are immutable — choose another --version",
            service=service,
            version=version,
        )

    def _read(self, service: str, version: str) -> Release | None:
        """The recorded release, or None when its record or its folder is missing."""
        record = self._folder(service) / f"{version}.json"
        path = self._folder(service) / version
        try:
            data = json.loads(record.read_text())
            release = Release.from_json(data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ReleaseError(
                f"the record of release {version} of {service} ({record}) is unreadable: "
                f"{exc}; remove it and its folder to make the release again",
                service=service,
                version=version,
            ) from None
        return replace(release, path=path) if path.is_dir() else None

    def _write(self, release: Release) -> None:
        text = json.dumps(release.to_json(), indent=2) + "\n"  # fails before anything changes
        record = self.root / release.service / f"{release.version}.json"
        temporary = record.with_name(f".{record.name}.tmp")
        with temporary.open("w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, record)

    @contextlib.contextmanager
    def _locked(self, service: str) -> Iterator[None]:
        folder = self._folder(service)
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield


def follows_source(release: Release) -> bool:
    """Was `release` recorded by `sqlifier up`, with no deploy or rollback making it live
    since? Then `up` runs the service's source, and records it again when it changed."""
    return release.details.get("started_by") == "up" and "deploy_id" not in release.details


def _service(stack: Stack, env: str, name: str) -> Service:
    services = stack.services_for(env)
    if name not in services:
        known = ", ".join(services) or "none"
        raise ReleaseError(f"no service {name!r} in {stack.path}; services: {known}", service=name)
    return services[name]


def _check_version(service: str, version: str) -> None:
    if not VERSION.match(version):
        raise ReleaseError(
            f"release version {version!r} of {service} is not valid: use letters, digits, "
            "'.', '_', '+' and '-', starting with a letter or digit (at most 128 characters)",
            service=service,
            version=version,
        )


# --- listing ----------------------------------------------------------------------------

_COLUMNS = ("VERSION", "STATUS", "CREATED", "BY", "COMMIT", "BUILT", "REASON")


def releases_table(records: Iterable[Release]) -> str:
    """The releases as a text table (a header line, then one line each)."""
    cells = [list(_COLUMNS)]
    for release in records:
        created = dt.datetime.fromtimestamp(release.created, dt.UTC)
        cells.append(
            [
                release.version,
                str(release.status),
                created.strftime("%Y-%m-%d %H:%M:%SZ"),
                release.created_by,
                release.commit[:12] if release.commit else "-",
                "yes" if release.built else "-",
                release.reason or "-",
            ]
        )
    widths = [max(len(row[i]) for row in cells) for i in range(len(_COLUMNS) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in cells
    )


def _secret_files(stack: Stack, spec: Service) -> frozenset[Path]:
    """The files the service's `file://` secrets read (relative to the stack folder): a
    folder's snapshot leaves them out."""
    return frozenset(
        (stack.root / secret.ref.removeprefix("file://")).resolve()
        for secret in spec.secrets.values()
        if secret.ref.startswith("file://")
    )
