"""Limits per instance through the kernel's control groups: `resources = { cpu, memory }`.

Each instance with limits runs in a cgroup of its own, `sqlifier/<stack>/<instance id>`
under the hierarchy's root (the stack's part is a digest of its state folder, so two
stacks never share one). The process joins it between fork and exec, so nothing it
does runs outside its limits.

cgroup v2 is used where its hierarchy has the memory and cpu controllers (most current
hosts: `memory.max`, `cpu.max`, `memory.events`'s `oom_kill`); cgroup v1 otherwise, with
the memory and cpu controllers' own hierarchies (`memory.limit_in_bytes`, and the same
for memory+swap so that a limit is not swapped around; `cpu.cfs_quota_us` over a 100 ms
period; `memory.oom_control`'s `oom_kill`), and the cpuacct one, where mounted apart,
for the CPU time used. Where neither can be written (no root, a read-only mount), limits
are not enforced, and `Cgroups.unavailable` says why: the agent says it once, as it
starts.

An instance killed by the kernel for its memory is known by its cgroup's OOM kill count
having grown (`oom_killed`). A cgroup is removed when its instance's processes are all
gone; one whose instance a new agent adopts is kept, with the process in it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlifier.stack.model import Resources

__all__ = ["CPU_PERIOD", "Cgroups", "InstanceGroup", "format_bytes"]

CPU_PERIOD = 100_000  # microseconds: the quota is counted over 100 ms
_MOUNTINFO = Path("/proc/self/mountinfo")


@dataclass
class InstanceGroup:
    """One instance's cgroup: a folder per hierarchy (one with v2)."""

    version: int
    folders: list[Path]  # the first holds the memory controller's files
    cpu_folder: Path | None = None  # where the CPU time used is counted
    oom_at_start: int = 0

    def join(self, pid: int = 0) -> None:
        """Put `pid` (0: the calling process) in the cgroup; OSError when refused."""
        text = str(pid or os.getpid())
        for folder in self.folders:
            (folder / "cgroup.procs").write_text(text)

    def oom_kills(self) -> int:
        """How many processes the kernel killed in it for memory, so far."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        return _field(self.folders[0] / name, "oom_kill")

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process in it for memory since it was made."""
        return self.oom_kills() > self.oom_at_start

    def cpu_seconds(self) -> float | None:
        """The CPU time its processes used, from the kernel's accounting."""
        if self.cpu_folder is None:
            return None
        with contextlib.suppress(OSError, ValueError):
            if self.version == 2:
                return _field(self.cpu_folder / "cpu.stat", "usage_usec") / 1e6
            return int((self.cpu_folder / "cpuacct.usage").read_text()) / 1e9
        return None

    def memory_bytes(self) -> int | None:
        name = "memory.current" if self.version == 2 else "memory.usage_in_bytes"
        with contextlib.suppress(OSError, ValueError):
            return int((self.folders[0] / name).read_text())
        return None

    def kill(self) -> None:
        """SIGKILL every process still in it (one that left its process group)."""
        with contextlib.suppress(OSError, ValueError):
            for pid in (self.folders[0] / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(pid), signal.SIGKILL)

    def remove(self) -> bool:
        """Remove it (it must be empty: its processes gone); False while it is not."""
        done = True
        for folder in {*self.folders, *([self.cpu_folder] if self.cpu_folder else [])}:
            try:
                folder.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                done = False
        return done


