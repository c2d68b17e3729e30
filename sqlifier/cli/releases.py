"""`sqlifier releases SERVICE` and `sqlifier lock ...`: the releases kept for a service,
and the per-service deploy locks."""

from __future__ import annotations

import functools
import json
import time
from dataclasses import asdict
from pathlib import Path

import click

from sqlifier.cli.options import ENV, JSON, STACK_FILE, complete_services, duration
from sqlifier.cli.workspace import load_context, on_cluster
from sqlifier.delivery.budget import read_budget
from sqlifier.delivery.dora import compute
from sqlifier.delivery.events import read_events
from sqlifier.delivery.locks import LockInfo, force_release, held_locks
from sqlifier.delivery.plan import ServicePlan, plan_service
from sqlifier.delivery.releases import Releases, releases_table
from sqlifier.errors import UserError
from sqlifier.store.audit import AuditLog, current_user

__all__ = ["dora", "lock", "plan", "releases"]


@click.command("releases")
@click.argument("service", shell_complete=complete_services)
@ENV
@STACK_FILE
@JSON
def releases(service: str, env: str | None, stack_file: str | None, as_json: bool) -> int:
    """The releases of SERVICE kept on disk, newest first: version, status, commit, who
    made it and why."""
    context = load_context(stack_file, env)
    services = context.stack.services_for(context.env)
    if service not in services:
        raise UserError(f"unknown service {service!r}; services: {', '.join(services)}")
    found = Releases(context.state_dir, context.env).list(service)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in found], indent=2))
    elif found:
        click.echo(releases_table(found))
    else:
        click.echo(f"no release of {service} in {context.env} yet")
    return 0


def audit_plans(state_dir: Path, stack: str, plans: list[ServicePlan]) -> None:
    """Every plan shown is recorded: who looked at what change, and what would stop it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    audit = AuditLog(state_dir / "audit.db")
    for shown in plans:
        result = "ok" if not shown.problems else "refused: " + "; ".join(shown.problems)
        target = f"{stack}/{shown.env}/{shown.service} {shown.target}"
        audit.record(current_user(), "plan", target, result, service=shown.service)


@click.command("plan")
@click.option(
    "--service",
    "-s",
    "only",
    shell_complete=complete_services,
    help="One service (default: every service).",
)
@click.option("--version", "version", help="The version to plan for (default: built from HEAD).")
@ENV
@STACK_FILE
@JSON
def plan(
    only: str | None, version: str | None, env: str | None, stack_file: str | None, as_json: bool
) -> int:
    """What a deploy would change — version, config diff, instance counts, migrations,
    rollout steps, approval — compared with the live release, changing nothing. Exit 1
    when something would stop the deploy."""
    context = load_context(stack_file, env)
    services = context.stack.services_for(context.env)
    if only is not None and only not in services:
        raise UserError(f"unknown service {only!r}; services: {', '.join(services)}")
    if on_cluster(context):
        from sqlifier.cli import cluster  # noqa: PLC0415 (the Kubernetes client: when used)

        return cluster.plan(context, only, version, as_json)
    names = [only] if only is not None else list(services)
    store = Releases(context.state_dir, context.env)
    plans = []
    for name in names:
        live = next((r for r in store.list(name) if r.status == "live"), None)
        target = version or "(to be built from HEAD)"
        budget = read_budget(context.stack, context.env, context.state_dir, name, time.time())
        plans.append(plan_service(context.stack, context.env, name, live, target, budget=budget))
    if as_json:
        click.echo(json.dumps([p.to_json() for p in plans], indent=2))
    else:
        click.echo("\n\n".join("\n".join(p.lines()) for p in plans))
    audit_plans(context.state_dir, context.stack.name, plans)
    return 1 if any(p.problems for p in plans) else 0


@click.command("dora")
@click.option("--since", default="30d", show_default=True, help="The window: 7d, 30d, 90d.")
@click.option(
    "--service", "-s", shell_complete=complete_services, help="One service (default: all)."
)
@ENV
@STACK_FILE
@JSON
def dora(
    since: str, service: str | None, env: str | None, stack_file: str | None, as_json: bool
) -> int:
    """The four DORA figures from the audit log: deployment frequency, lead time for
    changes, change failure rate, failed deployment recovery time — each with its tier and
    how it was computed."""
    context = load_context(stack_file, env)
    until = time.time()
    window = duration(since, examples="7d, 30d or 24h")
    path = context.state_dir / "audit.db"
    events = read_events(AuditLog(path).entries()) if path.exists() else []
    result = compute(events, until - window, until, context.env, service)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return 0
    scope = f"{service} in {context.env}" if service else context.env
    click.echo(f"DORA for {scope}, the last {since}:")
    for metric in result.metrics:
        value = "no data" if metric.value is None else f"{metric.value:.3g} {metric.unit}"
        tier = f" ({metric.tier})" if metric.tier else ""
        click.echo(f"  {metric.name}: {value}{tier}")
        click.echo(f"    {metric.how}")
    return 0


@click.group("lock")
def lock() -> None:
    """The deploy locks: one per service and environment."""


@lock.command("list")
@ENV
@STACK_FILE
@JSON
def list_locks(env: str | None, stack_file: str | None, as_json: bool) -> int:
    """Locks held now, stale ones (their process has ended) included."""
    context = load_context(stack_file, env)
    describe = LockInfo.describe
    if on_cluster(context):
        from sqlifier.platform.kubernetes import locks  # noqa: PLC0415 (a Lease per lock)

        held = locks.environment_locks(context.stack, context.env)
        describe = functools.partial(locks.describe, env=context.env)
    else:
        held = held_locks(context.state_dir, context.env)
    if as_json:
        click.echo(json.dumps([asdict(info) for info in held], indent=2))
    elif held:
        for info in held:
            click.echo(f"{info.service}: {describe(info)}")
    else:
        click.echo(f"no lock is held in {context.env}")
    return 0


@lock.command("release")
@click.argument("service", shell_complete=complete_services)
@click.option("--force", is_flag=True, required=True, help="Break the lock (audited).")
@click.option(
    "--even-if-alive",
    is_flag=True,
    help="Also break a lock whose holder still runs (it may be mid-deploy).",
)
@ENV
@STACK_FILE
def release(
    service: str, force: bool, even_if_alive: bool, env: str | None, stack_file: str | None
) -> int:
    """Break SERVICE's lock: one left by a process that has ended (stale). Audited."""
    context = load_context(stack_file, env)
    if on_cluster(context):
        from sqlifier.platform.kubernetes import locks  # noqa: PLC0415 (a Lease per lock)

        broken = locks.break_lock(
            context.stack, context.env, service, current_user(), alive_ok=even_if_alive
        )
        click.echo(f"broke the lock of {service}: it was {locks.describe(broken, context.env)}")
        return 0
    audit = AuditLog(context.state_dir / "audit.db")
    broken = force_release(
        context.state_dir, context.env, service, current_user(), audit, alive_ok=even_if_alive
    )
    click.echo(f"broke the lock of {service}: it was {broken.describe()}")
    return 0
