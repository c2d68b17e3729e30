"""`sqlifier deploy` (also `deploy-cli`), `deploy status`, `approve`, `rollback` and
`rollout abort|pause|resume`: push deploys with canaries, and honest rollbacks.

The release is made here (materialized and built: nothing running changes), the plan is
shown, and once confirmed the running agent carries the deploy out: approval, lock,
migrations, canary steps, promotion (agent/deployer.py). This command then follows it
live until it ends, unless `--detach`.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from sqlifier.agent.client import AgentClient, AgentNotRunning, agent_alive
from sqlifier.agent.files import read_run
from sqlifier.cli.options import (
    ENV,
    JSON,
    LOCK_WAIT,
    STACK_FILE,
    check_reason,
    complete_services,
    duration,
    json_option,
    reason_option,
    release_version_option,
)
from sqlifier.cli.releases import audit_plans
from sqlifier.cli.workspace import Context, load_context
from sqlifier.delivery.budget import read_budget
from sqlifier.delivery.plan import plan_service
from sqlifier.delivery.releases import Releases, ReleaseStatus
from sqlifier.errors import UserError
from sqlifier.store.audit import current_user

__all__ = ["approve", "group", "rollback", "rollout"]

POLL = 0.25  # seconds between looks at a deploy being followed
_FINAL_JSON = json_option("Print the final record as JSON.")


@click.group(
    "deploy",
    invoke_without_command=True,
    subcommand_metavar="[status DEPLOY_ID]",
    context_settings={"ignore_unknown_options": False},
)
@click.option("--service", "-s", shell_complete=complete_services, help="The service to deploy.")
@ENV
@STACK_FILE
@release_version_option(
    "The version: a git tag, branch or commit, or a label "
    "for a plain folder (default: the source's current commit or content)."
)  # fmt: skip
@click.option("--approve", is_flag=True, help="Approve the deploy (you must be an approver).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--fix", is_flag=True, help="This release fixes the service (see docs/slo.md).")
@reason_option("Why: recorded with the release and in the audit log.")
@LOCK_WAIT
@click.option("--detach", is_flag=True, help="Return the deploy id at once; see deploy status.")
@_FINAL_JSON
@click.pass_context
def group(
    ctx: click.Context,
    service: str | None,
    env: str | None,
    stack_file: str | None,
    version: str | None,
    approve: bool,
    yes: bool,
    fix: bool,
    reason: str,
    lock_wait: str | None,
    detach: bool,
    as_json: bool,
) -> int:
    """Deploy a new release of a service: make the release, show the plan, then roll it
    out as a canary judged on real traffic (1% → 10% → 50% → 100% by default)."""
    if ctx.invoked_subcommand is not None:
        return 0
    if service is None:
        raise UserError(f"deploy needs --service SERVICE (or: {ctx.command_path} status ID)")
    check_reason(reason)
    context = load_context(stack_file, env)
    services = context.stack.services_for(context.env)
    if service not in services:
        raise UserError(f"unknown service {service!r}; services: {', '.join(services)}")
    client = _client(context)
    who = current_user()
    wait = _wait(lock_wait)  # a bad --lock-wait is refused before a release is made
    # With --detach or --json, stdout carries only the id or the record (for scripts).
    say = (lambda text: click.echo(text, err=True)) if as_json or detach else click.echo
    say(f"making the release of {service} from {services[service].source} ...")
    store = Releases(context.state_dir, context.env, context.stack.keep_releases)
    release = store.make(context.stack, service, version=version, who=who, reason=reason)
    say(f"release {release.version} ({release.content_hash}) is ready")
    live = next((r for r in store.list(service) if r.status is ReleaseStatus.LIVE), None)
    budget = read_budget(context.stack, context.env, context.state_dir, service, time.time())
    plan = plan_service(
        context.stack, context.env, service, live, release.version, release.commit, budget
    )
    say("\n".join(plan.lines()))
    audit_plans(context.state_dir, context.stack.name, [plan])
    if plan.problems:
        raise UserError(f"the deploy of {service} {release.version} cannot go ahead (see above)")
    if not (yes or approve):
        if not sys.stdin.isatty():
            raise UserError(
                "not a terminal, so there is no one to confirm: pass --yes (or --approve) "
                "to deploy without asking"
            )
        click.confirm(f"deploy {release.version} of {service} to {context.env}?", abort=True)
    body = {
        "service": service,
        "version": release.version,
        "reason": reason,
        "approve": approve,
        "lock_wait": wait,
        **({"fix": True} if fix else {}),
    }
    answer = client.request("POST", "/v1/deploy", body)
    if not answer.get("ok"):
        raise UserError(f"deploy of {service} {release.version} refused: {answer.get('error')}")
    deploy_id = str(answer["id"])
    if detach:
        click.echo(json.dumps(answer, indent=2) if as_json else deploy_id)
        if not as_json:
            say(f"follow it with: sqlifier deploy status {deploy_id} --env {context.env}")
        return 0
    return _follow(client, context, deploy_id, as_json)


@group.command("status")
@click.argument("deploy_id")
@ENV
@STACK_FILE
@JSON
def status(deploy_id: str, env: str | None, stack_file: str | None, as_json: bool) -> int:
    """A deploy's or rollback's state, steps and verdicts (running or finished)."""
    context = load_context(stack_file, env)
    record = None
    if agent_alive(context.state_dir):
        answer = _client(context).request("POST", "/v1/deploy/status", {"id": deploy_id})
        record = answer if answer.get("ok") else None
    record = record or read_run(context.state_dir, deploy_id)
    if record is None:
        raise UserError(f"no deploy {deploy_id!r} in {context.env}")
    if as_json:
        click.echo(json.dumps(record, indent=2))
    else:
        click.echo(_headline(record))
        for when, text in record.get("lines", []):
            click.echo(f"  {_clock(when)}  {text}")
    return 0


@click.command("approve")
@click.argument("deploy_id")
@ENV
@STACK_FILE
def approve(deploy_id: str, env: str | None, stack_file: str | None) -> int:
    """Approve a deploy awaiting approval (two_person environments)."""
    context = load_context(stack_file, env)
    answer = _client(context).request("POST", "/v1/deploy/approve", {"id": deploy_id})
    if not answer.get("ok"):
        raise UserError(f"approval of {deploy_id} refused: {answer.get('error')}")
    click.echo(f"approved {deploy_id}: {answer['service']} {answer['version']} goes ahead")
    return 0


@click.command("rollback")
@click.option(
    "--service",
    "-s",
    required=True,
    shell_complete=complete_services,
    help="The service to roll back.",
)
@ENV
@STACK_FILE
@click.option(
    "--to", "to", help="A version, or previous (live before this one) or previous_stable "
    "(default: the last release that completed a rollout and was not rolled back from)."
)  # fmt: skip
@click.option("--approve", is_flag=True, help="Approve it (environments that need approval).")
@click.option(
    "--force", is_flag=True, help="Roll back even across a schema revision the target "
    "release did not run against (audited)."
)  # fmt: skip
@reason_option()
@LOCK_WAIT
@click.option("--detach", is_flag=True, help="Return at once; see deploy status ID.")
@_FINAL_JSON
def rollback(
    service: str,
    env: str | None,
    stack_file: str | None,
    to: str | None,
    approve: bool,
    force: bool,
    reason: str,
    lock_wait: str | None,
    detach: bool,
    as_json: bool,
) -> int:
    """Put a service back on an earlier release, traffic first, refusing to cross a schema
    migration the earlier release cannot run on."""
    check_reason(reason)
    context = load_context(stack_file, env)
    client = _client(context)
    body = {
        "service": service,
        "to": to or "previous_stable",
        "approve": approve,
        "force": force,
        "reason": reason,
        "lock_wait": _wait(lock_wait),
    }
    answer = client.request("POST", "/v1/rollback", body)
    if not answer.get("ok"):
        raise UserError(f"rollback of {service} refused: {answer.get('error')}")
    if answer["kind"] == "deploy":  # a rollout was in progress: the rollback is its abort
        if answer.get("restored_at") is None:
            raise UserError(f"the rollout {answer['id']} did not stop: {_headline(answer)}")
        click.echo(
            f"the rollout of {answer['version']} ({answer['id']}) was in progress: aborted, "
            f"all traffic is back on {answer['from_version']}"
        )
        return 0
    if detach:
        click.echo(answer["id"])
        return 0
    return _follow(client, context, str(answer["id"]), as_json)


@click.command("rollout")
@click.argument("action", type=click.Choice(["abort", "pause", "resume"]))
@click.argument("service", shell_complete=complete_services)
@ENV
@STACK_FILE
@reason_option()
def rollout(action: str, service: str, env: str | None, stack_file: str | None, reason: str) -> int:
    """Abort, pause or resume the rollout of SERVICE in progress."""
    check_reason(reason)
    context = load_context(stack_file, env)
    body = {"service": service, "action": action, "reason": reason}
    answer = _client(context).request("POST", "/v1/rollout", body)
    if not answer.get("ok"):
        raise UserError(str(answer.get("error")))
    click.echo(answer["message"])
    return 0


# --- following a deploy ---------------------------------------------------------------------


def _wait(text: str | None) -> float:
    return duration(text, "--lock-wait", "30s or 5m") if text else 0.0


def _client(context: Context) -> AgentClient:
    if not agent_alive(context.state_dir):
        raise UserError(
            f"nothing is running for {context.stack.name} in {context.env}: deploys go to a "
            f"running stack (start it with sqlifier up --env {context.env})"
        )
    return AgentClient(context.state_dir, context.env)


def _follow(client: AgentClient, context: Context, deploy_id: str, as_json: bool) -> int:
    """Print a deploy's progress until it ends; its exit code (0 complete, 1 otherwise)."""
    shown = 0
    terminal = sys.stdout.isatty() and not as_json
    record: dict[str, Any] = {}
    try:
        while True:
            record = client.request("POST", "/v1/deploy/status", {"id": deploy_id})
            lines = record.get("lines", [])
            if terminal and shown < len(lines):
                click.echo("\r\x1b[K", nl=False)
            for when, text in lines[shown:]:
                line = f"{_clock(when)}  {text}"
                click.echo(line, err=as_json)
            shown = len(lines)
            if record.get("done"):
                break
            if terminal:
                click.echo(f"\r\x1b[K{_bar(record)}", nl=False)
            time.sleep(POLL)
    except KeyboardInterrupt:
        click.echo(
            f"\nstopped following; the {record.get('kind', 'deploy')} goes on: "
            f"sqlifier deploy status {deploy_id} --env {context.env}",
            err=True,
        )
        return 130
    except AgentNotRunning:
        left = read_run(context.state_dir, deploy_id)
        if left is None or not left.get("done"):  # killed: the next agent takes it up
            raise UserError(
                f"the agent of {context.env} stopped during {record.get('kind', 'deploy')} "
                f"{deploy_id}; after `sqlifier up --env {context.env}` it goes on where it "
                f"was (sqlifier deploy status {deploy_id} --env {context.env})"
            ) from None
        record = left  # ended as the agent stopped (sqlifier down)
    if terminal:
        click.echo("\r\x1b[K", nl=False)
    if as_json:
        click.echo(json.dumps(record, indent=2))
    else:
        click.echo(_headline(record))
    return 0 if record.get("succeeded") else 1


def _bar(record: dict[str, Any]) -> str:
    weight = float(record.get("weight") or 0)
    filled = round(weight / 5)
    left = ""
    if record.get("step_ends"):
        left = f" · {max(0, round(record['step_ends'] - time.time()))}s left"
    steps = record.get("steps") or []
    step = f" step {record.get('step')}/{len(steps)}" if steps else ""
    return f"[{'#' * filled}{'.' * (20 - filled)}] {weight:g}%{step} {record['state']}{left}"


def _headline(record: dict[str, Any]) -> str:
    what = f"{record['kind']} {record['id']}: {record['service']} {record['version']}"
    if record.get("from_version"):
        what += f" (from {record['from_version']})"
    outcome = record["state"]
    if record.get("error"):
        outcome += f": {record['error']}"
    return f"{what} — {outcome}"


def _clock(when: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when))
