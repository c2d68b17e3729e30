"""`plan`, `up`, `down`, `ps`, `logs`, `scale`, `restart` on a Kubernetes environment.

Each command's module (up.py, ps.py, ...) reads its options, then hands an environment
whose `platform = "kubernetes"` to the function of the same name here, imported only
then: a local command never loads the Kubernetes client. The output keeps the local
shapes: `ps` prints the same table (a pod's node where a local instance has its pid) and
the same JSON keys, `logs` the same lines and JSON Lines, `scale` and `restart` the
service's rows.

What is done on the cluster is in platform/kubernetes/ (environment.py, pods.py, ops.py);
this module says it.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from sqlifier.cli.workspace import Context
from sqlifier.errors import UserError
from sqlifier.platform.kubernetes.api import Cluster
from sqlifier.platform.kubernetes.apply import Change
from sqlifier.platform.kubernetes.environment import (
    bring_up,
    objects_to_apply,
    open_environment,
    plan_environment,
    take_down,
)
from sqlifier.platform.kubernetes.errors import ClusterError
from sqlifier.platform.kubernetes.ops import find_workload
from sqlifier.platform.kubernetes.ops import restart as restart_workload
from sqlifier.platform.kubernetes.ops import scale as scale_workload
from sqlifier.platform.kubernetes.pods import follow, list_pods, log_records, pod_rows
from sqlifier.platform.kubernetes.render_common import Target
from sqlifier.platform.kubernetes.render_secrets import secret_name
from sqlifier.platform.kubernetes.wait import wait_ready
from sqlifier.secrets.redact import Redactor
from sqlifier.stack.model import Approval

__all__ = ["down", "logs", "plan", "ps", "restart", "scale", "table", "up"]

COLUMNS = (
    "service", "instance", "release", "track", "state", "node", "address", "restarts", "reason"
)  # fmt: skip
OPERATION_TIMEOUT = 120.0  # seconds `scale` and `restart` wait for the pods to be ready
_RANK = {"debug": 0, "info": 1, "warn": 2, "error": 3, "critical": 4}


# --- plan ----------------------------------------------------------------------------------


def plan(context: Context, only: str | None, version: str | None, as_json: bool) -> int:
    """What `up` would change on the cluster: a server-side apply dry run."""
    redactor = Redactor()
    target, cluster = open_environment(context.stack, context.env)
    with cluster, _masked(redactor):
        releases = _releases(context, only, version)
        objects = objects_to_apply(
            context.stack, context.env, target, context.state_dir, redactor, releases
        )
        if only is not None:
            objects = [o for o in objects if _service_of(o) == only]
        changes = plan_environment(cluster, target, objects)
        if only is not None:
            changes = [c for c in changes if c.action != "delete"]
    if as_json:
        click.echo(json.dumps([_change_json(c) for c in changes], indent=2))
        return 0
    click.echo(f"{context.stack.name} ({context.env}) on {_where(cluster)}:")
    click.echo("\n".join(plan_lines(changes)))
    return 0


def plan_lines(changes: list[Change]) -> list[str]:
    """A plan as text: created, changed (each difference), deleted; then a count."""
    marks = {"create": "+", "update": "~", "delete": "-"}
    lines = []
    for change in changes:
        if change.action == "unchanged":
            continue
        lines.append(f"  {marks[change.action]} {change.action} {change.ref}")
        lines.extend(f"      {difference}" for difference in change.differences)
    counts = {a: sum(c.action == a for c in changes) for a in ("create", "update", "delete")}
    unchanged = sum(c.action == "unchanged" for c in changes)
    summary = ", ".join(f"{n} to {a}" for a, n in counts.items() if n) or "nothing to change"
    lines.append(f"{summary}; {unchanged} unchanged")
    return lines


def _change_json(change: Change) -> dict[str, Any]:
    return {"object": change.ref, "action": change.action, "differences": list(change.differences)}


def _releases(context: Context, only: str | None, version: str | None) -> dict[str, str] | None:
    if version is None:
        return None
    names = [only] if only is not None else list(context.stack.services_for(context.env))
    return dict.fromkeys(names, version)


def _service_of(obj: dict[str, Any]) -> str | None:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    service = labels.get("sqlifier.dev/service")
    return str(service) if service is not None else None


# --- up ------------------------------------------------------------------------------------


def up(context: Context, detach: bool, timeout: float) -> int:
    """Apply the environment, prune what the stack dropped, wait until it is ready."""
    redactor = Redactor()
    target, cluster = open_environment(context.stack, context.env)
    with cluster, _masked(redactor):
        objects = objects_to_apply(context.stack, context.env, target, context.state_dir, redactor)
        click.echo(
            f"applying {len(objects)} objects of {context.stack.name} ({context.env}) to "
            f"{_where(cluster)}"
        )
        progress = _Progress(cluster, target, live=not detach)
        done = bring_up(
            cluster, target, objects, timeout, on_step=progress.step, sleep=progress.sleep
        )
        rows = pod_rows(cluster, target)
    if not detach:
        click.echo("\n" + table(rows) + "\n")
    click.echo(
        f"{context.stack.name} ({context.env}) is up: {len(rows)} pod{'s' * (len(rows) != 1)} "
        f"ready in {len(done.workloads)} workloads on {_where(cluster)}"
    )
    return 0


class _Progress:
    """What `up` says while it works: each step, and (in the foreground) each pod whose
    state changes while it waits."""

    def __init__(self, cluster: Cluster, target: Target, live: bool) -> None:
        self.cluster, self.target, self.live = cluster, target, live
        self.seen: dict[str, tuple[str, str]] = {}

    def step(self, step: str, what: Any) -> None:
        if step == "applied":
            click.echo(f"applied {len(what)} objects (server-side apply, field manager sqlifier)")
        elif step == "pruned" and what:
            click.echo(f"pruned what the stack file no longer has: {', '.join(what)}")
        elif step == "waiting":
            click.echo(f"waiting for {len(what)} workloads to be ready")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)
        if not self.live:
            return
        for row in pod_rows(self.cluster, self.target):
            now = (str(row["state"]), str(row["reason"] or ""))
            if self.seen.get(row["instance"]) != now:
                self.seen[row["instance"]] = now
                stamp = time.strftime("%H:%M:%S")
                click.echo(f"{stamp}  {row['instance']:<24} {now[0]:<10} {now[1]}".rstrip())


# --- down ----------------------------------------------------------------------------------


def down(context: Context, yes: bool, timeout: float) -> int:
    """Delete what sqlifier owns for this stack and environment, nothing else."""
    environment = context.stack.environment(context.env)
    target, cluster = open_environment(context.stack, context.env)
    with cluster:
        if (environment.approval is Approval.REQUIRED or context.env == "production") and not yes:
            _confirm(f"delete every object of {context.stack.name} ({context.env}) "
                     f"from {_where(cluster)}?")  # fmt: skip
        deleted, claims = take_down(cluster, target, timeout)
    if not deleted:
        click.echo(f"nothing of {context.stack.name} ({context.env}) is on {_where(cluster)}")
        return 0
    click.echo(f"deleted {len(deleted)} objects: {', '.join(sorted(deleted))}")
    if claims:
        click.echo(
            f"kept {len(claims)} volume claims holding the stateful services' data: "
            f"{', '.join(claims)} (kubectl -n {target.namespace} delete pvc NAME removes one)"
        )
    click.echo(f"{context.stack.name} ({context.env}) is down")
    return 0


def _confirm(question: str) -> None:
    if not sys.stdin.isatty():
        raise UserError(
            "this environment asks before it is taken down, and this is not a terminal, so "
            "there is no one to confirm: pass --yes to take it down without asking"
        )
    click.confirm(question, abort=True)


# --- ps ------------------------------------------------------------------------------------


def ps(context: Context, as_json: bool) -> int:
    """The stack's pods: state, readiness, restarts, node, release, track."""
    target, cluster = open_environment(context.stack, context.env)
    with cluster:
        rows = pod_rows(cluster, target)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif rows:
        click.echo(table(rows))
    else:
        click.echo(f"nothing is running for {context.stack.name} ({context.env}) on "
                   f"{_where(cluster)}")  # fmt: skip
    return 0


