"""Running a service's instances as another account (`user = "app"`).

The process starts as the account: supplementary groups cleared first, then the
account's group, then its uid (in that order: once the uid is given up, the rest could no
longer be changed), by subprocess's own code in the child or, for an isolated instance,
by the `nsenter` that puts it in its namespace (`runtime/fence.py`). What
the instance must reach is handed over before it starts: its `DATA_DIR` (owned by the
account, recursively) and its secret files (owned by it, 0600, in a folder only it can
read). The folders above them keep their owner and gain only the search bit for others
(`o+x`): the account can walk through to its own files but list nothing on the way.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlifier.errors import UserError

__all__ = ["Account", "UserSwitchError", "account", "hand_over", "open_path"]


class UserSwitchError(UserError):
    """A service's `user` cannot be used here; the message names the service and why."""


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str


def account(name: str, service: str) -> Account:
    """The account `name`, checked usable by this agent; UserSwitchError otherwise."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise UserSwitchError(
            f"service {service}: no user {name!r} on this machine; create it "
            f"(useradd --system {name}) or change the service's user"
        ) from None
    if os.geteuid() != 0 and entry.pw_uid != os.geteuid():
        raise UserSwitchError(
            f"service {service}: running as user {name!r} needs the agent to run as root "
            f"(it runs as uid {os.geteuid()})"
        )
    return Account(name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


def hand_over(paths: Iterable[Path], who: Account) -> None:
    """Each path, and everything under a folder, owned by the account."""
    for path in paths:
        if not path.exists():
            continue
        os.chown(path, who.uid, who.gid, follow_symlinks=False)
        if path.is_dir() and not path.is_symlink():
            for folder, dirs, files in os.walk(path):
                for name in dirs + files:
                    os.chown(os.path.join(folder, name), who.uid, who.gid, follow_symlinks=False)


def open_path(path: Path, stop: Path = Path("/")) -> None:
    """The folders from `path`'s parent up to `stop` searchable by others (`o+x`), so an
    account that owns `path` can reach it; nothing becomes listable or readable."""
    folder = path.parent
    stop = stop.resolve()
    while True:
        mode = folder.stat().st_mode
        if not mode & 0o001:
            folder.chmod((mode & 0o7777) | 0o001)
        if folder in (stop, folder.parent):
            return
        folder = folder.parent
