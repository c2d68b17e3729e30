"""The agent of a Kubernetes environment, run in a thread of the test (its own event loop).

with running_agent(stack, tmp_path / "state", cluster.kubeconfig) as agent:
    ...   # agent.automation, agent.platform; the agent acts on the real control plane
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlifier.agent.kubernetes import KubernetesAgent
from sqlifier.stack.model import Stack
from tests.k8s.agent_stack import ENV
from tests.k8s.fixtures import until

__all__ = ["running_agent"]


@contextmanager
def running_agent(stack: Stack, state_dir: Path, kubeconfig: Path) -> Iterator[KubernetesAgent]:
    holder: dict[str, object] = {}

    async def main() -> None:
        agent = KubernetesAgent(stack, ENV, state_dir, kubeconfig, say=print)
        holder["loop"] = asyncio.get_running_loop()
        holder["agent"] = agent
        try:
            await agent.run()
        except BaseException as e:
            holder["error"] = e
            raise

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    until(
        lambda: (
            "error" in holder
            or (
                isinstance(holder.get("agent"), KubernetesAgent)
                and holder["agent"].automation is not None
            )
        ),  # type: ignore[attr-defined]
        "the agent composed",
    )
    if "error" in holder:
        raise holder["error"]  # type: ignore[misc]
    agent = holder["agent"]
    assert isinstance(agent, KubernetesAgent)
    try:
        yield agent
    finally:
        loop = holder["loop"]
        assert isinstance(loop, asyncio.AbstractEventLoop)
        loop.call_soon_threadsafe(agent.stopping.set)
        thread.join(timeout=30)
        assert not thread.is_alive(), "the agent did not stop"