def table(rows: list[dict[str, Any]]) -> str:
    """The pods as `ps` prints instances: a column each, the reason last."""
    cells = [[c.upper() for c in COLUMNS]]
    for row in rows:
        cells.append(["-" if row.get(c) in (None, "") else str(row.get(c)) for c in COLUMNS])
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in cells
    )


# --- logs ----------------------------------------------------------------------------------


def logs(
    context: Context,
    service: str,
    instance: str | None,
    minimum: int,
    since: float | None,
    follow_: bool,
    show: Callable[[dict[str, Any]], str],
) -> int:
    """A service's pod logs through pods/log, filtered, masked, oldest first."""
    target, cluster = open_environment(context.stack, context.env)
    with cluster:
        redactor = _secret_values(cluster, context, service)

        def pods() -> list[str]:
            names = [p["metadata"]["name"] for p in list_pods(cluster, target, service)]
            return [n for n in names if instance is None or n == instance]

        current = pods()
        if instance is not None and not current and not follow_:
            others = [p["metadata"]["name"] for p in list_pods(cluster, target, service)]
            raise UserError(
                f"no pod {instance!r} of {service} in {context.env}; "
                + (f"{service}'s pods: {', '.join(others)}" if others else "it has none")
            )
        if follow_:
            try:
                for record in follow(cluster, pods, since, redactor):
                    if _RANK.get(record.level, 1) >= minimum:
                        click.echo(show(record.to_json()))
            except KeyboardInterrupt:
                return 0
            return 0
        records = [r for pod in current for r in log_records(cluster, pod, since, redactor)]
    for record in sorted(records, key=lambda r: r.t):
        if _RANK.get(record.level, 1) >= minimum:
            click.echo(show(record.to_json()))
    return 0


