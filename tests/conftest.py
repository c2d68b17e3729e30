"""Shared fixtures: running the real `sqlifier` executable, and writing small stacks."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# The Kubernetes test cluster's fixtures (cluster, namespace, gateway_api), for any test.
pytest_plugins = ["tests.k8s.fixtures"]

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent


# Tests that share one thing run on one worker when the suite runs on several
# (scripts/test.sh: pytest-xdist, --dist loadgroup), in the order they were collected:
# the Kubernetes control plane (one per worker would cost a start each), the kernel's
# network namespaces, bridges and nftables tables, and the browser.
_SHARED = (
    ("k8s", lambda item: "cluster" in getattr(item, "fixturenames", ())),
    ("kernel-network", lambda item: "tests/isolation/" in item.path.as_posix()),
    ("browser", lambda item: "browser" in getattr(item, "fixturenames", ())),
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for group, shares in _SHARED:
            if shares(item):
                item.add_marker(pytest.mark.xdist_group(group))
                break


def run_sqlifier(
    *args: str, cwd: Path | None = None, command: str = "sqlifier", stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed console script as a user would, in its own process."""
    env = {k: v for k, v in os.environ.items() if k != "SQLIFIER_DEBUG"}
    return subprocess.run(
        [str(BIN / command), *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture
def sqlifier() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_sqlifier


STACK = """\
[stack]
name = "test"

[services.web]
run = "python3 app.py"

[services.api]
run = "python3 api.py"

[services.payment-gateway]
run = "python3 pay.py"

[services.image-processor-svc]
run = "python3 images.py"
"""


@pytest.fixture
def stack_dir(tmp_path: Path) -> Path:
    """A folder with a sqlifier.toml (services web, api, payment-gateway,
    image-processor-svc) and an empty rules/ folder."""
    (tmp_path / "sqlifier.toml").write_text(STACK)
    (tmp_path / "rules").mkdir()
    return tmp_path
