"""scripts/k8s-build.sh: once the binaries are in the cache, it builds nothing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts/k8s-build.sh"


def stub(folder: Path, name: str, body: str) -> None:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def run(cache: Path, stubs: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Stubs first on PATH: apt-get fails loudly, so a build that starts shows.
    env = {**os.environ, "SQLIFIER_K8S_CACHE": str(cache), "PATH": f"{stubs}:{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, check=False
    )


def test_a_second_run_with_the_cache_in_place_builds_nothing(tmp_path: Path) -> None:
    cache, stubs = tmp_path / "cache", tmp_path / "stubs"
    (cache / "bin").mkdir(parents=True)
    for name in ("etcd", "kube-apiserver", "kube-controller-manager"):
        stub(cache / "bin", name, "exit 0")
    (cache / "bin/BUILT").write_text("1.20.2\n")
    stub(stubs, "apt-get", "echo apt-get was called >&2; exit 99")
    done = run(cache, stubs)
    assert (done.returncode, done.stderr) == (0, "")
    assert (
        done.stdout
        == f"k8s-build: kube-apiserver, kube-controller-manager and etcd are in {cache}/bin\n"
    )
    assert run(cache, stubs, "--check").returncode == 0


def test_check_names_the_packages_a_build_needs(tmp_path: Path) -> None:
    stubs = tmp_path / "stubs"
    stub(stubs, "dpkg-query", "exit 1")  # nothing installed
    done = run(tmp_path / "cache", stubs, "--check")
    assert done.returncode == 4
    assert done.stdout == (
        "missing distribution packages: golang-go rsync dpkg-dev "
        "golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev\n"
    )


def test_check_says_buildable_when_the_packages_are_there(tmp_path: Path) -> None:
    stubs = tmp_path / "stubs"
    stub(stubs, "dpkg-query", "echo 'install ok installed'")
    assert run(tmp_path / "cache", stubs, "--check").returncode == 3
