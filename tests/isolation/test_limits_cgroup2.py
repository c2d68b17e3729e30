"""cgroup v2, as far as it can be checked here: this machine mounts v2 without the memory
and cpu controllers (its limits are v1's, tested on the real kernel in test_limits.py), so
a folder laid out like a v2 hierarchy stands in for one. It checks what sqlifier writes
there — controllers delegated down to the stack's folder, `memory.max`, `cpu.max`, the OOM
kill count read from `memory.events` — not what the kernel does with it."""

from __future__ import annotations

from pathlib import Path

from sqlifier.runtime import cgroups
from sqlifier.runtime.cgroups import Cgroups
from sqlifier.stack.model import Resources


def hierarchy(tmp_path: Path, controllers: str) -> Path:
    root = tmp_path / "cgroup2"
    root.mkdir()
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text("")
    info = tmp_path / "mountinfo"
    info.write_text(f"30 23 0:27 / {root} rw,relatime shared:4 - cgroup2 cgroup2 rw\n")
    return info


def test_v2_with_memory_and_cpu_is_chosen_and_limits_are_written(tmp_path: Path) -> None:
    info = hierarchy(tmp_path, "cpuset cpu io memory pids")
    found = Cgroups.detect(tmp_path / "state", mountinfo=info)
    assert (found.version, found.unavailable) == (2, None)
    parent = found.parents["unified"]
    assert parent.parent.name == "sqlifier" and parent.parent.parent == tmp_path / "cgroup2"
    assert (tmp_path / "cgroup2" / "cgroup.subtree_control").read_text() == "+memory +cpu"

    group = found.create("web-0_4000", Resources(cpu=0.5, memory=256 << 20))
    folder = parent / "web-0_4000"
    assert (folder / "memory.max").read_text() == str(256 << 20)
    assert (folder / "memory.swap.max").read_text() == "0"
    assert (folder / "cpu.max").read_text() == "50000 100000"
    assert not group.oom_killed()
    (folder / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert group.oom_killed()
    (folder / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\n")
    assert group.cpu_seconds() == 2.5


def test_v2_without_the_controllers_falls_back_and_says_why(tmp_path: Path) -> None:
    info = hierarchy(tmp_path, "hugetlb")
    found = Cgroups.detect(tmp_path / "state", mountinfo=info)
    assert found.version is None
    assert (
        found.unavailable
        == f"cgroup v2 at {tmp_path / 'cgroup2'} has no memory and cpu controllers"
    )


def test_the_mount_table_is_read_for_both_versions(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
        "35 31 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
        "44 31 0:39 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
        "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n"
    )
    mounts = cgroups._mounts(info)
    assert [(m.path, m.name) for m in mounts["cgroup"]] == [
        (Path("/sys/fs/cgroup/cpu,cpuacct"), "cpu,cpuacct"),
        (Path("/sys/fs/cgroup/memory"), "memory"),
    ]
    assert [m.path for m in mounts["cgroup2"]] == [Path("/sys/fs/cgroup/unified")]
