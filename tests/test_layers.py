"""The import contracts in pyproject.toml ([tool.importlinter]) are evaluated, and hold.

scripts/test.sh runs `lint-imports` on the package; these tests prove that the contracts
are read and fail on an outward import: each breaks one on purpose in a copy of the package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sqlifier

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A copy of the package and of pyproject.toml, to break on purpose."""
    package = Path(sqlifier.__file__).parent
    shutil.copytree(package, tmp_path / "sqlifier", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_package_keeps_every_contract() -> None:
    done = lint_imports(ROOT, ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 4 kept, 0 broken." in done.stdout


def test_a_copy_keeps_them_too(copy: Path) -> None:
    done = lint_imports(copy, copy)
    assert done.returncode == 0, done.stdout + done.stderr


def add_import(module: Path, line: str) -> None:
    module.write_text(module.read_text() + f"\n{line}  # noqa: E402\n")


def test_the_engine_importing_the_agent_breaks_the_layers(copy: Path) -> None:
    add_import(copy / "sqlifier/engine/wording.py", "from sqlifier.agent import files")
    done = lint_imports(copy, copy)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Layers: each package imports only the layers below it BROKEN" in done.stdout
    assert "sqlifier.engine.wording -> sqlifier.agent.files" in done.stdout


def test_the_stack_importing_delivery_breaks_the_layers(copy: Path) -> None:
    add_import(copy / "sqlifier/stack/reader.py", "from sqlifier.delivery import analysis")
    done = lint_imports(copy, copy)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "sqlifier.stack is not allowed to import sqlifier.delivery" in done.stdout


def test_the_language_importing_asyncio_breaks_the_pure_core(copy: Path) -> None:
    add_import(copy / "sqlifier/lang/units.py", "import asyncio")
    done = lint_imports(copy, copy)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "The pure core: engine and lang import no I/O" in done.stdout
    assert "sqlifier.lang is not allowed to import asyncio" in done.stdout


def test_the_rollout_reaching_the_platform_breaks_the_pure_rollout(copy: Path) -> None:
    add_import(copy / "sqlifier/delivery/rollout/judging.py", "from sqlifier import platform")
    done = lint_imports(copy, copy)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "The pure rollout: observations in, commands out, no I/O BROKEN" in done.stdout
    assert "sqlifier.delivery.rollout is not allowed to import sqlifier.platform" in done.stdout


def test_an_action_reaching_the_supervisor_breaks_the_platform_seam(copy: Path) -> None:
    add_import(copy / "sqlifier/agent/actions.py", "from sqlifier.runtime import supervisor")
    done = lint_imports(copy, copy)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "The platform seam: above it, only the composition root knows" in done.stdout
    assert "sqlifier.agent.actions -> sqlifier.runtime.supervisor" in done.stdout
