"""`python -m sqlifier.agent --stack FILE --env ENV`: the agent, as `up --detach` starts it."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from sqlifier.agent.server import Agent
from sqlifier.errors import UserError
from sqlifier.runtime.instance import Event
from sqlifier.stack import load_stack
from sqlifier.store.audit import current_user


def _print(event: Event) -> None:
    stamp = time.strftime("%H:%M:%S", time.localtime(event.when))
    print(f"{stamp} {event.instance} {event.state}: {event.reason}", flush=True)


async def _main(stack_file: Path, env: str, timeout: float) -> int:
    stack, _ = load_stack(stack_file)
    state_dir = stack.root / ".sqlifier" / env
    agent = Agent(stack, env, state_dir, on_event=_print, who=current_user())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.stopping.set)
    return await agent.run(timeout)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sqlifier.agent")
    parser.add_argument("--stack", required=True, type=Path)
    parser.add_argument("--env", required=True)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    try:
        sys.exit(asyncio.run(_main(args.stack, args.env, args.timeout)))
    except UserError as exc:
        # The pid lets the `up` that started this agent find its line among the lines
        # of another agent writing to the same log.
        print(f"agent {os.getpid()} error: {exc}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
