"""Network isolation: each instance of an isolated service in a network namespace of its
own, egress denied unless the stack file allows it.

The layout, per stack and environment (a short digest of the state folder names
everything, so two stacks on one machine never share a device or a table):

```
 host ─ bridge sqb<d> 10.N.0.1/16 ─┬─ veth sqv<d><n> ══ eth0 10.N.x.y  (namespace sq<d>-<n>)
        (the data plane's internal  ├─ veth ...        ══ eth0 ...
         listeners bind here too)   └─ ...
```

- The router reaches an instance at its namespace address and port. An instance that
  listens on 127.0.0.1 is reached too: inside its namespace, connections arriving on
  eth0 to its port are redirected to 127.0.0.1 (DNAT, with `route_localnet`).
- Bridge ports are *isolated*: instances never talk to each other across the bridge;
  everything they send reaches the host, where the table `inet sqlifier_<d>` decides.
  A bridge table drops frames whose source address is not the port's own, so an
  instance cannot borrow another's address (and with it its allowances).
- Allowed: what the service's `egress` lists, by source address. Everything else an
  instance opens is rejected, counted in the dynamic set `denied` (source, destination,
  port → packets) and logged by the kernel with the prefix `sqlifier egress denied`.
  `denied()` reads the set; the agent turns it into the `egress_denied()` signal.
- Outside destinations are reached through the host's routing (forwarding on, the
  instances' addresses masqueraded).

The addresses given out are kept in `network.json` in the state folder, so an agent
that adopts running instances finds the namespaces it made and the router keeps its
targets. `teardown()` removes the namespaces, veths, bridge and tables.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlifier.errors import UserError
from sqlifier.stack.model import Egress

__all__ = [
    "Allow",
    "Denial",
    "IsolationError",
    "Slot",
    "StackNetwork",
    "cannot_isolate",
    "enter_namespace",
    "resolve_allowances",
]

_NETNS_DIR = Path("/run/netns")
_DENY_PREFIX = "sqlifier egress denied: "


class IsolationError(UserError):
    """Isolation cannot be set up here (no root, no namespaces, no nft); the message says
    which and what to do."""


@dataclass(frozen=True, slots=True)
class Allow:
    """One destination an instance may open: an address or network, and a port."""

    network: str  # "10.0.0.0/8", "192.0.2.7/32"
    port: int

    def __str__(self) -> str:
        return f"{self.network}:{self.port}"


@dataclass(frozen=True, slots=True)
class Slot:
    """An instance's place on the stack's bridge."""

    number: int
    address: str  # its namespace's address, where the router reaches it
    netns: str  # the namespace's name (`ip netns`), its file under /run/netns
    veth: str  # the host's end of its veth pair

    @property
    def path(self) -> Path:
        return _NETNS_DIR / self.netns


@dataclass(frozen=True, slots=True)
class Denial:
    """Connections an instance opened that the rules rejected, to one destination."""

    instance: str  # the instance id, or the source address when none holds it now
    destination: str  # "192.0.2.7:5432"
    packets: int


def cannot_isolate() -> str | None:
    """Why instances cannot be isolated here, or None when they can."""
    if os.geteuid() != 0:
        return "network isolation needs root (network namespaces, veth pairs, nftables)"
    if not Path("/proc/self/ns/net").exists():
        return "this kernel has no network namespaces"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables"), ("nsenter", "util-linux")):
        if shutil.which(tool) is None:
            return f"network isolation needs the {tool!r} command (Debian package {package})"
    return None


def enter_namespace(path: Path, account: tuple[int, int] | None = None) -> list[str]:
    """The command that runs the rest of an argument list in the namespace at `path`
    (and as `account`, uid and gid, supplementary groups dropped). `nsenter` execs the
    command in its own place: the pid is the instance's. Done by a command rather than
    in the child between fork and exec, which is unsafe in the agent's threads."""
    argv = ["nsenter", f"--net={path}"]
    if account is not None:
        argv += ["--setuid", str(account[0]), "--setgid", str(account[1])]
    return [*argv, "--"]


