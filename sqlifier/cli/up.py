"""`sqlifier up` and `sqlifier down`: start a stack (in the foreground or detached) and
stop it, leaving no process behind.

Before the agent starts, `up` records what it will run as releases (`Releases.start`):
each service not yet deployed runs its source, recorded as the live release, so that the
first deploy has a `previous_stable` to roll back to."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time

import click
import psutil

from sqlifier.agent.client import AgentClient, AgentNotRunning, agent_alive
from sqlifier.agent.files import agent_files, keep_private, read_info
from sqlifier.agent.server import Agent
from sqlifier.cli.options import ENV, STACK_FILE
from sqlifier.cli.output import print_diagnostics
from sqlifier.cli.ps import router_where, table, tls_line
from sqlifier.cli.workspace import Context, display_path, load_context, on_cluster
from sqlifier.delivery.releases import ReleaseError, Releases
from sqlifier.errors import UserError
from sqlifier.runtime.instance import Event
from sqlifier.runtime.process import Launched, is_same_process, stop_group
from sqlifier.runtime.space import LOW_FREE, free_bytes
from sqlifier.store.audit import AuditLog, current_user

__all__ = ["down", "up"]

LAST_LINES = 15
MIN_FREE = 64 * 1024  # bytes the agent needs to start: its token, its record, the audit log


@click.command("up")
@ENV
@STACK_FILE
@click.option("--detach", "-d", is_flag=True, help="Return once every service is ready.")
@click.option(
    "--timeout", default=60.0, show_default=True, help="Seconds to wait for each service."
)
def up(env: str | None, stack_file: str | None, detach: bool, timeout: float) -> int:
    """Start the stack's services in dependency order.

    In the foreground, events stream until Ctrl-C, which stops everything. With --detach,
    returns when every service is ready, or exits 1 naming the service that failed with
    its last log lines.
    """
    context = load_context(stack_file, env)
    print_diagnostics(context.warnings)
    if on_cluster(context):
        from sqlifier.cli import cluster  # noqa: PLC0415 (the Kubernetes client: when used)

        return cluster.up(context, detach, timeout)
    if agent_alive(context.state_dir):
        info = read_info(context.state_dir) or {}
        raise UserError(
            f"stack {context.stack.name!r} is already running in {context.env} "
            f"(agent pid {info.get('pid')}); run sqlifier down first"
        )
    keep_private(context.state_dir.parent)  # the agent and all it starts inherit the umask
    _check_space(context)
    recorded = _record_releases(context)
    if detach:
        code = _detached(context, timeout)
        for line in recorded if code == 0 else ():
            click.echo(line)
        return code
    return asyncio.run(_foreground(context, timeout, recorded))


def _record_releases(context: Context) -> list[str]:
    """What `up` runs, recorded as releases: a line for each release recorded now. A
    source that cannot be made into one still runs, with a warning (nothing to roll back
    to)."""
    store = Releases(context.state_dir, context.env, context.stack.keep_releases)
    lines = []
    for name in context.stack.services_for(context.env):
        try:
            release, what = store.start(context.stack, name, current_user())
        except ReleaseError as exc:
            click.echo(
                f"sqlifier: warning: {name} runs its source without a release, so a rollback "
                f"will have nothing to go back to: {exc}",
                err=True,
            )
            continue
        if what == "new":
            lines.append(
                f"{name}: release {release.version} recorded from its source "
                f"(sqlifier releases {name})"
            )
        changed = store.uncommitted(context.stack, name) if what != "kept" else []
        if changed:
            more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
            shown = ", ".join(changed[:5]) + more
            click.echo(
                f"sqlifier: warning: {name} runs uncommitted changes ({shown}) that are not "
                f"part of its release {release.version}, which holds the committed files: "
                "commit them for a rollback to bring them back",
                err=True,
            )
    return lines


def _check_space(context: Context) -> None:
    """Refuse to start on a full disk (the agent could not write its token); say so when
    it is low (instance log lines will be dropped to keep room for the state)."""
    folder = context.state_dir
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = free_bytes(folder)
    if free is None or free >= LOW_FREE:
        return
    where = display_path(context.state_dir.parent)
    if free < MIN_FREE:
        raise UserError(
            f"the filesystem of {where} is full ({free} bytes free): the agent could not "
            "write its state; free some space and run sqlifier up again"
        )
    click.echo(
        f"warning: the filesystem of {where} is nearly full ({free // 1024} KiB free): "
        "instance log lines are dropped until there is more room",
        err=True,
    )


class _Screen:
    """What the foreground `up` prints: each event as a line and, on a terminal, the table
    of instances kept live below them (redrawn in place); elsewhere the table once, when
    everything is ready."""

    def __init__(self, live: bool) -> None:
        self.live = live
        self.table_lines = 0
        self.agent: Agent | None = None

    def event(self, event: Event) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(event.when))
        line = f"{stamp}  {event.instance:<24} {event.state:<10} {event.reason}"
        if not self.live:
            click.echo(line)
            return
        erase = f"\x1b[{self.table_lines}F\x1b[J" if self.table_lines else ""
        rows = table(self.agent.supervisor.snapshot()) if self.agent else ""
        click.echo(f"{erase}{line}\n\n{rows}")
        self.table_lines = rows.count("\n") + 2

    async def table_when_up(self, agent: Agent) -> None:
        if self.live:
            return
        while agent.phase == "starting":
            await asyncio.sleep(0.1)
        if agent.phase == "running":
            click.echo("\n" + table(agent.supervisor.snapshot()) + "\n")


async def _foreground(context: Context, timeout: float, recorded: list[str]) -> int:
    screen = _Screen(live=sys.stdout.isatty())
    agent = Agent(
        context.stack, context.env, context.state_dir, on_event=screen.event, who=current_user()
    )
    screen.agent = agent
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, agent.stopping.set)
    click.echo(f"starting {context.stack.name} ({context.env}); Ctrl-C stops everything")
    for line in recorded:
        click.echo(line)
    shown = asyncio.create_task(screen.table_when_up(agent))
    code = await agent.run(timeout)
    shown.cancel()
    if code:
        _explain_failure(context, agent.error or "the stack failed to start")
    return code


def _detached(context: Context, timeout: float) -> int:
    files = agent_files(context.state_dir)
    started = time.time()
    context.state_dir.mkdir(parents=True, exist_ok=True)
    with (context.state_dir / "agent.log").open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sqlifier.agent",
                "--stack",
                str(context.stack_file),
                "--env",
                context.env,
                "--timeout",
                str(timeout),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    while True:
        info = read_info(context.state_dir) or {}
        if info.get("pid") == process.pid and info.get("phase") == "running":
            break
        mine = info.get("pid") == process.pid
        if (mine and info.get("phase") == "failed") or process.poll() is not None:
            process.wait()
            error = info.get("error") if mine else None
            _explain_failure(context, error or _agent_log_tail(context, process.pid))
            return 1
        time.sleep(0.1)
    instances = info.get("instances", [])
    click.echo(
        f"{context.stack.name} ({context.env}) is up: {len(instances)} instance"
        f"{'s' * (len(instances) != 1)} ready; agent pid {process.pid}, socket {files['socket']}"
    )
    router = info.get("router")
    if router:
        click.echo(f"router: {router['kind']} {router_where(router)}")
        if (router.get("tls") or {}).get("fingerprint"):
            click.echo(tls_line(router["tls"]))
    _say_resets(context, started)
    return 0


def _say_resets(context: Context, since: float) -> None:
    """What the agent found damaged and started afresh (said in its log, and here)."""
    with contextlib.suppress(Exception):  # the log was readable a moment ago; this only says
        for entry in AuditLog(agent_files(context.state_dir)["audit"]).entries(since=since):
            if entry.what.endswith("state reset"):
                click.echo(f"warning: {entry.why}", err=True)


def _agent_log_tail(context: Context, pid: int) -> str:
    try:
        lines = (context.state_dir / "agent.log").read_text().splitlines()
    except OSError:
        return "the agent stopped before it started"
    mine = f"agent {pid} error: "
    for line in reversed(lines):
        if line.startswith(mine):
            return line[len(mine) :]
    return "the agent stopped: " + " / ".join(lines[-5:])


def _explain_failure(context: Context, error: str) -> None:
    click.echo(f"sqlifier: error: {error}", err=True)
    instance = error.split(" ", 1)[0]
    log = context.state_dir / "logs" / f"{instance}.log"
    if not log.exists():
        return
    lines = log.read_text(errors="replace").splitlines()[-LAST_LINES:]
    if lines:
        click.echo(f"last lines of {instance}:", err=True)
    for line in lines:
        try:
            record = json.loads(line)
            click.echo(f"  {record['line']}", err=True)
        except (ValueError, KeyError, TypeError):
            click.echo(f"  {line}", err=True)


async def _stop_orphans(context: Context) -> int:
    """Stop instances recorded by an agent that died (each verified by pid and start
    time, so a recycled pid is never touched)."""
    info = read_info(context.state_dir) or {}
    if info.get("phase") not in ("starting", "running", "stopping"):
        return 0
    if agent_alive(context.state_dir):
        return 0
    stopped = 0
    router = info.get("router") or {}
    records = [*info.get("instances", []), *([router] if router.get("pid") else [])]
    for record in records:
        pid, started = record.get("pid"), record.get("started")
        if pid and started and is_same_process(int(pid), float(started)):
            await stop_group(Launched(int(pid), float(started)), 30.0 if record is router else 10.0)
            stopped += record is not router  # the router goes last and is not counted
    if (context.state_dir / "network.json").exists():  # its isolated instances' namespaces
        from sqlifier.runtime.netns import StackNetwork  # noqa: PLC0415

        StackNetwork(context.state_dir).teardown()
    return stopped


@click.command("down")
@ENV
@STACK_FILE
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the stop.")
@click.option(
    "--yes", is_flag=True, help="Do not ask for confirmation (a Kubernetes environment asks)."
)
def down(env: str | None, stack_file: str | None, timeout: float, yes: bool) -> int:
    """Stop every service and the agent; no process is left behind."""
    context = load_context(stack_file, env)
    if on_cluster(context):
        from sqlifier.cli import cluster  # noqa: PLC0415 (the Kubernetes client: when used)

        return cluster.down(context, yes, timeout)
    if agent_alive(context.state_dir):
        try:
            return _shutdown(context, timeout)
        except AgentNotRunning:
            pass  # it died just now: what it left is stopped below
    orphans = asyncio.run(_stop_orphans(context))
    if orphans:
        click.echo(
            f"stopped {orphans} instance{'s' * (orphans != 1)} left running by an agent "
            f"that had died; {context.stack.name} ({context.env}) is down"
        )
    else:
        click.echo(f"nothing is running for {context.stack.name} ({context.env})")
    return 0


def _shutdown(context: Context, timeout: float) -> int:
    info = read_info(context.state_dir) or {}
    AgentClient(context.state_dir, context.env).request("POST", "/v1/shutdown")
    try:
        psutil.Process(int(info["pid"])).wait(timeout)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        raise UserError(f"the agent (pid {info['pid']}) did not stop within {timeout:g}s") from None
    # If the agent died while stopping, what it had not stopped yet is still on record.
    left = asyncio.run(_stop_orphans(context))
    extra = f" (and {left} instance{'s' * (left != 1)} its agent left)" if left else ""
    click.echo(f"{context.stack.name} ({context.env}) is down{extra}")
    return 0
