"""What keeps an instance in: its network namespace (`isolation = "network"`) and its
account (`user = "app"`), set up just before it starts and removed when it stops for
good. The runner asks `prepare` how to start the instance and where it is reached.

Without root or namespaces, `problem(services)` says why, and an isolated service does
not start: it never runs unisolated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlifier.runtime.netns import (
    Denial,
    IsolationError,
    Slot,
    StackNetwork,
    cannot_isolate,
    enter_namespace,
    resolve_allowances,
)
from sqlifier.runtime.private import private_dir
from sqlifier.runtime.users import account, hand_over, open_path
from sqlifier.stack.model import Isolation, Service

__all__ = ["Fence", "Fencing", "NewDenial", "bridge_address", "fence_problem"]

# Where an isolated instance's calls to a service by name go: the data plane's internal
# listener for it, as reached from a namespace (host, port).
Internal = Callable[[str], Sequence[tuple[str, int]]]


@dataclass(frozen=True, slots=True)
class Fencing:
    """How an instance starts and is reached."""

    host: str  # where it is reached: 127.0.0.1, or its namespace's address
    prefix: tuple[str, ...]  # before its command: the nsenter into its namespace
    account: tuple[int, int] | None  # uid and gid it runs as (when no prefix does it)


@dataclass(frozen=True, slots=True)
class NewDenial:
    """Connections rejected since the last look: one instance, one destination."""

    instance: str  # the instance id
    destination: str
    count: int


def bridge_address(state_dir: Path) -> str:
    """Where isolated instances of the stack whose state is `state_dir` reach the host
    (the bridge's address; nothing is created). The data plane's internal listener for
    a service binds here too, on the same port as on 127.0.0.1, and an isolated
    instance's `<NAME>_URL` is `http://<this address>:<that port>`. The listeners are
    bound before the bridge exists (IP_FREEBIND; HAProxy's `transparent`), and the
    agent's traffic side tells the fence where each service is (`Fence.internal`), so
    `egress = ["NAME"]` allows exactly that service's listeners."""
    return StackNetwork(state_dir).host


def fence_problem(services: Iterable[Service]) -> str | None:
    """Why these services cannot run as their stack file asks here, or None."""
    if any(s.isolation is Isolation.NETWORK for s in services):
        return cannot_isolate()
    return None


class Fence:
    """Namespaces and accounts for one stack's instances."""

    def __init__(self, state_dir: Path, internal: Internal | None = None) -> None:
        self.state_dir = state_dir
        self.network = StackNetwork(state_dir)
        # None: a service named in `egress` is reached at its isolated instances' own
        # addresses (until the data plane listens for it on the bridge).
        self.internal = internal
        self._seen: dict[tuple[str, str], int] = {}

    async def prepare(
        self, instance_id: str, service: Service, port: int, data_dir: Path | None
    ) -> Fencing:
        """How the instance is started and reached; IsolationError or UserSwitchError
        (both UserError) when it cannot be fenced as asked."""
        ids = None
        if service.user is not None:
            who = account(service.user, service.name)
            ids = (who.uid, who.gid)
            if data_dir is not None:
                hand_over([data_dir], who)
                open_path(data_dir, stop=data_dir.parents[2])
            if any(ref.file is not None for ref in service.secrets.values()):
                # The files become the account's; their folders stay the agent's, which
                # writes them again at a restart, with only the search bit for others.
                folder = private_dir(self.state_dir, "secrets", instance_id)
                files = [path for path in folder.iterdir() if path.is_file()]
                hand_over(files, who)
                for path in files:
                    open_path(path, stop=folder.parents[2])
        if service.isolation is Isolation.NETWORK:
            problem = cannot_isolate()
            if problem is not None:
                raise IsolationError(f"service {service.name} asks for isolation: {problem}")
            outside = [e for e in service.egress if e.kind != "service"]
            names = tuple(e.target for e in service.egress if e.kind == "service")

            def attach() -> Slot:  # in a thread: resolving hosts and `ip` calls block
                allowed = resolve_allowances(outside, lambda name: ())
                return self.network.attach(instance_id, port, allowed, names, self._endpoints)

            slot = await asyncio.to_thread(attach)
            # nsenter joins the namespace as root, then becomes the account.
            return Fencing(slot.address, tuple(enter_namespace(slot.path, ids)), None)
        return Fencing("127.0.0.1", (), ids)

    def address(self, instance_id: str) -> str | None:
        """An adopted instance's namespace address (None: it is not isolated)."""
        return self.network.address_of(instance_id)

    async def release(self, instance_id: str) -> None:
        """The instance stopped for good: its namespace and rules go."""
        if instance_id in self.network.slots:
            await asyncio.to_thread(self.network.detach, instance_id)

    def teardown(self) -> None:
        self.network.teardown()

    async def refresh(self) -> None:
        """Where services are reached by name changed (`internal`, or the instances of
        an isolated service): the rules follow."""
        await asyncio.to_thread(self.network.refresh)

    async def new_denials(self) -> list[NewDenial]:
        """Connections rejected since the last call, per instance and destination."""
        if not self.network.slots:
            return []
        found: list[Denial] = await asyncio.to_thread(self.network.denied)
        out = []
        for denial in found:
            key = (denial.instance, denial.destination)
            before = self._seen.get(key, 0)
            if denial.packets > before:
                out.append(NewDenial(denial.instance, denial.destination, denial.packets - before))
            self._seen[key] = denial.packets
        return out

    def _endpoints(self, service: str) -> Sequence[tuple[str, int]]:
        if self.internal is not None:
            return self.internal(service)
        ports: Mapping[str, int] = self.network.ports
        return [
            (slot.address, ports[instance])
            for instance, slot in self.network.slots.items()
            if instance.rpartition("_")[0].rpartition("-")[0] == service and instance in ports
        ]