@dataclass
class StackNetwork:
    """The bridge, namespaces and rules of one stack's isolated instances."""

    state_dir: Path
    runner: Callable[[list[str], str | None], str] | None = None
    slots: dict[str, Slot] = field(default_factory=dict)  # instance id -> its slot
    allowed: dict[str, tuple[Allow, ...]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)  # instance id -> its port
    forwarding_was: str | None = None  # the host's ip_forward before the bridge was made
    reach: dict[str, tuple[str, ...]] = field(default_factory=dict)  # services by name
    endpoints: Callable[[str], Iterable[tuple[str, int]]] | None = None

    def __post_init__(self) -> None:
        digest = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()
        self.digest = digest[:8]
        self.octet = 100 + int(digest[8:12], 16) % 150  # 10.100-249.0.0/16
        self.bridge = f"sqb{self.digest}"
        self.table = f"sqlifier_{self.digest}"
        self.file = self.state_dir / "network.json"
        # Instances start side by side (each in a thread): one change at a time.
        self._lock = threading.RLock()
        self._load()

    # --- what it is -------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The bridge's own address: what instances reach the host at."""
        return f"10.{self.octet}.0.1"

    @property
    def subnet(self) -> str:
        return f"10.{self.octet}.0.0/16"

    def address_of(self, instance_id: str) -> str | None:
        slot = self.slots.get(instance_id)
        return slot.address if slot else None

    # --- instances ----------------------------------------------------------------------

    def ensure_bridge(self) -> str:
        """The bridge, made if missing; its address (where instances reach the host, and
        where the data plane's internal listeners bind for them)."""
        with self._lock:
            self._bridge()
            return self.host

    def attach(
        self,
        instance_id: str,
        port: int,
        allowed: Iterable[Allow],
        services: Iterable[str] = (),
        endpoints: Callable[[str], Iterable[tuple[str, int]]] | None = None,
    ) -> Slot:
        """An instance's namespace, wired to the bridge, its egress rules in force: made,
        or the one it had (an adopted instance keeps its address). `services` it may
        call by name are reached at `endpoints(name)`, looked up whenever the rules are
        written (instances of those services come and go)."""
        with self._lock:
            if endpoints is not None:
                self.endpoints = endpoints
            self.reach[instance_id] = tuple(services)
            self._bridge()
            slot = self.slots.get(instance_id)
            if slot is None or not slot.path.exists():
                slot = slot or self._free_slot()
                self._namespace(slot, port)
                self.slots[instance_id] = slot
            self.allowed[instance_id] = tuple(allowed)
            self.ports[instance_id] = port
            self._save()
            self._rules()
            return slot

    def refresh(self) -> None:
        """The rules written again: where the services named in `egress` are reached
        changed (`endpoints` answers differently)."""
        with self._lock:
            if self.slots:
                self._rules()

    def detach(self, instance_id: str) -> None:
        """The instance stopped: its namespace, veth and rules go."""
        with self._lock:
            slot = self.slots.pop(instance_id, None)
            self.allowed.pop(instance_id, None)
            self.ports.pop(instance_id, None)
            self.reach.pop(instance_id, None)
            if slot is None:
                return
            self._quiet(["ip", "link", "del", slot.veth])
            self._quiet(["ip", "netns", "del", slot.netns])
            self._save()
            if self.slots:
                self._rules()
            else:
                self.teardown()

    def teardown(self) -> None:
        """Everything this stack's isolation made, gone (what is not there is skipped)."""
        with self._lock:
            for slot in self.slots.values():
                self._quiet(["ip", "link", "del", slot.veth])
                self._quiet(["ip", "netns", "del", slot.netns])
            self.slots.clear()
            self.allowed.clear()
            self.ports.clear()
            self.reach.clear()
            # Namespaces a crashed agent left behind, by their name.
            if _NETNS_DIR.is_dir():
                for path in _NETNS_DIR.glob(f"sq{self.digest}-*"):
                    self._quiet(["ip", "netns", "del", path.name])
            self._quiet(["ip", "link", "del", self.bridge])
            if self.forwarding_was == "0" and not list(Path("/sys/class/net").glob("sqb*")):
                Path("/proc/sys/net/ipv4/ip_forward").write_text("0\n")
            self.forwarding_was = None
            self._quiet(["nft", "delete", "table", "inet", self.table])
            self._quiet(["nft", "delete", "table", "bridge", self.table])
            with contextlib.suppress(FileNotFoundError):
                self.file.unlink()

    # --- what it rejected ---------------------------------------------------------------

    def denied(self) -> list[Denial]:
        """Per instance and destination, the packets rejected so far (a new connection is
        one packet; retries count again)."""
        with self._lock:
            try:
                text = self._run(["nft", "-j", "list", "set", "inet", self.table, "denied"])
            except IsolationError:
                return []
            by_address = {slot.address: instance for instance, slot in self.slots.items()}
            found = []
            for item in json.loads(text).get("nftables", []):
                for element in item.get("set", {}).get("elem", []):
                    value = element.get("elem", element)
                    parts = value.get("val", {}).get("concat", [])
                    counter = value.get("counter", {})
                    if len(parts) != 3:
                        continue
                    source, destination, port = parts
                    instance = by_address.get(str(source), str(source))
                    found.append(
                        Denial(instance, f"{destination}:{port}", int(counter.get("packets", 0)))
                    )
            return found

    # --- the bridge and the rules ------------------------------------------------------

    def _bridge(self) -> None:
        if Path(f"/sys/class/net/{self.bridge}").exists():
            return
        self._run(["ip", "link", "add", self.bridge, "type", "bridge"])
        self._run(["ip", "addr", "add", f"{self.host}/16", "dev", self.bridge])
        self._run(["ip", "link", "set", self.bridge, "up"])
        Path(f"/proc/sys/net/ipv4/conf/{self.bridge}/send_redirects").write_text("0\n")
        # Outside destinations are reached through the host's routing; what it was is
        # put back when the last isolated stack goes.
        forwarding = Path("/proc/sys/net/ipv4/ip_forward")
        self.forwarding_was = self.forwarding_was or forwarding.read_text().strip()
        forwarding.write_text("1\n")
        self._save()

    def _namespace(self, slot: Slot, port: int) -> None:
        self._quiet(["ip", "netns", "del", slot.netns])
        self._quiet(["ip", "link", "del", slot.veth])
        peer = f"sqp{self.digest}{slot.number}"
        self._run(["ip", "netns", "add", slot.netns])
        self._run(["ip", "link", "add", slot.veth, "type", "veth", "peer", "name", peer])
        self._run(["ip", "link", "set", peer, "netns", slot.netns])
        self._run(["ip", "link", "set", slot.veth, "master", self.bridge])
        self._run(["ip", "link", "set", slot.veth, "type", "bridge_slave", "isolated", "on"])
        self._run(["ip", "link", "set", slot.veth, "up"])
        inside = ["ip", "-n", slot.netns]
        self._run([*inside, "link", "set", peer, "name", "eth0"])
        # A /32 and the host as the only neighbour: every packet, even to another
        # instance, goes through the host's rules (the bridge's ports are isolated).
        self._run([*inside, "addr", "add", f"{slot.address}/32", "dev", "eth0"])
        self._run([*inside, "link", "set", "eth0", "up"])
        self._run([*inside, "link", "set", "lo", "up"])
        self._run([*inside, "route", "add", self.host, "dev", "eth0"])
        self._run([*inside, "route", "add", "default", "via", self.host])
        self._run(
            ["ip", "netns", "exec", slot.netns, "sysctl", "-qw",
             # An instance listening on 127.0.0.1 is reached from the bridge too.
             "net.ipv4.conf.eth0.route_localnet=1",
             # A redirect from the host would send it around the rules.
             "net.ipv4.conf.all.accept_redirects=0",
             "net.ipv4.conf.eth0.accept_redirects=0"],
        )  # fmt: skip
        self._run(
            ["ip", "netns", "exec", slot.netns, "nft", "-f", "-"],
            "table ip sqlifier {\n"
            "  chain prerouting {\n"
            "    type nat hook prerouting priority dstnat; policy accept;\n"
            f'    iifname "eth0" tcp dport {port} dnat to 127.0.0.1\n'
            "  }\n"
            "}\n",
        )

    def _rules(self) -> None:
        """The host's tables for this stack, replaced as a whole in one transaction."""
        self._run(["nft", "-f", "-"], self.render())

    def render(self) -> str:
        """The nftables text of the stack's tables (public for tests and the docs)."""
        allow = []
        spoof = []
        for instance, slot in sorted(self.slots.items(), key=lambda item: item[1].number):
            spoof.append(f'    iifname "{slot.veth}" ether type ip ip saddr != {slot.address} drop')
            named = [
                Allow(f"{host}/32", port)
                for name in self.reach.get(instance, ())
                for host, port in (self.endpoints(name) if self.endpoints else ())
            ]
            for rule in dict.fromkeys([*self.allowed.get(instance, ()), *named]):
                allow.append(
                    f"    ip saddr {slot.address} ip daddr {rule.network} "
                    f"tcp dport {rule.port} accept"
                )
        lines = [
            f"table inet {self.table}",
            f"delete table inet {self.table}",
            f"table bridge {self.table}",
            f"delete table bridge {self.table}",
            f"table inet {self.table} {{",
            "  set denied {",
            "    type ipv4_addr . ipv4_addr . inet_service; flags dynamic; counter; size 65535;",
            "  }",
            "  chain input {",
            "    type filter hook input priority filter; policy accept;",
            f'    iifname "{self.bridge}" jump egress',
            "  }",
            "  chain forward {",
            "    type filter hook forward priority filter; policy accept;",
            f'    iifname "{self.bridge}" jump egress',
            f'    oifname "{self.bridge}" ct state established,related accept',
            f'    oifname "{self.bridge}" drop',
            "  }",
            "  chain egress {",
            "    ct state established,related accept",
            *allow,
            "    meta l4proto { tcp, udp } ct state new "
            "add @denied { ip saddr . ip daddr . th dport } "
            f'log prefix "{_DENY_PREFIX}" level warn',
            # A reset, not an ICMP error: TCP retries a SYN answered by ICMP until its
            # timeout, and each retry would count as another denied connection.
            "    meta l4proto tcp reject with tcp reset",
            "    reject with icmpx admin-prohibited",
            "  }",
            "  chain postrouting {",
            "    type nat hook postrouting priority srcnat; policy accept;",
            f'    ip saddr {self.subnet} oifname != "{self.bridge}" masquerade',
            "  }",
            "}",
            f"table bridge {self.table} {{",
            "  chain prerouting {",
            "    type filter hook prerouting priority filter; policy accept;",
            *spoof,
            "  }",
            "}",
        ]
        return "\n".join(lines) + "\n"

    # --- slots and their record ---------------------------------------------------------

    def _free_slot(self) -> Slot:
        taken = {slot.number for slot in self.slots.values()}
        number = next(n for n in range(2, 65_000) if n not in taken)
        address = str(ipaddress.ip_address(f"10.{self.octet}.0.0") + number)
        return Slot(number, address, f"sq{self.digest}-{number}", f"sqv{self.digest}{number}")

    def _load(self) -> None:
        try:
            data = json.loads(self.file.read_text())
        except (OSError, ValueError):
            return
        self.forwarding_was = data.get("forwarding_was")
        for instance, raw in data.get("slots", {}).items():
            with contextlib.suppress(KeyError, TypeError):
                self.slots[instance] = Slot(
                    int(raw["number"]), str(raw["address"]), str(raw["netns"]), str(raw["veth"])
                )
                self.allowed[instance] = tuple(
                    Allow(str(a["network"]), int(a["port"])) for a in raw.get("allowed", ())
                )
                self.reach[instance] = tuple(str(name) for name in raw.get("services", ()))
                if "port" in raw:
                    self.ports[instance] = int(raw["port"])

    def _save(self) -> None:
        data = {
            "bridge": self.bridge,
            "host": self.host,
            "forwarding_was": self.forwarding_was,
            "slots": {
                instance: {
                    "number": slot.number,
                    "address": slot.address,
                    "netns": slot.netns,
                    "veth": slot.veth,
                    "port": self.ports.get(instance),
                    "services": list(self.reach.get(instance, ())),
                    "allowed": [
                        {"network": a.network, "port": a.port}
                        for a in self.allowed.get(instance, ())
                    ],
                }
                for instance, slot in self.slots.items()
            },
        }
        self.file.parent.mkdir(parents=True, exist_ok=True)
        draft = self.file.with_suffix(".json.tmp")
        draft.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(draft, self.file)

    # --- commands -----------------------------------------------------------------------

    def _run(self, argv: list[str], stdin: str | None = None) -> str:
        if self.runner is not None:
            return self.runner(argv, stdin)
        try:
            done = subprocess.run(
                argv, input=stdin, capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise IsolationError(f"network isolation: {' '.join(argv)}: {exc}") from None
        if done.returncode != 0:
            detail = done.stderr.strip().splitlines()
            raise IsolationError(
                f"network isolation: {' '.join(argv)} failed: "
                + (detail[-1] if detail else f"exit code {done.returncode}")
            )
        return done.stdout

    def _quiet(self, argv: list[str]) -> None:
        with contextlib.suppress(IsolationError):
            self._run(argv)


def resolve_allowances(
    egress: Iterable[Egress], services: Callable[[str], Iterable[tuple[str, int]]]
) -> tuple[Allow, ...]:
    """A service's `egress` as addresses and ports: a service by name becomes the
    addresses its calls go to (`services(name)`), a host is resolved now (every IPv4
    address it has), a network is taken as written."""
    found: list[Allow] = []
    for entry in egress:
        if entry.kind == "service":
            found.extend(Allow(f"{host}/32", port) for host, port in services(entry.target))
        elif entry.port is not None and entry.kind == "host":
            found.extend(Allow(f"{address}/32", entry.port) for address in _resolve(entry.target))
        elif entry.port is not None:
            found.append(Allow(str(ipaddress.ip_network(entry.target, strict=False)), entry.port))
    return tuple(dict.fromkeys(found))


def _resolve(host: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        raise IsolationError(f"egress host {host!r} cannot be resolved: {exc}") from None
    return sorted({str(info[4][0]) for info in infos})