def _secret_values(cluster: Cluster, context: Context, service: str) -> Redactor:
    """The values to mask in `service`'s lines: those of its Secret on the cluster (else
    resolved from the providers, as `up` filled it)."""
    redactor = Redactor()
    spec = context.stack.services_for(context.env)[service]
    if not spec.secrets:
        return redactor
    import base64  # noqa: PLC0415

    name = secret_name(service)
    try:
        found = cluster.request(
            "GET",
            f"/api/v1/namespaces/{cluster.namespace}/secrets/{name}",
            verb="get",
            what=f"Secret {cluster.namespace}/{name}",
        )
        redactor.add(
            base64.b64decode(v).decode("utf-8", errors="replace")
            for v in (found.get("data") or {}).values()
        )
    except ClusterError:
        target = Target.of(context.stack, context.env)
        objects_to_apply(context.stack, context.env, target, context.state_dir, redactor)
    return redactor


# --- scale, restart ------------------------------------------------------------------------


def scale(context: Context, service: str, instances: int, as_json: bool) -> int:
    """Set SERVICE's replicas through the scale subresource, and wait for them."""
    _known(context, service)
    target, cluster = open_environment(context.stack, context.env)
    with cluster:
        workload = scale_workload(cluster, target, service, instances)
        _, live = find_workload(cluster, target, service)
        wait_ready(cluster, [live], OPERATION_TIMEOUT)
        rows = pod_rows(cluster, target, service)
    before = (workload.get("spec") or {}).get("replicas")
    if not as_json:
        click.echo(f"{service}: {before} -> {instances} replicas (scale subresource)")
    click.echo(json.dumps(rows, indent=2) if as_json else table(rows))
    return 0


def restart(context: Context, service: str, as_json: bool) -> int:
    """A rolling restart of SERVICE: one new pod at a time, each ready before the next."""
    _known(context, service)
    target, cluster = open_environment(context.stack, context.env)
    with cluster:
        patched = restart_workload(cluster, target, service)
        wait_ready(cluster, [patched], OPERATION_TIMEOUT)
        rows = pod_rows(cluster, target, service)
    click.echo(json.dumps(rows, indent=2) if as_json else table(rows))
    return 0


def _known(context: Context, service: str) -> None:
    services = context.stack.services_for(context.env)
    if service not in services:
        raise UserError(f"unknown service {service!r}; services: {', '.join(services)}")


# --- shared --------------------------------------------------------------------------------


def _where(cluster: Cluster) -> str:
    return f"namespace {cluster.namespace} ({cluster.where})"


class _masked:
    """Every secret value `redactor` holds masked in the error that leaves the block."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, error: BaseException | None, tb: object) -> None:
        if isinstance(error, UserError) and self.redactor:
            error.args = tuple(
                self.redactor.redact(a) if isinstance(a, str) else a for a in error.args
            )
