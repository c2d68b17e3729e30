"""Carrying out the engine's commands: what each verb does to the running stack.

    NOTIFY    the [notify] webhook, in the background (`webhooks.py`)
    RUN       a command in the stack's folder, its output masked (`runtime/commands.py`)
    SCALE     the platform runs N stable instances
    RESTART   the platform replaces the instances one at a time
    ROLLBACK  the same path as `sqlifier rollback`, waiting until traffic is on the target
    ABORT / PAUSE / RESUME ROLLOUT   the deployer's controls

Every verb returns (ok, detail) and bounds its own time; nothing here raises for the
outside world's failures, so one action never stops another or the engine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from sqlifier.agent.rollouts import Rollouts
from sqlifier.agent.webhooks import Notifier, chat_text
from sqlifier.engine.machine import Command, Engine
from sqlifier.platform import Platform, PlatformError
from sqlifier.runtime.commands import run_command
from sqlifier.stack.model import Stack

__all__ = ["Actions", "rule_payload"]

RUN_TIMEOUT = 60.0
MAX_INSTANCES = 1000
ROLLBACK_TIMEOUT = 600.0  # a rule's rollback: start, warm up, move traffic
ROLLBACK_POLL = 0.1


class Actions:
    def __init__(
        self,
        stack: Stack,
        env: str,
        platform: Platform,
        deployer: Rollouts,
        notifier: Notifier,
        engine: Engine,
        redact: Callable[[str], str],
    ) -> None:
        self.stack = stack
        self.env = env
        self.platform = platform
        self.deployer = deployer
        self.notifier = notifier
        self.engine = engine
        self.redact = redact

    async def act(self, command: Command) -> tuple[bool, str]:
        verb, target = command.verb, command.target
        if verb == "NOTIFY":
            if self.stack.notify.webhook is None:
                return True, "recorded here (no [notify] webhook configured)"
            self.notifier.notify(rule_payload(self.stack.name, self.env, command, self.redact))
            return True, "sent to the [notify] webhook"
        if verb == "RUN":
            return await self._run(command)
        if target not in self.platform.services():
            return False, f"{target} is not a service of this stack"
        if verb in ("SCALE", "RESTART"):
            return await self._operate(command)
        who = f"rule {command.rule}"
        if verb == "ROLLBACK":
            return await self._rollback(command, who)
        what = verb.split()[0].lower()
        return self.deployer.control(target, what, who, self.redact(command.reason))

    async def _run(self, command: Command) -> tuple[bool, str]:
        result = await run_command(command.text or "", command.env, self.stack.root, RUN_TIMEOUT)
        summary = result.error or ("timed out" if result.timed_out else f"exit {result.exit_code}")
        output = self.redact(result.output[-2000:])
        summary = self.redact(summary)
        return (result.exit_code == 0 and not result.timed_out), f"{summary}; output: {output}"

    async def _operate(self, command: Command) -> tuple[bool, str]:
        target = command.target
        try:  # each new instance must be ready within the platform's 60 s
            if command.verb == "SCALE":
                count = min(command.count or 0, MAX_INSTANCES)
                await self.platform.scale(target, count, by=f"rule:{command.rule}")
                return True, f"{target} runs {count} instances"
            await self.platform.restart(target)
            return True, f"{target} restarted"
        except PlatformError as exc:
            return False, str(exc)

    async def _rollback(self, command: Command, who: str) -> tuple[bool, str]:
        """The same path as `sqlifier rollback`; waits until traffic is on the target."""
        body = {"service": command.target, "to": command.to, "rule": True}
        body["reason"] = self.redact(command.reason)
        ok, data = await self.deployer.rollback(body, who)
        if not ok:
            return False, str(data.get("error"))
        deadline = time.monotonic() + ROLLBACK_TIMEOUT
        while True:
            run = self.deployer.status(str(data["id"])) or data
            if run.get("done") or run.get("restored_at"):
                break
            if time.monotonic() > deadline:
                return False, f"{run['kind']} {run['id']} still {run['state']}"
            await asyncio.sleep(ROLLBACK_POLL)
        if run.get("restored_at") is not None and run["kind"] == "deploy":
            # What was rolled back from is the canary's release, not the stable one the
            # engine saw: the stable one may still be rolled back from later.
            self.engine.rolled_back.discard((command.target, command.release or ""))
            self.engine.rolled_back.add((command.target, str(run["version"])))
            return True, f"the rollout of {run['version']} was aborted: traffic is back on stable"
        if run.get("succeeded"):
            return True, f"rolled back to {run['version']} ({run['id']})"
        return False, f"{run['kind']} {run['id']} {run['state']}: {run.get('error')}"


def rule_payload(
    stack: str, env: str, command: Command, redact: Callable[[str], str]
) -> dict[str, Any]:
    """A NOTIFY's webhook payload, secret values masked; `text` for chat webhooks."""
    message = redact(command.text or "")
    return {
        "stack": stack,
        "env": env,
        "rule": command.rule,
        "service": command.service,
        "message": message,
        "reason": redact(command.reason),
        "time": command.t,
        "text": chat_text(stack, env, message, f"rule {command.rule}, service {command.service}"),
    }
