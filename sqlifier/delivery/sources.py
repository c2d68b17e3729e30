"""A release's files: materialized from the service's `source` into a new folder, hashed,
made read-only.

Inside a git work tree the files are the source folder as of a commit (`git archive`), so
only committed files count; git runs with the variables that would point it at another
repository removed. Any other folder is copied, without `.git`, `.sqlifier`, `.venv`,
`__pycache__` and `*.pyc`. `content_hash` names the files before the build.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlifier.delivery.records import VERSION, ReleaseError, few
from sqlifier.stack.model import Service

__all__ = ["Origin", "content_hash", "make_read_only", "materialize", "uncommitted"]

_SKIPPED = {".git", ".sqlifier", ".venv", "__pycache__"}
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
class Origin:
    """Where the materialized files came from."""

    version: str | None  # the label it implies; None: the content hash
    commit: str | None = None
    commit_time: float | None = None
    ref: str | None = None


def materialize(
    spec: Service,
    version: str | None,
    ref: str | None,
    dest: Path,
    skip: Path,
    secret_files: frozenset[Path] = frozenset(),
) -> Origin:
    """Put the release's files in `dest`; where they came from. A folder's copy leaves out
    `secret_files` (the files `file://` secrets read: a value never lands in a release)."""
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
        _copy_tree(source, dest, skip.resolve(), secret_files)
        return Origin(version)
    top, prefix = work_tree
    return _from_git(spec.name, top, prefix, version, ref, dest)


def uncommitted(source: Path) -> list[str]:
    """The files under `source` that differ from its git work tree's HEAD (changed,
    added, removed or untracked, ignored ones left out), relative to `source`; none
    outside a work tree (or without git)."""
    try:
        found = _git(source, "status", "--porcelain", "-z", "--untracked-files=all", "--", ".")
    except FileNotFoundError:
        return []
    if found.returncode != 0:
        return []
    top = _git(source, "rev-parse", "--show-toplevel").stdout.strip()
    here = source.resolve()
    names = []
    entries = iter(found.stdout.split("\0"))
    for entry in entries:
        if len(entry) < 4:
            continue
        if entry[0] in "RC":  # a rename or copy: the origin follows, and is skipped
            next(entries, None)
        path = Path(top) / entry[3:]
        if _SKIPPED & set(path.parts):  # the state folder, caches: never part of a release
            continue
        path = path.resolve()
        names.append(path.relative_to(here).as_posix() if path.is_relative_to(here) else entry[3:])
    return sorted(names)


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
) -> Origin:
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
            f"no git ref {ref!r} in {top}; tags: {few(tags)}; "
            f"branches: {few(_refs(top, 'refs/heads'))}",
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
    label = named if is_tag and VERSION.match(named) else commit[:12]
    return Origin(label, commit, float(time_text), named)


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


def _copy_tree(
    source: Path, dest: Path, skip: Path, secret_files: frozenset[Path] = frozenset()
) -> None:
    def ignored(folder: str, names: list[str]) -> set[str]:
        here = Path(folder)
        return {
            name
            for name in names
            if name in _SKIPPED
            or name.endswith(".pyc")
            or (name == skip.name and (here / name).resolve() == skip)
            or (secret_files and (here / name).resolve() in secret_files)
        }

    shutil.copytree(source, dest, symlinks=True, ignore=ignored, dirs_exist_ok=True)


def make_read_only(root: Path) -> None:
    """chmod a-w every file, readable by its owner only (symlinks have no mode of their
    own). Folders stay writable by the owner, so runtimes can cache (`__pycache__`) and
    `rm -rf` works; like all of `.sqlifier/`, nothing is left to group or others."""
    for folder, _dirs, _names in os.walk(root):
        Path(folder).chmod(0o700)
    for path, _ in _files(root):
        if not path.is_symlink():
            path.chmod(path.stat().st_mode & 0o500)
