"""`sqlifier render` as a user runs it: the installed command, in its own process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import BIN, run_sqlifier
from tests.platform.render_stacks import SHOP
from tests.servers import free_port


def _shop(tmp_path: Path) -> Path:
    folder = tmp_path / "shop"
    shutil.copytree(SHOP.parent, folder, ignore=shutil.ignore_patterns(".sqlifier", "__pycache__"))
    return folder


def test_render_prints_one_yaml_stream(tmp_path: Path) -> None:
    result = run_sqlifier("render", "--env", "cluster", cwd=_shop(tmp_path))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("---\napiVersion: v1\nkind: ServiceAccount\n")
    objects = list(yaml.safe_load_all(result.stdout))
    assert len(objects) == 21
    assert objects[-1]["kind"] == "Deployment"


def test_render_writes_a_file_per_object(tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    result = run_sqlifier("--env", "cluster", "render", "-o", str(out), cwd=_shop(tmp_path))
    assert (result.returncode, result.stdout) == (0, "")
    assert result.stderr == f"wrote 21 manifests to {out}\n"
    names = sorted(p.name for p in out.iterdir())
    assert names[0] == "01-serviceaccount-sqlifier-agent.yaml"
    assert "09-statefulset-orders.yaml" in names
    assert (
        (out / names[0])
        .read_text()
        .startswith("# Rendered by sqlifier (sqlifier render --env cluster); edits are lost")
    )


def test_render_json_is_a_kubernetes_list(tmp_path: Path) -> None:
    result = run_sqlifier("render", "--env", "cluster", "--json", cwd=_shop(tmp_path))
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert (data["apiVersion"], data["kind"], len(data["items"])) == ("v1", "List", 21)


def test_render_of_a_local_environment_says_what_to_do(tmp_path: Path) -> None:
    result = run_sqlifier("render", "--env", "production", cwd=_shop(tmp_path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "sqlifier: error: environment production of sqlifier.toml runs on the local platform: "
        'only a Kubernetes environment has manifests; set platform = "kubernetes" and '
        'kubernetes = { namespace = "..." } in [environments.production]\n'
    )


def test_render_refuses_a_stack_check_refuses(tmp_path: Path) -> None:
    folder = _shop(tmp_path)
    path = folder / "sqlifier.toml"
    path.write_text(
        path.read_text().replace('image = "registry.example.com/shop/services"\n', "", 1)
    )
    # The error points at the service's table header: [services.storefront], column 11.
    lines = path.read_text().splitlines()
    line = lines.index("[services.storefront]") + 1
    result = run_sqlifier("render", "--env", "cluster", cwd=folder)
    assert result.returncode == 1
    assert result.stdout == ""
    expected = f"sqlifier.toml:{line}:11: error: service storefront has no image"
    assert expected in result.stderr


def test_render_names_a_missing_env_file(tmp_path: Path) -> None:
    folder = _shop(tmp_path)
    path = folder / "sqlifier.toml"
    path.write_text(
        path.read_text().replace(
            'platform = "kubernetes"', 'platform = "kubernetes"\nenv_file = "cluster.env"'
        )
    )
    result = run_sqlifier("render", "--env", "cluster", cwd=folder)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "sqlifier: error: cluster.env: env_file not found\n"


def test_the_shop_still_checks_clean(tmp_path: Path) -> None:
    result = run_sqlifier("check", cwd=_shop(tmp_path))
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_the_shop_with_its_kubernetes_environment_still_runs_locally(tmp_path: Path) -> None:
    folder = _shop(tmp_path)
    path = folder / "sqlifier.toml"
    text = path.read_text()
    own = f'\n[router]\nlisten = "127.0.0.1:{free_port()}"\n\n[metrics]\nlisten = "off"\n'
    path.write_text(
        text.replace("\n[environments.production]", own + "\n[environments.production]", 1)
    )
    # The shop's payment gateway migrates with Alembic: its python3 is this one.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "sqlifier"), *args], cwd=folder, env=env, capture_output=True,
            text=True, timeout=300, check=False,
        )  # fmt: skip

    try:
        up = run("up", "--detach")
        assert up.returncode == 0, up.stdout + up.stderr
        ps = run("ps", "--json")
        assert ps.returncode == 0, ps.stderr
        instances = json.loads(ps.stdout)
        assert len(instances) == 7
        assert all(i["state"] == "ready" for i in instances)
    finally:
        down = run("down")
    assert down.returncode == 0, down.stderr
