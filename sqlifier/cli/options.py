"""Options that several commands share, each declared once: the environment, the stack
file, `--json`, `--reason`, `--lock-wait`, and how a duration or a reason given on the
command line is read.

A value is checked in the command's body, not in a click callback: a bad value is a
`UserError` like any other, turned into a message and an exit code by `main.run()`, in
the same order as the command's other checks.

The same letters mean the same thing on every command: `-f` is `--file` (the stack file;
`logs` follows with `--follow`/`-F`), `-s` is `--service`, `-e` is `--env`.
tests/cli/test_options.py walks every command and holds them to it.

`--env` is also an option of `sqlifier` itself, so it works before the subcommand as well
as after it (`sqlifier --env production ps`); given in both places, the subcommand's wins.
Every command resolves the environment the same way: `resolve_env`.

Options that only look alike stay with their command: `--since` reads entries, lines or
a window depending on the command (and `logs --since` has its own, narrower syntax);
`--detach`, `--approve` and `--timeout` mean something different on each.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click
from click.decorators import FC

from sqlifier.errors import SqlifierError, UserError
from sqlifier.stack.names import DEFAULT_ENV

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

__all__ = [
    "ENV",
    "JSON",
    "LOCK_WAIT",
    "LONGEST_OPTION",
    "STACK_FILE",
    "STACK_FILE_OF_FILES",
    "check_reason",
    "complete_services",
    "duration",
    "json_option",
    "reason_option",
    "release_version_option",
    "resolve_env",
]

_STACK_FILE_HELP = "The stack file (default: found from here)."

ENV = click.option("--env", "-e", "env", help="The environment (default: $SQLIFIER_ENV, else dev).")
# A path: the shells complete file names for it.
_FILE = click.Path(dir_okay=False)
STACK_FILE = click.option("-f", "--file", "stack_file", type=_FILE, help=_STACK_FILE_HELP)
# `check` and `fmt` find the stack file from the files they are given (`resolve`).
STACK_FILE_OF_FILES = click.option(
    "-f",
    "--file",
    "stack_file",
    type=_FILE,
    help="The stack file (default: sqlifier.toml here or above).",
)
LOCK_WAIT = click.option(
    "--lock-wait", "lock_wait", help="Wait this long for the service's lock (30s, 5m)."
)

# The longest duration an option takes: sqlifier keeps no older history, and no wait is
# meant to outlast it.
LONGEST_OPTION = 3650 * 86400.0


def release_version_option(help: str) -> Callable[[FC], FC]:
    """`--version V` of `deploy` (the release to make), which also answers `--version`
    alone as every program does: `deploy-cli --version` prints sqlifier's version."""
    return click.option(
        "--version",
        "version",
        metavar="V",
        is_flag=False,
        flag_value=_PROGRAM_VERSION,
        is_eager=True,
        callback=_program_version,
        help=help + " Alone, without V: print sqlifier's version.",
    )


_PROGRAM_VERSION = "\0program"  # what `--version` without a value stands for


def _program_version(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value != _PROGRAM_VERSION or ctx.resilient_parsing:
        return value
    from sqlifier import __version__  # noqa: PLC0415

    name = ctx.find_root().info_name or "sqlifier"  # deploy-cli is a root of its own
    click.echo(f"{name}{'' if name == 'sqlifier' else ' (sqlifier)'}, version {__version__}")
    raise click.exceptions.Exit(0)


def complete_services(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Shell completion of a service name: the services of the stack file the command
    would use (`-f`, else found from here up) in its environment. Nothing when there is
    no valid stack: completion never prints an error."""
    from click.shell_completion import CompletionItem  # noqa: PLC0415 (when completing)

    from sqlifier.stack import find_stack, load_stack  # noqa: PLC0415

    given = ctx.params.get("stack_file")
    try:
        path = Path(given) if given else find_stack(Path.cwd())
        if path is None:
            return []
        stack, _ = load_stack(path)
        env = ctx.params.get("env") or ctx.find_root().params.get("env")
        names = stack.services_for(resolve_env(env))
    except (SqlifierError, OSError, ValueError):
        return []
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]


def resolve_env(env: str | None) -> str:
    """The environment a command works on: its own `--env`, else the one given to
    `sqlifier --env E` before the subcommand, else $SQLIFIER_ENV, else dev."""
    if env:
        return env
    context = click.get_current_context(silent=True)
    outer = context.find_root().params.get("env") if context is not None else None
    return str(outer or os.environ.get("SQLIFIER_ENV") or DEFAULT_ENV)


def json_option(help: str = "Print JSON.") -> Callable[[FC], FC]:
    """`--json` (as `as_json`): print JSON instead of text."""
    return click.option("--json", "as_json", is_flag=True, help=help)


JSON = json_option()


def reason_option(help: str = "Why: recorded in the audit log.") -> Callable[[FC], FC]:
    """`--reason` (default empty); the command checks it with `check_reason`."""
    return click.option("--reason", default="", help=help)


def check_reason(text: str) -> None:
    """A reason is one line of plain text: it is printed in records, logs and terminals."""
    if not text.isprintable():
        raise UserError(
            "--reason holds a control character (a line break, a tab or an escape "
            "sequence): write it as one line of plain text"
        )


def duration(text: str, option: str = "--since", examples: str = "30m, 24h or 7d") -> float:
    """A duration given on the command line (`30m`, `24h`, `7d`), in seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise UserError(f"{option} {text}: expected a duration like {examples}")
    from sqlifier.lang.units import base_value  # noqa: PLC0415 (not on every start-up)

    seconds = base_value(float(match.group(1)), match.group(2))
    if seconds > LONGEST_OPTION:
        raise UserError(f"{option} {text}: at most 3650d (ten years), like {examples}")
    return seconds
