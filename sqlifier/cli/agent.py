"""`sqlifier agent --env E`: the agent of a Kubernetes environment, in the foreground.

In the cluster it is the command of the agent's rendered Deployment (its service account's
credentials; the stack file from the ConfigMap); anywhere else it runs with the kubeconfig
context the environment names. A local environment's agent is started by `sqlifier up`,
not by this command.

Its files (decisions, audit, engine state, history) go to `--state-dir`, by default the
stack's `.sqlifier/ENV/`, or `$HOME/.sqlifier/STACK/ENV/` when the stack's folder cannot
be written to (the ConfigMap the agent's pod reads the stack file from is read-only).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import click

from sqlifier.cli.options import ENV, STACK_FILE
from sqlifier.cli.output import print_diagnostics
from sqlifier.cli.workspace import load_context
from sqlifier.errors import UserError
from sqlifier.stack.model import PlatformKind

__all__ = ["command"]


@click.command("agent")
@ENV
@STACK_FILE
@click.option(
    "--kubeconfig",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="The kubeconfig to use (default: as kubectl finds it, else in-cluster).",
)
@click.option(
    "--state-dir",
    metavar="DIR",
    type=click.Path(file_okay=False),
    help="Where the agent keeps its decisions, audit log and engine state.",
)
def command(
    env: str | None, stack_file: str | None, kubeconfig: str | None, state_dir: str | None
) -> int:
    """Run the agent of a Kubernetes environment in the foreground."""
    from sqlifier.agent.kubernetes import KubernetesAgent  # noqa: PLC0415

    context = load_context(stack_file, env)
    print_diagnostics(list(context.warnings))
    stack = context.stack
    if stack.environment(context.env).platform is not PlatformKind.KUBERNETES:
        raise UserError(
            f"environment {context.env} of {stack.path.name} runs on the local platform: its "
            f"agent is started by sqlifier up --env {context.env}; sqlifier agent runs the "
            'agent of an environment with platform = "kubernetes"'
        )
    folder = (
        Path(state_dir) if state_dir else _state_dir(context.state_dir, stack.name, context.env)
    )

    def say(message: str) -> None:
        click.echo(f"{time.strftime('%H:%M:%S')} {message}")

    agent = KubernetesAgent(
        stack, context.env, folder, Path(kubeconfig) if kubeconfig else None, say=say
    )

    async def main() -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, agent.stopping.set)
        return await agent.run()

    return asyncio.run(main())


def _state_dir(preferred: Path, stack: str, env: str) -> Path:
    try:
        preferred.mkdir(parents=True, exist_ok=True)
        if os.access(preferred, os.W_OK):
            return preferred
    except OSError:
        pass
    return Path.home() / ".sqlifier" / stack / env
