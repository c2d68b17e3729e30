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
with other content is refused. After each release the oldest are pruned down to `keep`
per service; the live releases and the one live before them (the rollback target) always
stay.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import enum
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import IO, Any

from sqlifier.errors import UserError
from sqlifier.runtime.commands import OUTPUT_LIMIT
from sqlifier.stack.model import (
    Probe,
    ProbeKind,
    Probes,
    RestartPolicy,
    Rollout,
    Route,
    SecretRef,
    Service,
    Stack,
    Warmup,
)
from sqlifier.store.audit import current_user

__all__ = [
    "KEEP",
    "Release",
    "ReleaseError",
    "ReleaseStatus",
    "Releases",
    "content_hash",
    "releases_table",
    "service_config",
    "service_from_config",
]

KEEP = 5  # releases kept per service by default
_SERVICE = re.compile(r"^[a-z][a-z0-9-]{0,62}\Z")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}\Z")
_SKIPPED = {".git", ".sqlifier", ".venv", "__pycache__"}
_MESSAGE_LINES = 20  # of a failed build's output, in the error message
_KILL_AFTER = 2.0  # seconds between SIGTERM and SIGKILL for a build that timed out
# Variables that would point git at another repository than the source's.
_GIT_LOCATION = frozenset(
    {
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_COMMON_DIR",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_NAMESPACE",
    }
)


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
    rollout = dict(values.get("rollout", {}))
    for key in ("steps", "analysis"):
        if key in rollout:
            rollout[key] = tuple(rollout[key])
    values["rollout"] = Rollout(**rollout)
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


def _config_hash(config: Mapping[str, Any]) -> str:
    """The first 8 hex digits of sha256 over the config's canonical JSON."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def content_hash(root: Path) -> str:
    """sha256 over the sorted relative paths, each with its kind (file, executable,
    symlink) and its bytes or link target: the first 12 hex digits."""
    digest = hashlib.sha256()
    for path, relative in sorted(_files(root), key=lambda item: item[1]):
        digest.update(relative.encode() + b"\0")
        if path.is_symlink():
            digest.update(b"l" + os.readlink(path).encode() + b"\0")
            continue
        digest.update(b"x" if os.access(path, os.X_OK) else b"f")
        digest.update(path.stat().st_size.to_bytes(8, "big"))
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:12]


def _files(root: Path) -> Iterator[tuple[Path, str]]:
    """Every file and symlink under `root`, with its relative POSIX path."""
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        linked = [d for d in dirs if (here / d).is_symlink()]  # os.walk lists them as dirs
        for name in [*names, *linked]:
            path = here / name
            yield path, path.relative_to(root).as_posix()


@dataclass(frozen=True, slots=True)
class _Origin:
    """Where the materialized files came from."""

    version: str | None  # the label it implies; None: the content hash
    commit: str | None = None
    commit_time: float | None = None
    ref: str | None = None


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
    ) -> Release:
        """Make (materialize, build, record) a release of `service`, or return the one
        already made with this version and the same content.

        From git: `ref` (default HEAD) — or `version`, when it names a tag, a branch or a
        commit; the version is then that name, else the tag named by `ref`, else the first
        12 digits of the commit. From a directory: a snapshot labelled `version`, default
        its content hash.
        """
        spec = _service(stack, self.env, service)
        if version is not None:
            _check_version(service, version)
        folder = self._folder(service)
        folder.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".making-", suffix=".tmp", dir=folder))
        try:
            work.chmod(0o755)
            origin = _materialize(spec, version, ref, work, self.root)
            content = content_hash(work)
            config = service_config(spec)
            named = version is not None
            version = version or origin.version or content
            _check_version(service, version)
            existing = self._existing(service, version, content, config, named)
            if existing is None and not named and self._read(service, version) is not None:
                # The same files with another config (the stack file changed): a release
                # of its own, labelled with its config's hash.
                version = f"{version}+{_config_hash(config)}"
                existing = self._existing(service, version, content, config, named)
            if existing is not None:
                return existing
            output = _run_build(spec, self.env, version, work, build_timeout)
            _make_read_only(work)
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

    def list(self, service: str) -> list[Release]:
        """The releases of `service`, newest first."""
        folder = self._folder(service)
        if not folder.is_dir():
            return []
        found = []
        for record in folder.glob("*.json"):
            if not _VERSION.match(record.stem):
                continue
            release = self._read(service, record.stem)
            if release is not None:
                found.append(release)
        return sorted(found, key=lambda r: (r.created, r.version), reverse=True)

    def get(self, service: str, version: str) -> Release:
        """The release `version` of `service`; ReleaseError naming the known versions."""
        release = self._read(service, version) if _VERSION.match(version) else None
        if release is None:
            known = [r.version for r in self.list(service)]
            where = f"releases: {_few(known)}" if known else f"{service} has no releases yet"
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


def _service(stack: Stack, env: str, name: str) -> Service:
    services = stack.services_for(env)
    if name not in services:
        known = ", ".join(services) or "none"
        raise ReleaseError(f"no service {name!r} in {stack.path}; services: {known}", service=name)
    return services[name]


def _check_version(service: str, version: str) -> None:
    if not _VERSION.match(version):
        raise ReleaseError(
            f"release version {version!r} of {service} is not valid: use letters, digits, "
            "'.', '_', '+' and '-', starting with a letter or digit (at most 128 characters)",
            service=service,
            version=version,
        )


def _few(names: list[str], limit: int = 10) -> str:
    if not names:
        return "none"
    more = f", … ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# --- materializing ----------------------------------------------------------------------


def _materialize(
    spec: Service, version: str | None, ref: str | None, dest: Path, skip: Path
) -> _Origin:
    """Put the release's files in `dest`; where they came from."""
    source = spec.source
    if not source.is_dir():
        what = "is not a directory" if source.exists() else "does not exist"
        raise ReleaseError(
            f"the source of {spec.name}, {source}, {what}: set `source` to the service's "
            "folder or git repository",
            service=spec.name,
            version=version,
        )
    work_tree = _work_tree(spec.name, source)
    if work_tree is None:
        if ref is not None:
            raise ReleaseError(
                f"cannot release {spec.name} from git ref {ref!r}: its source {source} is "
                "not in a git repository; leave out the ref to snapshot the folder",
                service=spec.name,
                version=version,
            )
        _copy_tree(source, dest, skip.resolve())
        return _Origin(version)
    top, prefix = work_tree
    return _from_git(spec.name, top, prefix, version, ref, dest)


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in _GIT_LOCATION}
    env["LC_ALL"] = "C"  # messages in English: "not a git repository" is read below
    return subprocess.run(
        ["git", *args],
        cwd=repo,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        encoding="utf-8",
        errors="surrogateescape",
        check=False,
    )


