"""The fenced example (examples/fenced): limits, network isolation and TLS in one
environment. `check` reads it clean; scripts/demo-isolation.sh runs it where the machine
allows (root, namespaces, nftables, cgroups) and shows a call by name through the bridge,
an egress denial fired on by a rule, and an OOM kill explained by ps and logs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from sqlifier.stack import load_stack
from sqlifier.stack.model import Isolation
from tests.conftest import run_sqlifier
from tests.isolation.nets import REASON
from tests.isolation.test_limits import UNUSABLE

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "fenced"


def test_the_example_fences_one_environment_and_leaves_dev_plain(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLE, tmp_path / "fenced")
    stack, _ = load_stack(tmp_path / "fenced" / "sqlifier.toml")
    fenced = stack.services_for("fenced")
    assert all(s.isolation is Isolation.NETWORK and s.resources for s in fenced.values())
    assert [str(e) for e in fenced["web"].egress] == ["orders"]
    assert stack.router_for("fenced").tls is not None
    dev = stack.services_for("dev")
    assert all(s.isolation is Isolation.NONE and s.resources is None for s in dev.values())
    assert stack.router_for("dev").tls is None
    checked = run_sqlifier("check", cwd=tmp_path / "fenced")
    assert checked.returncode == 0, checked.stderr
    if REASON is None:  # where it can isolate, not even a warning
        strict = run_sqlifier("check", "--strict", cwd=tmp_path / "fenced")
        assert strict.returncode == 0, strict.stderr


@pytest.mark.skipif(REASON is not None, reason=f"cannot isolate here: {REASON}")
@pytest.mark.skipif(UNUSABLE is not None, reason=f"no cgroups here: {UNUSABLE}")
def test_the_demo_shows_an_egress_denial_and_an_oom_kill() -> None:
    done = subprocess.run(
        [str(ROOT / "scripts" / "demo-isolation.sh")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    # A call by name reaches orders through the data plane on the bridge.
    assert "web-0 asked http://10." in out and '"by": "orders-0"' in out
    # The denied connection: refused at once, logged with its destination, fired on.
    assert "could not connect to 198.51.100.7:5432: Connection refused" in out
    assert "egress-denied: 1 connection(s) to 198.51.100.7:5432 denied by its egress" in out
    assert "fired NOTIFY web opened a connection its egress does not allow" in out
    # The OOM kill, in ps and in the service's log, and the instance back.
    assert "(OOM-killed once)" in out
    assert "web-0 was OOM-killed: its memory reached its limit of 64Mi (resources.memory)" in out
    assert out.rstrip().endswith("fenced (fenced) is down")
    assert out.count("web-0 asked http://10.") == 2
