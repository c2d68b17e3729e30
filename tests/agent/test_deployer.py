"""The deployer with real processes, on its own clock: a service without a canary (no
route, so no data plane is needed) is deployed by replacing its instances; a deploy
awaiting approval expires when the deployer's clock says so; an agent that starts closes
the runs a previous one left and takes up again the deploys it left awaiting approval.

The canary paths need the data plane's counters: tests/cli/test_deploy.py runs them end
to end, and tests/delivery/test_rollout_timelines.py runs every path of the machine."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlifier.agent.deployer import Deployer
from sqlifier.agent.files import read_run
from sqlifier.delivery.locks import read_lock
from sqlifier.delivery.releases import Releases, ReleaseStatus
from sqlifier.platform.local import LocalPlatform
from sqlifier.platform.traffic import Traffic
from sqlifier.runtime.supervisor import Supervisor
from sqlifier.stack import load_stack
from sqlifier.store.audit import AuditLog
from tests.apps import APP
from tests.cli.test_deploy import make_shop, paused_rollout, service, wait_for
from tests.conftest import BIN
from tests.load import Load

__all__ = ["make_shop"]  # the fixture, shared with tests/cli/test_deploy.py

STACK = """\
[stack]
name = "t"

[environments.production]
approval = "required"
approvers = ["alice", "bob"]
two_person = true