def _work_tree(service: str, source: Path) -> tuple[Path, str] | None:
    """The work tree holding `source` and the source's folder inside it ("" at its top),
    or None outside any (or without git)."""
    try:
        found = _git(source, "rev-parse", "--show-toplevel", "--show-prefix")
    except FileNotFoundError:  # no git here: every source is a plain folder
        return None
    if found.returncode != 0:
        if "not a git repository" in found.stderr:
            return None
        raise ReleaseError(
            f"cannot read the git repository of {service}'s source {source}: "
            f"{found.stderr.strip()}",
            service=service,
        )
    lines = found.stdout.splitlines()
    return Path(lines[0]), (lines[1] if len(lines) > 1 else "").rstrip("/")


def _from_git(
    service: str, top: Path, prefix: str, version: str | None, ref: str | None, dest: Path
) -> _Origin:
    if ref is None and version is not None and _names_ref(top, version):
        ref = version
    named = ref or "HEAD"
    commit = _resolve(top, named)
    if commit is None:
        if ref is None:
            raise ReleaseError(
                f"cannot release {service}: the git repository {top} has no commit yet; "
                "commit the service's source first",
                service=service,
                version=version,
            )
        tags = _refs(top, "refs/tags")
        raise ReleaseError(
            f"no git ref {ref!r} in {top}; tags: {_few(tags)}; "
            f"branches: {_few(_refs(top, 'refs/heads'))}",
            service=service,
            version=version,
        )
    tree = f"{commit}:{prefix}"
    if _git(top, "cat-file", "-t", tree).stdout.strip() != "tree":
        raise ReleaseError(
            f"cannot release {service} from {named} ({commit[:12]}): its source folder "
            f"{prefix} is not in that commit of {top}",
            service=service,
            version=version,
        )
    archive = dest.with_suffix(".tar")
    try:
        made = _git(top, "archive", "--format=tar", f"--output={archive}", tree)
        if made.returncode != 0:
            raise ReleaseError(
                f"git archive of {named} in {top} failed: {made.stderr.strip()}",
                service=service,
                version=version,
            )
        with tarfile.open(archive) as files:
            files.extractall(dest, filter="tar")
    finally:
        archive.unlink(missing_ok=True)
    time_text = _git(top, "show", "-s", "--format=%ct", commit).stdout.strip()
    is_tag = _resolve(top, f"refs/tags/{named}") is not None
    label = named if is_tag and _VERSION.match(named) else commit[:12]
    return _Origin(label, commit, float(time_text), named)


