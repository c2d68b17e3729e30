"""`sqlifier ps`, `scale`, `restart`: what runs, and changing it."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import click

from sqlifier.agent.client import AgentClient, agent_alive
from sqlifier.agent.files import disk_line, read_info
from sqlifier.cli.options import ENV, JSON, STACK_FILE, complete_services
from sqlifier.cli.workspace import load_context, locate, on_cluster
from sqlifier.errors import UserError

__all__ = ["ps", "restart", "router_where", "scale", "table"]

_COLUMNS = (
    "service", "instance", "release", "track", "state", "pid", "address", "restarts", "reason"
)  # fmt: skip
# With a router: what each instance served over the last seconds.
_TRAFFIC = ("req/s", "5xx", "p99")
MAX_INSTANCES = 1000  # the most the agent runs of one service
_NEGATIVE = re.compile(r"-[0-9]+")


@click.command("ps")
@ENV
@STACK_FILE
@click.option("--json", "as_json", is_flag=True, help="Print the instances as JSON.")
def ps(env: str | None, stack_file: str | None, as_json: bool) -> int:
    """Services and instances with state, pid, address, restarts."""
    place = locate(stack_file, env)  # a running agent answers without the stack being read
    if not agent_alive(place.state_dir):
        context = load_context(stack_file, env)
        if on_cluster(context):
            from sqlifier.cli import cluster  # noqa: PLC0415 (the Kubernetes client: when used)

            return cluster.ps(context, as_json)
        left = _left_behind(context.state_dir)
        if as_json:
            click.echo(json.dumps(left, indent=2))
        elif left:
            click.echo(table(left))
            click.echo(
                "\nthe agent is not running: these instances were left by one that died; "
                "sqlifier up adopts them, sqlifier down stops them"
            )
        else:
            click.echo(f"nothing is running for {context.stack.name} ({context.env})")
        return 0
    status = AgentClient(place.state_dir, place.env).request("GET", "/v1/status")
    instances = _rows(status)
    traffic = status.get("traffic") or {}
    counts: dict[str, dict[str, Any]] = status.get("counts") or {}
    if as_json:
        click.echo(json.dumps(instances, indent=2))
        return 0
    router = status.get("router")
    if router:
        window = traffic.get("window") or 0
        state = f"error: {router['error']}" if router.get("error") else f"pid {router['pid']}"
        click.echo(
            f"router: {router['kind']} {router_where(router)} ({state}); "
            f"traffic over the last {window:g} s"
        )
        if (router.get("tls") or {}).get("fingerprint"):
            click.echo(tls_line(router["tls"]))
        click.echo("")
    click.echo(table(instances, with_traffic=bool(router)))
    if set_by := _counts_set(counts):
        click.echo(f"\n{set_by}")
    click.echo(disk_line(place.state_dir, status.get("disk") or {}), nl=False)
    return 0


def router_where(router: dict[str, Any]) -> str:
    """Where the router serves: its front door, or only the services' internal addresses
    (a stack of several services without routes)."""
    if router.get("front_door", True):
        return f"on {router.get('url') or 'http://' + router['listen']}"
    return "for the services' internal addresses (no routes)"


def _counts_set(counts: dict[str, dict[str, Any]]) -> str:
    """The counts not the stack file's, and who set them: they survive an agent restart,
    until an `up` after `down` or an edited `instances` starts from the file again."""
    lines = [
        f"{name}: {wanted.get('count')} instances wanted, set by {wanted.get('by')}"
        for name, wanted in sorted(counts.items())
        if wanted.get("by") not in (None, "stack")
    ]
    return "\n".join(lines)


def _rows(status: dict[str, Any]) -> list[dict[str, Any]]:
    """The instances of an agent's status, each with what it served lately (or None) and
    who set its service's count."""
    measured = (status.get("traffic") or {}).get("instances", {})
    counts: dict[str, dict[str, Any]] = status.get("counts") or {}
    rows: list[dict[str, Any]] = status["instances"]
    for row in rows:
        row["traffic"] = measured.get(f"{row['instance']}_{row['port']}")
        row["count_set_by"] = (counts.get(row["service"]) or {}).get("by")
    return rows


def _left_behind(state_dir: Path) -> list[dict[str, Any]]:
    """Instances a dead agent recorded that are still those processes."""
    from sqlifier.runtime.process import is_same_process  # noqa: PLC0415 (psutil: when asked)

    info = read_info(state_dir) or {}
    if info.get("phase") not in ("starting", "running", "stopping"):
        return []
    alive = []
    router = info.get("router") or {}
    if router.get("pid") and is_same_process(int(router["pid"]), float(router["started"])):
        alive.append(
            {
                "service": "(router)",
                "instance": router.get("kind"),
                "pid": router["pid"],
                "address": router.get("listen"),
                "state": "orphaned",
                "reason": "its agent died; still routing",
            }
        )
    for record in info.get("instances", []):
        pid, started = record.get("pid"), record.get("started")
        if pid and started and is_same_process(int(pid), float(started)):
            alive.append({**record, "state": "orphaned", "reason": "its agent died"})
    # One shape for every row, as `ps --json` prints them when the agent runs.
    keys = dict.fromkeys(key for row in alive for key in (*row, "traffic", "count_set_by"))
    return [{key: row.get(key) for key in keys} for row in alive]


