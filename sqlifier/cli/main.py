"""Entry points: `sqlifier` and `deploy-cli`, and the one place that sets exit codes.

Exit codes: 0 success, 1 bad input or a refused operation (the message says why),
2 a bug in sqlifier (a short message; the traceback only with SQLIFIER_DEBUG=1).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

import click

from sqlifier import __version__
from sqlifier.errors import DiagnosticsError, UserError

__all__ = ["cli", "deploy_cli", "main", "run"]


# Each command's module is imported only when that command runs: `sqlifier ps` loads the
# client side only, never the agent, the rule engine or the secret store's cryptography.
COMMANDS = {
    "agent": "sqlifier.cli.agent:command",
    "approve": "sqlifier.cli.deploy:approve",
    "audit": "sqlifier.cli.audit:group",
    "check": "sqlifier.cli.check:command",
    "config": "sqlifier.cli.config:command",
    "dashboard": "sqlifier.cli.dashboard:command",
    "deploy": "sqlifier.cli.deploy:group",
    "dora": "sqlifier.cli.releases:dora",
    "down": "sqlifier.cli.up:down",
    "fmt": "sqlifier.cli.fmt:command",
    "init": "sqlifier.cli.init:command",
    "lock": "sqlifier.cli.releases:lock",
    "logs": "sqlifier.cli.logs:logs",
    "plan": "sqlifier.cli.releases:plan",
    "ps": "sqlifier.cli.ps:ps",
    "releases": "sqlifier.cli.releases:releases",
    "render": "sqlifier.cli.render:command",
    "restart": "sqlifier.cli.ps:restart",
    "rollback": "sqlifier.cli.deploy:rollback",
    "rollout": "sqlifier.cli.deploy:rollout",
    "rules": "sqlifier.cli.rules:group",
    "scale": "sqlifier.cli.ps:scale",
    "secret": "sqlifier.cli.secret:group",
    "slo": "sqlifier.cli.slo:command",
    "up": "sqlifier.cli.up:up",
}

# What `sqlifier --help` says of each command, written here so that the list is printed
# without importing every command's module (which would take most of a second).
SUMMARIES = {
    "agent": "Run the agent of a Kubernetes environment.",
    "approve": "Approve a deploy awaiting approval.",
    "audit": "Who did what, to what, when and why; audit verify.",
    "check": "Check the stack file and rule files.",
    "config": "A service's effective configuration, secrets masked.",
    "dashboard": "The web dashboard's address, with a one-time login link.",
    "deploy": "Deploy a new release of a service as a canary.",
    "dora": "The four DORA figures from the audit log.",
    "down": "Stop every service and the agent.",
    "fmt": "Format rule files in canonical form.",
    "init": "Create a new stack.",
    "lock": "The deploy locks: list, release.",
    "logs": "Print (or follow) a service's log lines.",
    "plan": "What a deploy would change, changing nothing.",
    "ps": "Services and instances: state, pid, address, traffic.",
    "releases": "The releases of a service kept on disk.",
    "render": "The manifests of a Kubernetes environment.",
    "restart": "Replace a service's instances one at a time.",
    "rollback": "Put a service back on an earlier release.",
    "rollout": "Abort, pause or resume a rollout in progress.",
    "rules": "See, test and control the stack's rules.",
    "scale": "Run N instances of a service.",
    "secret": "The environment's encrypted secrets.",
    "slo": "Objectives: error budget left, burn rates.",
    "up": "Start the stack's services.",
}


class _LazyGroup(click.Group):
    """A group whose commands are named here and imported when first asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, name = COMMANDS[cmd_name].split(":")
            command = getattr(importlib.import_module(module), name)
            assert isinstance(command, click.Command), COMMANDS[cmd_name]
            command.short_help = SUMMARIES[cmd_name]
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SUMMARIES[name]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="sqlifier")
@click.option(
    "--env",
    "-e",
    "env",
    metavar="ENV",
    help="The environment, for any subcommand (default: $SQLIFIER_ENV, else dev).",
)
def cli(env: str | None) -> None:
    """Run a small team's services and operate them with short, readable rules."""


def run(
    argv: Sequence[str] | None = None,
    prog_name: str = "sqlifier",
    command: click.Command | None = None,
) -> int:
    """Run the CLI (or one of its commands as a program of its own) and return its exit
    code; never lets a traceback reach the user."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = (command or cli).main(args=args, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return 1
    except click.Abort:
        click.echo("aborted", err=True)
        return 1
    except DiagnosticsError as exc:
        from sqlifier.cli.output import print_diagnostics  # noqa: PLC0415 (on errors only)

        print_diagnostics(exc.diagnostics)
        return 1
    except UserError as exc:
        click.echo(f"{prog_name}: error: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the last line of defence: a bug, reported briefly
        if os.environ.get("SQLIFIER_DEBUG"):
            import traceback  # noqa: PLC0415 (on a bug only)

            traceback.print_exc()
        click.echo(
            f"{prog_name}: internal error: {type(exc).__name__}: {exc}\n"
            "This is a bug in sqlifier. Run again with SQLIFIER_DEBUG=1 for the details "
            "and include them in a report.",
            err=True,
        )
        return 2
    return result if isinstance(result, int) else 0


def main() -> None:
    """The `sqlifier` command."""
    sys.exit(run())


def deploy_cli() -> None:
    """The `deploy-cli` command: `sqlifier deploy` under the name the team already types,
    as a program of its own, so that its usage line (`deploy-cli [OPTIONS]`) works as shown."""
    from sqlifier.cli.deploy import group  # noqa: PLC0415

    sys.exit(run(prog_name="deploy-cli", command=group))