def _resolve(top: Path, ref: str) -> str | None:
    if ref.startswith("-"):  # an option, not a ref
        return None
    found = _git(top, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    return found.stdout.strip() if found.returncode == 0 else None


def _names_ref(top: Path, version: str) -> bool:
    """Does `version` name a tag, a branch or a commit (7 hex digits or more)?"""
    if re.fullmatch(r"[0-9a-f]{7,40}", version) and _resolve(top, version):
        return True
    return any(_resolve(top, f"refs/{kind}/{version}") for kind in ("tags", "heads"))


def _refs(top: Path, prefix: str) -> list[str]:
    listed = _git(top, "for-each-ref", "--format=%(refname:short)", prefix)
    return listed.stdout.split()


def _copy_tree(source: Path, dest: Path, skip: Path) -> None:
    def ignored(folder: str, names: list[str]) -> set[str]:
        here = Path(folder)
        return {
            name
            for name in names
            if name in _SKIPPED
            or name.endswith(".pyc")
            or (name == skip.name and (here / name).resolve() == skip)
        }

    shutil.copytree(source, dest, symlinks=True, ignore=ignored, dirs_exist_ok=True)


def _make_read_only(root: Path) -> None:
    """chmod a-w every file (symlinks have no mode of their own). Folders stay writable,
    so runtimes can cache (`__pycache__`) and `rm -rf` works."""
    for path, _ in _files(root):
        if not path.is_symlink():
            path.chmod(path.stat().st_mode & ~0o222)


# --- building ---------------------------------------------------------------------------


def _run_build(spec: Service, env: str, version: str, cwd: Path, timeout: float) -> str:
    """Run the service's build in `cwd`: its output's tail, or ReleaseError."""
    if spec.build is None:
        return ""
    variables = {**os.environ, **spec.env, "RELEASE": version, "SERVICE": spec.name, "ENV": env}
    argv = ["/bin/sh", "-c", spec.build] if spec.shell else shlex.split(spec.build)
    with tempfile.TemporaryFile() as output:
        try:
            process = subprocess.Popen(
                argv,
                cwd=cwd,
                env=variables,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise ReleaseError(
                f"the build of release {version} of {spec.name} could not start: "
                f"{exc.strerror or exc}: {argv[0]}; nothing was kept",
                service=spec.name,
                version=version,
            ) from None
        code = _wait(process, timeout)
        text = _tail(output)
    if code == 0:
        return text
    failure = f"timed out after {timeout:g}s" if code is None else f"failed with exit code {code}"
    last = "\n".join(text.splitlines()[-_MESSAGE_LINES:])
    raise ReleaseError(
        f"the build of release {version} of {spec.name} ({spec.build}) {failure}; nothing "
        f"was kept. The end of its output:\n{last}",
        service=spec.name,
        version=version,
        output=text,
    )


def _wait(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    """The exit code, or None after a timeout; nothing the build started outlives it."""
    try:
        code: int | None = process.wait(timeout)
    except subprocess.TimeoutExpired:
        _signal_group(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(_KILL_AFTER)
        code = None
    finally:
        _signal_group(process.pid, signal.SIGKILL)
        process.wait()
    return code


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _tail(output: IO[bytes]) -> str:
    size = output.seek(0, os.SEEK_END)
    cut = max(0, size - OUTPUT_LIMIT)
    output.seek(cut)
    kept = output.read()
    if not cut:
        return kept.decode("utf-8", "replace")
    start = 0
    while start < min(len(kept), 3) and kept[start] & 0xC0 == 0x80:
        start += 1  # the rest of a character cut in two
    return f"[... {cut + start} bytes cut]\n" + kept[start:].decode("utf-8", "replace")


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
