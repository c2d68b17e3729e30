"""The agent's files beside its state, read by the CLI without importing the agent.

    .sqlifier/<env>/agent.sock        the API (0600), every request with the token
    .sqlifier/<env>/token             the token (0600)
    .sqlifier/<env>/agent.json        pid and start time of the agent; its phase; its error
    .sqlifier/<env>/audit.db          who did what (SQLite)
    .sqlifier/<env>/deploys/<id>.json a deploy's or rollback's record, rewritten on change

Only the standard library is imported here, so `ps`, `check` and `logs` start quickly.

Everything under `.sqlifier/` is its owner's only: files 0600 (0700 when executable),
folders 0700. The agent and what it starts (the data plane, instances, builds) run with
umask 077, so what they create is private from the start; what an older version or another
umask left open is closed when the stack starts (`keep_private`).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path
from typing import Any

__all__ = [
    "PRIVATE_UMASK",
    "agent_files",
    "disk_line",
    "keep_private",
    "read_info",
    "read_json",
    "read_run",
    "write_json",
]

PRIVATE_UMASK = 0o077


def agent_files(state_dir: Path) -> dict[str, Path]:
    return {
        "socket": state_dir / "agent.sock",
        "token": state_dir / "token",
        "info": state_dir / "agent.json",
        "audit": state_dir / "audit.db",
    }


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object written by the agent, or None when missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_info(state_dir: Path) -> dict[str, Any] | None:
    """The agent's last written state (`agent.json`), or None."""
    return read_json(agent_files(state_dir)["info"])


def read_run(state_dir: Path, deploy_id: str) -> dict[str, Any] | None:
    """A deploy's last written record, or None."""
    if not deploy_id.replace("-", "").isalnum():
        return None
    return read_json(state_dir / "deploys" / f"{deploy_id}.json")


def keep_private(root: Path) -> int:
    """From now on this process (and every process it starts) creates files its owner's
    only; and every file and folder under `root` (a stack's `.sqlifier/`) already there
    loses its group and other permissions. Symbolic links are left alone (they have no
    mode of their own), and so are files of another owner. The number of files changed."""
    os.umask(PRIVATE_UMASK)
    changed = 0
    if not root.is_dir():
        return 0
    for folder, folders, files in os.walk(root):
        for name in [".", *folders, *files]:
            path = os.path.join(folder, name)
            try:
                info = os.lstat(path)
                if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid():
                    continue
                if info.st_mode & 0o077:
                    os.chmod(path, stat.S_IMODE(info.st_mode) & 0o700)
                    changed += 1
            except OSError:
                continue  # gone meanwhile, or not ours to change
    return changed


def write_json(path: Path, data: Any) -> str | None:
    """Replace `path` with `data` as JSON, atomically (a new file renamed over it). A write
    that fails (a full disk) leaves the old file whole and is returned as a message, never
    raised: the agent's record may lag, its controls must not stop."""
    temporary = path.with_suffix(".tmp")
    try:
        temporary.write_text(json.dumps(data, indent=2))
        temporary.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink()
        return f"cannot write {path.name}: {exc.strerror or exc}"
    return None


def disk_line(state_dir: Path, disk: dict[str, Any]) -> str:
    """What `ps` says about the disk holding the state (`disk` from the agent's status):
    nothing while it has room, else a line naming it, what it cost, and what to do."""
    problems = list(disk.get("problems") or [])
    if not disk.get("low") and not problems:
        return ""
    try:
        shown = state_dir.relative_to(Path.cwd())
    except ValueError:
        shown = state_dir
    free = disk.get("free")
    room = "unknown" if free is None else _size(int(free))
    cost = f": {'; '.join(problems)}" if problems else ""
    return (
        f"\ndisk: the filesystem of {shown} is (nearly) full, {room} free{cost}. "
        "Instance log lines are dropped first; free some space and they are written again\n"
    )


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    if count < 1024 * 1024:
        return f"{count / 1024:.1f} KiB"
    return f"{count / 1024 / 1024:.1f} MiB"
