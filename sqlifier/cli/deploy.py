"""`sqlifier deploy` (also `deploy-cli`): push deploys with canaries.

The options are the contract of docs/cli.md; the deploy itself is not built yet, so the
command says so plainly and changes nothing.
"""

from __future__ import annotations

import click

from sqlifier.errors import NotAvailable

__all__ = ["command"]


@click.command("deploy")
@click.option("--service", "-s", required=True, help="The service to deploy.")
@click.option("--env", "-e", "env", help="The environment (default: $SQLIFIER_ENV, else dev).")
@click.option(
    "--version", "version", help="The version to deploy (default: the source's current one)."
)
@click.option("--approve", is_flag=True, help="Approve the deploy (for environments that need it).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--reason", help="Why: recorded in the audit log.")
def command(
    service: str,
    env: str | None,
    version: str | None,
    approve: bool,
    yes: bool,
    reason: str | None,
) -> int:
    """Deploy a new release of SERVICE with a canary rollout (not available yet)."""
    raise NotAvailable(
        f"deploy of {service!r} refused: push deploys are not available in this version of "
        "sqlifier yet; nothing was changed"
    )
