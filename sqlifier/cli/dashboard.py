"""`sqlifier dashboard`: the address of the agent's web dashboard, with a one-time login link.

The link comes from the running agent, asked over its API with the environment's token
(the same way as every other command), so only someone who may use the CLI can log in.
The link works once, within 5 minutes; the browser then holds a session cookie for 8 hours.
"""

from __future__ import annotations

import json
import webbrowser

import click

from sqlifier.agent.client import AgentClient, agent_alive
from sqlifier.cli.options import ENV, JSON, STACK_FILE
from sqlifier.cli.workspace import load_context
from sqlifier.errors import UserError

__all__ = ["command"]


@click.command("dashboard")
@ENV
@STACK_FILE
@JSON
@click.option("--open", "open_browser", is_flag=True, help="Open the login link in a browser.")
def command(env: str | None, stack_file: str | None, as_json: bool, open_browser: bool) -> int:
    """The web dashboard's address, with a one-time login link (valid 5 minutes).

    Without the link the dashboard is read-only; logged in, you can pause and resume
    rules and rollouts, approve deploys and roll back, each confirmed and audited as you.
    """
    context = load_context(stack_file, env)
    if not agent_alive(context.state_dir):
        raise UserError(
            f"the agent of {context.stack.name} ({context.env}) is not running; "
            "start it with sqlifier up"
        )
    answer = AgentClient(context.state_dir, context.env).request("POST", "/v1/dashboard/login")
    if not answer.get("ok"):
        raise UserError(str(answer.get("error")))
    if as_json:
        click.echo(json.dumps({"url": answer["url"], "login": answer["login"]}, indent=2))
    else:
        click.echo(f"dashboard: {answer['url']} (read-only without logging in)")
        click.echo(f"log in (one use, within 5 minutes): {answer['login']}")
    if open_browser and not webbrowser.open(answer["login"]):
        click.echo("no browser could be opened here: open the link above yourself", err=True)
    return 0
