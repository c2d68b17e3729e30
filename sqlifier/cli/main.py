"""Entry points: `sqlifier` and `deploy-cli`, and the one place that sets exit codes.

Exit codes: 0 success, 1 bad input or a refused operation (the message says why),
2 a bug in sqlifier (a short message; the traceback only with SQLIFIER_DEBUG=1).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

import click

from sqlifier import __version__
from sqlifier.cli import audit, check, config, deploy, fmt, init, rules
from sqlifier.cli.logs import logs
from sqlifier.cli.output import print_diagnostics
from sqlifier.cli.ps import ps, restart, scale
from sqlifier.cli.releases import dora, lock, plan, releases
from sqlifier.cli.secret import group as secret
from sqlifier.cli.up import down, up
from sqlifier.errors import DiagnosticsError, UserError

__all__ = ["cli", "deploy_cli", "main", "run"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="sqlifier")
def cli() -> None:
    """Run a small team's services and operate them with short, readable rules."""


cli.add_command(check.command)
cli.add_command(fmt.command)
cli.add_command(init.command)
cli.add_command(deploy.group)
cli.add_command(rules.group)
cli.add_command(config.command)
cli.add_command(audit.group)
for command in (up, down, ps, scale, restart, logs, secret, releases, lock, plan, dora):
    cli.add_command(command)
for command in (deploy.approve, deploy.rollback, deploy.rollout):
    cli.add_command(command)


def run(argv: Sequence[str] | None = None, prog_name: str = "sqlifier") -> int:
    """Run the CLI and return its exit code; never lets a traceback reach the user."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = cli.main(args=args, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return 1
    except click.Abort:
        click.echo("aborted", err=True)
        return 1
    except DiagnosticsError as exc:
        print_diagnostics(exc.diagnostics)
        return 1
    except UserError as exc:
        click.echo(f"{prog_name}: error: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the last line of defence: a bug, reported briefly
        if os.environ.get("SQLIFIER_DEBUG"):
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
    """The `deploy-cli` command: `sqlifier deploy` under the name the team already types."""
    sys.exit(run(["deploy", *sys.argv[1:]], prog_name="deploy-cli"))