def table(rows: list[dict[str, Any]], with_traffic: bool = False) -> str:
    columns = _COLUMNS[:-1] + (_TRAFFIC if with_traffic else ()) + _COLUMNS[-1:]
    cells = [[c.upper() for c in columns]]
    for row in rows:
        values = {c: "-" if row.get(c) is None else str(row.get(c)) for c in _COLUMNS}
        values.update(_traffic_cells(row.get("traffic")))
        cells.append([values[c] for c in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in cells
    )


def _traffic_cells(measured: dict[str, Any] | None) -> dict[str, str]:
    if not measured:
        return dict.fromkeys(_TRAFFIC, "-")
    rate = measured.get("error_rate")
    p99 = measured.get("p99")
    return {
        "req/s": f"{measured.get('rps', 0):.1f}",
        "5xx": "-" if rate is None else f"{rate * 100:.1f}%",
        "p99": "-" if p99 is None else f"{p99:.0f}ms" if p99 >= 10 else f"{p99:.1f}ms",
    }


class _ScaleCommand(click.Command):
    """`scale` reads a negative count (`scale web -1`) as the count, not as an unknown
    option `-1`, so that the command itself can say what a count may be."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" not in args and any(_NEGATIVE.fullmatch(arg) for arg in args):
            counts = [arg for arg in args if _NEGATIVE.fullmatch(arg)]
            args = [arg for arg in args if not _NEGATIVE.fullmatch(arg)] + ["--", *counts]
        return super().parse_args(ctx, args)


@click.command("scale", cls=_ScaleCommand)
@click.argument("service", shell_complete=complete_services)
@click.argument("instances", type=int)
@ENV
@STACK_FILE
@JSON
def scale(
    service: str, instances: int, env: str | None, stack_file: str | None, as_json: bool
) -> int:
    """Run INSTANCES instances of SERVICE: only the added or removed ones change.

    INSTANCES is 0 (stop them all, the service stays defined) to 1000.
    """
    if not 0 <= instances <= MAX_INSTANCES:
        raise UserError(
            f"cannot scale {service} to {instances} instances: the count is a whole number "
            f"from 0 to {MAX_INSTANCES} (0 stops every instance of {service})"
        )
    body = {"service": service, "instances": instances}
    context = load_context(stack_file, env)
    if on_cluster(context):
        from sqlifier.cli import cluster  # noqa: PLC0415 (the Kubernetes client: when used)

        return cluster.scale(context, service, instances, as_json)
    return _operate("scale", body, env, stack_file, as_json)


@click.command("restart")
@click.argument("service", shell_complete=complete_services)
@ENV
@STACK_FILE
@JSON
def restart(service: str, env: str | None, stack_file: str | None, as_json: bool) -> int:
    """Replace SERVICE's instances one at a time, each after its replacement is ready.
    `restart router` (when no service is called so) reads the router's certificates again."""
    context = load_context(stack_file, env)
    if on_cluster(context):
        from sqlifier.cli import cluster  # noqa: PLC0415 (the Kubernetes client: when used)

        return cluster.restart(context, service, as_json)
    if service == "router" and "router" not in context.stack.services:
        return _reread_certificates(stack_file, env)
    return _operate("restart", {"service": service}, env, stack_file, as_json)


def _reread_certificates(stack_file: str | None, env: str | None) -> int:
    """SIGHUP to the data plane: it reads its certificates again at once (router/tls.py)."""
    import signal  # noqa: PLC0415 (only here)

    from sqlifier.runtime.process import is_same_process  # noqa: PLC0415 (psutil: when asked)

    context = load_context(stack_file, env)
    router = (read_info(context.state_dir) or {}).get("router") or {}
    pid, started = router.get("pid"), router.get("started")
    if not pid or not started or not is_same_process(int(pid), float(started)):
        raise UserError(
            f"no router runs for {context.stack.name} ({context.env}); start it: sqlifier up"
        )
    if not router.get("tls"):
        raise UserError(
            "the router has no tls: `restart router` reads its certificates again; "
            "a change to [router] takes `sqlifier up`"
        )
    os.kill(int(pid), signal.SIGHUP)
    click.echo(
        f"router (pid {pid}) reads its certificates again; logs/router.out says whether "
        "it took them"
    )
    return 0


def _operate(
    what: str, body: dict[str, Any], env: str | None, stack_file: str | None, as_json: bool
) -> int:
    context = load_context(stack_file, env)
    answer = AgentClient(context.state_dir, context.env).request("POST", f"/v1/{what}", body)
    if not answer.get("ok"):
        raise UserError(str(answer.get("error")))
    mine = [i for i in _rows(answer["status"]) if i["service"] == body["service"]]
    click.echo(json.dumps(mine, indent=2) if as_json else table(mine))
    return 0


def tls_line(tls: dict[str, Any]) -> str:
    """The development certificate, for a browser's warning: its SHA-256 fingerprint."""
    return f"router: self-signed certificate {tls.get('certificate')}, SHA-256 {tls['fingerprint']}"