[services.worker]
run = "{python} app.py"
instances = 2
probes.readiness = {{ http = "/", period = "100ms" }}
"""


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


Body = Callable[[Deployer, Clock], Awaitable[None]]


def run(root: Path, env: str, body: Body, before: Callable[[Path], None] | None = None) -> None:
    (root / "app.py").write_text(APP)
    (root / "sqlifier.toml").write_text(STACK.format(python=sys.executable))
    stack, _ = load_stack(root / "sqlifier.toml")
    state = root / ".sqlifier" / env
    Releases(state, env).make(stack, "worker", version="v2")
    if before is not None:
        before(state)
    clock = Clock()

    async def main() -> None:
        supervisor = Supervisor(stack, env, state)
        platform = LocalPlatform(supervisor, Traffic(stack, env, state, supervisor), 20.0)
        deployer = Deployer(stack, env, state, platform, AuditLog(state / "audit.db"), clock=clock)
        deployer.load_live()
        try:
            await supervisor.start(ready_timeout=20)
            deployer.resume_requests()
            await body(deployer, clock)
        finally:
            await deployer.stop()
            await supervisor.stop()

    asyncio.run(main())


async def ended(deployer: Deployer, deploy_id: str) -> dict[str, object]:
    await asyncio.wait_for(deployer.runs[deploy_id].ended.wait(), 30)
    record = deployer.status(deploy_id)
    assert record is not None
    return record


def audited(deployer: Deployer) -> list[tuple[str, str, str]]:
    return [(e.who, e.what, e.result) for e in deployer.audit.entries()]


def test_a_service_without_a_canary_is_deployed_by_replacing_its_instances(
    tmp_path: Path,
) -> None:
    async def body(deployer: Deployer, clock: Clock) -> None:
        ok, reply = await deployer.deploy({"service": "worker", "version": "v2"}, "alice")
        assert ok, reply
        record = await ended(deployer, str(reply["id"]))
        assert (record["state"], record["done"], record["succeeded"]) == ("complete", True, True)
        lines = [text for _, text in record["lines"]]  # type: ignore[attr-defined]
        assert lines == [
            "deploy of v2 started by alice",
            "no canary for this service: replacing instances one at a time",
            "complete",
        ]
        assert {i.release for i in deployer.platform.instances("worker")} == {"v2"}
        assert deployer.releases.get("worker", "v2").status is ReleaseStatus.LIVE
        whats = [what for _, what, _ in audited(deployer)]
        assert whats == ["deploy start", "rollout complete"]
        assert read_run(deployer.state_dir, str(reply["id"])) == record
        assert read_lock(deployer.state_dir, "dev", "worker") is None

    run(tmp_path, "dev", body)


def test_a_deploy_awaiting_approval_expires_on_the_deployers_clock(tmp_path: Path) -> None:
    async def body(deployer: Deployer, clock: Clock) -> None:
        asked = {"service": "worker", "version": "v2", "approval_timeout": 60}
        ok, reply = await deployer.deploy(asked, "eve")
        assert ok, reply
        assert (reply["state"], reply["approval_expires"]) == ("awaiting approval", 1060.0)
        run = deployer.runs[str(reply["id"])]
        clock.now = 1059.0
        run.wake.set()
        await asyncio.sleep(0)  # the run looks at the clock: not yet
        assert run.state == "awaiting approval"
        clock.now = 1060.0
        run.wake.set()
        record = await ended(deployer, run.id)
        assert (record["state"], record["error"]) == ("expired", "no approver approved it in time")
        assert ("agent", "deploy", "expired") in audited(deployer)
        assert read_lock(deployer.state_dir, "production", "worker") is None

    run(tmp_path, "production", body)


def left_behind(state: Path, *records: dict[str, object]) -> None:
    """Records of a previous agent that died."""
    folder = state / "deploys"
    folder.mkdir(parents=True)
    for record in records:
        (folder / f"{record['id']}.json").write_text(json.dumps(record))


COMMON = {"kind": "deploy", "service": "worker", "env": "production", "version": "v2"}
WAITING = {
    **COMMON,
    "id": "d2",
    "who": "eve",
    "created": 950.0,
    "state": "awaiting approval",
    "approval_expires": 4550.0,
    "lines": [[950.0, "production requires approval"]],
}
REPLACING = {**COMMON, "id": "d1", "who": "alice", "created": 900.0, "state": "replacing"}


def test_an_agent_that_starts_takes_up_a_deploy_it_left_held_for_resume(tmp_path: Path) -> None:
    async def body(deployer: Deployer, clock: Clock) -> None:
        held = deployer.runs["d1"]
        assert (held.state, held.machine.error) == ("paused", None)  # never failed
        assert "the agent restarted while replacing instances" in str(held.machine.paused_by)
        assert {i.release for i in deployer.platform.instances("worker")} == {"current"}
        lock = read_lock(deployer.state_dir, "production", "worker")
        assert lock is not None and (lock.user, lock.version) == ("alice", "v2")
        assert deployer.releases.get("worker", "v2").status is ReleaseStatus.BUILT
        ok, said = deployer.control("worker", "resume", "bob")
        assert ok, said
        record = await ended(deployer, "d1")
        assert (record["state"], record["succeeded"]) == ("complete", True)
        assert {i.release for i in deployer.platform.instances("worker")} == {"v2"}
        assert read_lock(deployer.state_dir, "production", "worker") is None

    run(tmp_path, "production", body, lambda state: left_behind(state, REPLACING))


def test_an_agent_that_starts_resumes_a_request_left_awaiting_approval(tmp_path: Path) -> None:
    async def body(deployer: Deployer, clock: Clock) -> None:
        waiting = deployer.runs["d2"]
        assert waiting.state == "awaiting approval"
        assert [text for _, text in waiting.lines] == [
            "production requires approval",
            "the agent restarted: still awaiting approval",
        ]
        lock = read_lock(deployer.state_dir, "production", "worker")
        assert lock is not None and lock.user == "eve"
        ok, reply = await deployer.approve({"id": "d2"}, "alice")
        assert ok, reply
        assert reply["state"] == "approved"
        record = await ended(deployer, "d2")
        assert record["state"] == "complete"
        assert record["approved_by"] == ["alice"]

    def before(state: Path) -> None:
        left_behind(state, WAITING)

    run(tmp_path, "production", body, before)


def test_a_rollback_asked_for_while_a_deploy_replaces_instances_rolls_back_after_it(
    tmp_path: Path,
) -> None:
    # Too late to abort (every instance is being replaced): the rollback waits for the
    # deploy to end, then rolls back from the release it made live. It never answers ok
    # without rolling back.
    async def body(deployer: Deployer, clock: Clock) -> None:
        deployer.releases.make(deployer.stack, "worker", version="v1")
        ok, first = await deployer.deploy({"service": "worker", "version": "v1"}, "alice")
        assert ok, first
        assert (await ended(deployer, str(first["id"])))["state"] == "complete"
        ok, second = await deployer.deploy({"service": "worker", "version": "v2"}, "alice")
        assert ok, second
        assert second["state"] == "replacing"
        ok, back = await deployer.rollback({"service": "worker", "reason": "bad"}, "bob")
        assert ok, back
        assert (back["kind"], back["version"], back["from_version"]) == ("rollback", "v1", "v2")
        assert (await ended(deployer, str(back["id"])))["state"] == "rolled back"
        assert {i.release for i in deployer.platform.instances("worker")} == {"v1"}

    run(tmp_path, "dev", body)


def test_a_deploy_that_has_ended_holds_no_lock_against_the_next_one(make_shop: Any) -> None:
    # Real agent, router and load. An aborted rollout of v2 would stop its canary only
    # after its bake (5 minutes), holding the lock until then: the fix, v3, is deployed
    # at once all the same, the canary of v2 stopped as it is asked for.
    shop = make_shop()
    shop.set("storefront")
    assert shop.run("up", "--detach").returncode == 0
    with Load(shop.port, "/storefront"):
        assert shop.run("deploy", "-s", "storefront", "--version", "v1", "--yes").returncode == 0
        bad = service("storefront", env='ERROR_RATE = "1"').replace('bake = "1s"', 'bake = "5m"')
        shop.services["storefront"] = bad
        shop.write()
        aborted = shop.run("deploy", "-s", "storefront", "--version", "v2", "--yes")
        assert aborted.returncode == 1, aborted.stdout + aborted.stderr
        assert "stopping the canary in 300s" in aborted.stdout
        shop.set("storefront")
        fixed = shop.run("deploy", "-s", "storefront", "--version", "v3", "--yes")
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        assert "— complete" in fixed.stdout
    assert shop.releases("storefront")["v3"]["status"] == "live"


def test_a_deploy_whose_client_went_away_while_waiting_for_the_lock_is_withdrawn(
    make_shop: Any,
) -> None:
    # The rollout of v1 holds the lock (paused); a deploy of v2 waits for it, and its
    # CLI is interrupted meanwhile: the request is withdrawn (audited), and when the lock
    # is free at last, nothing starts.
    shop, record = paused_rollout(make_shop)

    def audit() -> list[dict[str, Any]]:
        return list(json.loads(shop.run("audit", "--json").stdout))

    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    argv = ["deploy", "-s", "storefront", "--version", "v2", "--yes", "--lock-wait", "10m"]
    with subprocess.Popen(
        [str(BIN / "sqlifier"), *argv], cwd=shop.root, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as second:  # fmt: skip
        target = "shop/dev/storefront v2"
        waiting = f"waiting up to 600s: locked by {record()['who']}"
        wait_for(
            lambda: any(e["target"] == target and e["result"].startswith(waiting) for e in audit()),
            "the request to wait for the lock",
        )
        second.send_signal(signal.SIGINT)  # Ctrl-C
        second.wait(30)
    withdrawn = "withdrawn: its client went away while it waited for the lock: nothing was done"
    wait_for(
        lambda: any((e["target"], e["result"]) == (target, withdrawn) for e in audit()),
        "the withdrawal",
    )
    assert shop.run("rollout", "abort", "storefront").returncode == 0
    state = shop.root / ".sqlifier" / "dev"
    wait_for(lambda: read_lock(state, "dev", "storefront") is None, "the lock to be free")
    started = [e["target"] for e in audit() if e["what"] == "deploy start"]
    assert started == ["shop/dev/storefront v1"], started
    assert read_lock(state, "dev", "storefront") is None


def stale_lock(state: Path, user: str, version: str) -> None:
    """A lock of worker taken by a process that has ended (as a killed agent leaves it)."""
    code = (
        "import os\nfrom pathlib import Path\nfrom sqlifier.delivery.locks import ServiceLock\n"
        f"ServiceLock(Path({str(state)!r}), {state.name!r}, 'worker', 'deploy', {user!r}, "
        f"{version!r}, '').acquire()\nos._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_an_agent_that_starts_closes_a_rollout_that_was_aborting_as_aborted(
    tmp_path: Path,
) -> None:
    # Killed while moving the traffic back from an abort: the canaries are not adopted (all
    # traffic is on stable), the deploy ends aborted, and the lock it left is released.
    async def body(deployer: Deployer, clock: Clock) -> None:
        record = deployer.status("d3")
        assert record is not None and record["state"] == "aborted"
        assert record["error"] == (
            "aborted by bob; the agent restarted while moving traffic back: all traffic is "
            "on stable"
        )
        assert deployer.releases.get("worker", "v2").status is ReleaseStatus.FAILED
        assert ("agent", "rollout abort", "ok") in audited(deployer)
        assert read_lock(deployer.state_dir, "dev", "worker") is None

    aborting = {
        **COMMON, "env": "dev", "id": "d3", "who": "alice", "created": 900.0,
        "state": "aborting", "error": "aborted by bob",
    }  # fmt: skip

    def before(state: Path) -> None:
        left_behind(state, aborting)
        stale_lock(state, "alice", "v2")

    run(tmp_path, "dev", body, before)


def test_an_agent_that_starts_closes_a_deploy_whose_release_went_live_as_complete(
    tmp_path: Path,
) -> None:
    # Killed after the promotion made v2 live, before the record said so: complete, and
    # v2 runs.
    async def body(deployer: Deployer, clock: Clock) -> None:
        record = deployer.status("d4")
        assert record is not None
        assert (record["state"], record["done"], record["succeeded"]) == ("complete", True, True)
        assert "d4" not in deployer.runs
        assert {i.release for i in deployer.platform.instances("worker")} == {"v2"}
        assert read_lock(deployer.state_dir, "dev", "worker") is None

    promoting = {
        **COMMON, "env": "dev", "id": "d4", "who": "alice", "created": 900.0,
        "state": "promoting",
    }  # fmt: skip

    def before(state: Path) -> None:
        Releases(state, "dev").mark("worker", "v2", ReleaseStatus.LIVE)
        left_behind(state, promoting)
        stale_lock(state, "alice", "v2")

    run(tmp_path, "dev", body, before)
