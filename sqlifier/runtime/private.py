"""A private folder outside the stack's `.sqlifier/` for what must never be written under
it: instances' raw output (before secrets are masked) and secret files.

In memory when the machine allows (`/dev/shm`, a tmpfs), else `$XDG_RUNTIME_DIR`, else
`/tmp/sqlifier-<uid>`; a folder per state directory (by a hash of its path), 0700, owned by
this user. The same state directory always gets the same folder, so an agent that follows
a dead one finds its instances' output where they still write it.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from sqlifier.errors import UserError

__all__ = ["private_dir"]


def _base() -> Path:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        return shm / f"sqlifier-{os.getuid()}"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "sqlifier"
    return Path(f"/tmp/sqlifier-{os.getuid()}")


def _own(folder: Path) -> Path:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise UserError(f"{folder} is not a private folder of this user's; remove it and retry")
    # Others may keep the search bit (`o+x`) a service's account needs to reach its own
    # files below (runtime/users.py): nothing here is listable or readable by them.
    if info.st_mode & 0o076:
        folder.chmod(0o700 | (info.st_mode & 0o001))
    return folder


def private_dir(state_dir: Path, *parts: str) -> Path:
    """The private folder of a state directory (and a subfolder of it), created 0700."""
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:16]
    folder = _own(_own(_base()) / digest)
    for part in parts:
        folder = _own(folder / part)
    return folder