@dataclass
class Cgroups:
    """Where this agent's instances' cgroups go, or why there are none (`unavailable`)."""

    version: int | None
    parents: dict[str, Path] = field(default_factory=dict)  # controller -> the stack's folder
    unavailable: str | None = None

    @classmethod
    def detect(cls, state_dir: Path, mountinfo: Path | None = None) -> Cgroups:
        """The usable hierarchy for a stack whose state is in `state_dir`: v2 with memory
        and cpu controllers, else v1's, else none (and why)."""
        key = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
        mounts = _mounts(mountinfo or _MOUNTINFO)
        problems = []
        for mount in mounts.get("cgroup2", []):
            found = _v2(mount, key)
            if isinstance(found, Cgroups):
                return found
            problems.append(found)
        v1 = {c: m.path for m in mounts.get("cgroup", []) for c in m.name.split(",") if c}
        if "memory" in v1 and "cpu" in v1:
            parents: dict[str, Path] = {}
            try:
                for controller in ("memory", "cpu", "cpuacct"):
                    if controller in v1:
                        parents[controller] = _make(v1[controller] / "sqlifier" / key)
                return cls(1, parents)
            except OSError as exc:
                where = f" at {exc.filename}" if exc.filename else ""
                problems.append(f"cgroup v1{where}: {exc.strerror or exc}")
        elif not problems:
            problems.append("no cgroup hierarchy with the memory and cpu controllers is mounted")
        return cls(None, unavailable="; ".join(problems))

    def create(self, instance_id: str, resources: Resources) -> InstanceGroup:
        """A fresh cgroup for an instance, its limits set (OSError when refused)."""
        if self.version == 2:
            folder = self.parents["unified"] / instance_id
            _fresh(folder)
            if resources.memory is not None:
                (folder / "memory.max").write_text(str(resources.memory))
                with contextlib.suppress(OSError):
                    (folder / "memory.swap.max").write_text("0")
            if resources.cpu is not None:
                quota = max(1000, round(resources.cpu * CPU_PERIOD))
                (folder / "cpu.max").write_text(f"{quota} {CPU_PERIOD}")
            group = InstanceGroup(2, [folder], folder)
        else:
            memory = _fresh(self.parents["memory"] / instance_id)
            cpu = _fresh(self.parents["cpu"] / instance_id)
            folders = [memory, cpu]
            accounting = cpu if (cpu / "cpuacct.usage").exists() else None
            if accounting is None and "cpuacct" in self.parents:
                accounting = _fresh(self.parents["cpuacct"] / instance_id)
                folders.append(accounting)
            if resources.memory is not None:
                (memory / "memory.limit_in_bytes").write_text(str(resources.memory))
                with contextlib.suppress(OSError):  # without swap accounting, none to set
                    (memory / "memory.memsw.limit_in_bytes").write_text(str(resources.memory))
            if resources.cpu is not None:
                (cpu / "cpu.cfs_period_us").write_text(str(CPU_PERIOD))
                quota = max(1000, round(resources.cpu * CPU_PERIOD))
                (cpu / "cpu.cfs_quota_us").write_text(str(quota))
            group = InstanceGroup(1, folders, accounting)
        group.oom_at_start = group.oom_kills()
        return group

    def existing(self, instance_id: str) -> InstanceGroup | None:
        """The cgroup an earlier agent made for an instance it adopts, if it is there."""
        if self.version == 2:
            folder = self.parents["unified"] / instance_id
            return InstanceGroup(2, [folder], folder) if folder.is_dir() else None
        if self.version != 1 or not (self.parents["memory"] / instance_id).is_dir():
            return None
        memory, cpu = self.parents["memory"] / instance_id, self.parents["cpu"] / instance_id
        folders = [memory, cpu]
        accounting: Path | None = cpu
        if not (cpu / "cpuacct.usage").exists():
            accounting = None
            if "cpuacct" in self.parents:
                accounting = self.parents["cpuacct"] / instance_id
                folders.append(accounting)
        group = InstanceGroup(1, folders, accounting)
        group.oom_at_start = group.oom_kills()
        return group

    def remove_all(self, keep: Iterable[str] = ()) -> None:
        """Remove the stack's empty cgroups (all but `keep`), and its folder once empty."""
        kept = set(keep)
        for parent in set(self.parents.values()):
            with contextlib.suppress(OSError):
                for child in parent.iterdir():
                    if child.is_dir() and child.name not in kept:
                        with contextlib.suppress(OSError):
                            child.rmdir()
            with contextlib.suppress(OSError):
                parent.rmdir()


def format_bytes(size: int) -> str:
    """256Mi, 1Gi, 1.5Gi: the way a limit is written in the stack file."""
    for unit, scale in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.4g}{unit}"
    return f"{size}B"


@dataclass(frozen=True)
class _Mount:
    path: Path
    name: str  # v1: its controllers, comma separated; v2: ""


def _mounts(mountinfo: Path) -> dict[str, list[_Mount]]:
    """cgroup and cgroup2 mounts, from /proc/self/mountinfo."""
    found: dict[str, list[_Mount]] = {}
    with contextlib.suppress(OSError):
        for line in mountinfo.read_text().splitlines():
            before, _, after = line.partition(" - ")
            fields, rest = before.split(), after.split()
            if len(fields) < 5 or len(rest) < 3 or rest[0] not in ("cgroup", "cgroup2"):
                continue
            options = rest[2].split(",") if rest[0] == "cgroup" else []
            controllers = [o for o in options if o in ("memory", "cpu", "cpuacct")]
            found.setdefault(rest[0], []).append(_Mount(Path(fields[4]), ",".join(controllers)))
    return found


def _v2(mount: _Mount, key: str) -> Cgroups | str:
    """The v2 hierarchy at `mount` made ready (controllers delegated down to the stack's
    folder), or why it cannot be used."""
    try:
        controllers = (mount.path / "cgroup.controllers").read_text().split()
    except OSError as exc:
        return f"cgroup v2 at {mount.path}: {exc.strerror or exc}"
    if not {"memory", "cpu"} <= set(controllers):
        return f"cgroup v2 at {mount.path} has no memory and cpu controllers"
    try:
        folder = mount.path
        for part in ("sqlifier", key):
            _delegate(folder)
            folder = _make(folder / part)
        _delegate(folder)
    except OSError as exc:
        return f"cgroup v2 at {mount.path}: {exc.strerror or exc}"
    return Cgroups(2, {"unified": folder})


def _delegate(folder: Path) -> None:
    """Let `folder`'s children use the memory and cpu controllers."""
    control = folder / "cgroup.subtree_control"
    enabled = control.read_text().split() if control.exists() else []
    wanted = [f"+{c}" for c in ("memory", "cpu") if c not in enabled]
    if wanted:
        control.write_text(" ".join(wanted))


def _make(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if not os.access(folder, os.W_OK):
        raise PermissionError(13, f"{folder} is not writable")
    return folder


def _fresh(folder: Path) -> Path:
    """An empty cgroup at `folder`: one an earlier run of the instance left is removed
    first (its counters would count that run's OOM kills)."""
    with contextlib.suppress(OSError):
        folder.rmdir()
    folder.mkdir(exist_ok=True)
    return folder


def _field(path: Path, name: str) -> int:
    """`name`'s value in a flat-keyed cgroup file (`oom_kill 2`); 0 when absent."""
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == name:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0
