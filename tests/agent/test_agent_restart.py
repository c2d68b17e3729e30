"""Nothing is lost when the agent dies: real agent, real processes, killed with SIGKILL.

The desired count of each service (and who set it) outlives the agent: the next `up`
adopts the instances and keeps the count, unless the stack file's `instances` changed or
the stack was stopped cleanly (`down`) in between. A rollout outlives it too: the next
agent adopts its canaries and goes on at its step, or (its canaries gone) moves all
traffic to stable and pauses for `rollout resume` or `rollout abort`."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.cli.test_deploy import all_from, make_shop, paused_rollout, wait_for
from tests.cli.test_rules_live import SHOP_SERVICE
from tests.cli.test_up import kill_agent, leftovers, make_stack, ps
from tests.conftest import BIN, run_sqlifier
from tests.load import Load

__all__ = ["make_shop"]  # the fixture, shared with tests/cli/test_deploy.py


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Path]:
    root = make_stack(tmp_path)
    yield root
    run_sqlifier("down", cwd=root)


def pids(root: Path) -> dict[str, object]:
    return {str(i["instance"]): i["pid"] for i in ps(root)}


def test_a_count_set_by_hand_survives_an_agent_killed_and_started_again(
    stack: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SQLIFIER_USER", "alice")
    assert run_sqlifier("up", "--detach", cwd=stack).returncode == 0
    scaled = run_sqlifier("scale", "web", "3", cwd=stack)
    assert scaled.returncode == 0, scaled.stderr
    before = pids(stack)
    assert sorted(before) == ["web-0", "web-1", "web-2"]
    kill_agent(stack)

    again = run_sqlifier("up", "--detach", cwd=stack)
    assert again.returncode == 0, again.stderr
    assert pids(stack) == before  # all three adopted: web-2 was not stopped
    rows = ps(stack)
    assert {row["count_set_by"] for row in rows} == {"cli:alice"}
    shown = run_sqlifier("ps", cwd=stack)
    assert "web: 3 instances wanted, set by cli:alice" in shown.stdout

    # Killed once more: still three, still set by alice.
    kill_agent(stack)
    assert run_sqlifier("up", "--detach", cwd=stack).returncode == 0
    assert pids(stack) == before


def test_an_edited_instances_or_a_clean_down_starts_from_the_stack_file(stack: Path) -> None:
    assert run_sqlifier("up", "--detach", cwd=stack).returncode == 0
    assert run_sqlifier("scale", "web", "3", cwd=stack).returncode == 0
    kill_agent(stack)
    # The stack file now says 1: the file decides, whatever was set before.
    make_stack(stack, instances=1)
    assert run_sqlifier("up", "--detach", cwd=stack).returncode == 0
    assert sorted(pids(stack)) == ["web-0"]
    assert {row["count_set_by"] for row in ps(stack)} == {"stack"}
    assert "instances wanted" not in run_sqlifier("ps", cwd=stack).stdout

    # Set by hand, then a clean down: the next up starts from the file.
    assert run_sqlifier("scale", "web", "2", cwd=stack).returncode == 0
    assert run_sqlifier("down", cwd=stack).returncode == 0
    assert leftovers(stack) == []
    assert run_sqlifier("up", "--detach", cwd=stack).returncode == 0
    assert sorted(pids(stack)) == ["web-0"]


def test_the_count_is_recorded_with_the_instances_for_the_next_agent(stack: Path) -> None:
    assert run_sqlifier("up", "--detach", cwd=stack).returncode == 0
    assert run_sqlifier("scale", "web", "3", cwd=stack).returncode == 0
    info = json.loads((stack / ".sqlifier" / "dev" / "agent.json").read_text())
    assert info["counts"]["web"]["count"] == 3
    assert info["counts"]["web"]["file"] == 2
    assert str(info["counts"]["web"]["by"]).startswith("cli:")


def canary_pids(shop: Any) -> set[int]:
    return {int(i["pid"]) for i in shop.instances() if i["track"] == "canary"}


def test_a_rollout_goes_on_at_its_step_with_its_canary_adopted(make_shop: Any) -> None:
    # The rollout of v1 is at its first step (10%), paused for want of traffic.
    shop, record = paused_rollout(make_shop)
    canaries = canary_pids(shop)
    assert len(canaries) == 1
    kill_agent(shop.root)

    again = shop.run("up", "--detach")
    assert again.returncode == 0, again.stderr
    adopted = "the agent restarted: 1 canary instance(s) adopted at step 1/3 (10%)"
    wait_for(lambda: any(adopted in text for _, text in record()["lines"]), "the adoption")

    def judged_since_adoption() -> bool:
        lines = [text for _, text in record()["lines"]]
        since = next(i for i, text in enumerate(lines) if adopted in text)
        return any("step 1 at 10%:" in text for text in lines[since:])

    # judging starts again from the adoption, and the run is still paused, as its record
    # said: the first verdict after the adoption holds it (the record read "paused" before
    # it, too: waiting for the state alone would not wait for the adopted run)
    wait_for(judged_since_adoption, "a verdict after the adoption")
    now = record()
    assert (now["state"], now["step"], now["weight"], now["error"]) == ("paused", 1, 10, None)
    assert canary_pids(shop) == canaries  # the same process, not started again

    with Load(shop.port, "/storefront") as load:
        resumed = shop.run("rollout", "resume", "storefront")
        assert resumed.returncode == 0, resumed.stderr
        wait_for(lambda: record()["state"] == "complete", "the rollout to complete", 60, record)
        all_from(load, "v1")
    assert shop.releases("storefront")["v1"]["status"] == "live"


def test_a_rollout_whose_canary_is_gone_moves_traffic_to_stable_and_pauses(
    make_shop: Any,
) -> None:
    shop, record = paused_rollout(make_shop)
    (canary,) = canary_pids(shop)
    kill_agent(shop.root)
    os.killpg(canary, signal.SIGKILL)
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(canary).wait(10)

    assert shop.run("up", "--detach").returncode == 0
    wait_for(lambda: "were gone" in str(record()["paused_by"]), "the pause")
    held = record()
    assert held["state"] == "paused" and held["weight"] == 0 and held["error"] is None
    # the stable release is the one `up` recorded (named up-<source hash>)
    assert re.match(
        r"the agent restarted and the canary instances of v1 were gone; all traffic is on "
        r"up-[0-9a-f]+: `sqlifier rollout resume storefront` goes on",
        held["paused_by"],
    ), held["paused_by"]
    assert shop.releases("storefront")["v1"]["status"] != "failed"
    with Load(shop.port, "/storefront") as load:
        stable = next(v for v, r in shop.releases("storefront").items() if r["status"] == "live")
        all_from(load, stable)  # nothing reaches a canary
        # Resumed: the canary starts again and the rollout goes on to the end.
        assert shop.run("rollout", "resume", "storefront").returncode == 0
        wait_for(lambda: record()["state"] == "complete", "the rollout to complete", 60, record)
    audit = json.loads(shop.run("audit", "--json").stdout)
    assert [e["what"] for e in audit].count("deploy start") == 1


def test_a_deploy_followed_as_its_agent_dies_says_it_goes_on_after_up(make_shop: Any) -> None:
    shop = make_shop()
    shop.set("storefront")
    assert shop.run("up", "--detach").returncode == 0
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    argv = [str(BIN / "sqlifier"), "deploy", "-s", "storefront", "--version", "v1", "--yes"]
    with subprocess.Popen(
        argv, cwd=shop.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as following:
        wait_for(lambda: bool(canary_pids(shop)), "the canary")
        kill_agent(shop.root)
        _, err = following.communicate(timeout=60)
    assert following.returncode == 1
    assert "sqlifier: error: the agent of dev stopped during deploy d" in err
    assert "after `sqlifier up --env dev` it goes on where it was" in err
    assert "Traceback" not in err


def test_a_count_a_rule_set_survives_an_agent_killed(tmp_path: Path) -> None:
    # A rule scales `burner` up under load; the agent is killed: the next one keeps the
    # capacity the rule added, and says the rule set it.
    shutil.copy(SHOP_SERVICE, tmp_path / "shop_service.py")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "hot.sql").write_text(
        "RULE hot\nON cpu() > 25% FOR 2s\nIF service.name = 'burner'\n"
        "DO SCALE service.name TO instances + 1\nLIMIT 2;\n"
    )
    (tmp_path / "sqlifier.toml").write_text(
        '[stack]\nname = "hot"\nrules = ["rules/*.sql"]\n\n[metrics]\nlisten = "off"\n\n'
        f'[services.burner]\nrun = "{sys.executable} shop_service.py burner"\n'
        'probes.readiness = { http = "/health/ready", period = "200ms" }\n'
    )
    try:
        assert run_sqlifier("up", "--detach", cwd=tmp_path).returncode == 0
        (tmp_path / "mode-burner").write_text("cpu")  # every instance burns a core
        wait_for(lambda: len(ps(tmp_path)) == 2, "the rule to add an instance", 60)
        (tmp_path / "mode-burner").unlink()
        before = pids(tmp_path)
        kill_agent(tmp_path)
        assert run_sqlifier("up", "--detach", cwd=tmp_path).returncode == 0
        assert pids(tmp_path) == before
        assert {row["count_set_by"] for row in ps(tmp_path)} == {"rule:hot"}
    finally:
        run_sqlifier("down", cwd=tmp_path)


DOWN = "the stack was stopped (sqlifier down) during the rollout"


def test_a_down_during_a_rollout_ends_it_aborted_and_the_release_not_failed(
    make_shop: Any,
) -> None:
    """A clean `down` is the user's choice, not a failure of the release: the rollout ends
    aborted with that reason, its release can be deployed again, and the next `up` runs
    the stable release with the rollout not taken up again."""
    shop, record = paused_rollout(make_shop)
    assert shop.run("down").returncode == 0
    ended = record()
    assert (ended["state"], ended["error"], ended["done"]) == ("aborted", DOWN, True)
    assert shop.releases("storefront")["v1"]["status"] == "built"  # not failed
    audit = json.loads(shop.run("audit", "--json").stdout)
    assert not [e for e in audit if e["what"] == "rollout abort"]  # no failed deployment
    ends = [(e["what"], e["target"], e["result"], e["why"]) for e in audit if e["why"] == DOWN]
    assert ends == [("deploy", "shop/dev/storefront v1", "aborted", DOWN)]

    assert shop.run("up", "--detach").returncode == 0
    assert record()["state"] == "aborted"
    assert canary_pids(shop) == set()
    stable = next(v for v, r in shop.releases("storefront").items() if r["status"] == "live")
    with Load(shop.port, "/storefront") as load:
        all_from(load, stable)
    again = shop.run("deploy", "-s", "storefront", "--version", "v1", "--yes", "--detach")
    assert again.returncode == 0, again.stderr  # the same release deploys again
