"""Network isolation on the real kernel: namespaces, veth pairs on the stack's bridge,
nftables rules. An isolated instance reaches what its egress allows (another service of
the stack, a port of an outside host stood in for by a namespace the test creates) and
nothing else; what it was denied is counted, logged with its destination and becomes
`egress_denied()` events; the router reaches isolated instances on both data planes; and
nothing is left behind."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sqlifier.engine.series import SeriesStore
from sqlifier.lang.checker import check
from sqlifier.lang.parser import parse
from sqlifier.lang.source import Source
from sqlifier.runtime.fence import Fence
from sqlifier.runtime.instance import Event
from sqlifier.runtime.netns import Allow, IsolationError, StackNetwork, enter_namespace
from sqlifier.runtime.supervisor import Supervisor
from sqlifier.signals.samplers import Samplers
from sqlifier.stack import load_stack
from sqlifier.stack.model import Egress, Isolation, Service
from tests.apps import APP
from tests.isolation.nets import CALL_APP, REASON, leftovers, outside

pytestmark = pytest.mark.skipif(REASON is not None, reason=f"cannot isolate here: {REASON}")


def fetch(host: str, port: int, path: str = "/") -> str:
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as response:
        return str(response.read().decode())


def stack_file(root: Path, web_egress: str) -> Path:
    (root / "call.py").write_text(CALL_APP)
    (root / "app.py").write_text(APP)
    ready = 'probes.readiness = { http = "/", period = "100ms" }'
    path = root / "sqlifier.toml"
    path.write_text(
        f'[stack]\nname = "t"\n'
        f'[services.web]\nrun = "{sys.executable} call.py"\n{ready}\n'
        f'isolation = "network"\negress = {web_egress}\n'
        f'[services.orders]\nrun = "{sys.executable} app.py"\n{ready}\nisolation = "network"\n'
        f'[services.payments]\nrun = "{sys.executable} app.py"\n{ready}\nisolation = "network"\n'
    )
    return path


def test_an_isolated_instance_reaches_only_what_its_egress_allows(tmp_path: Path) -> None:
    events: list[Event] = []
    denied: list[tuple[str, str, int]] = []
    store = SeriesStore()
    sideways_to: list[str] = []
    with outside(9000, 9001) as far:
        stack, diagnostics = load_stack(stack_file(tmp_path, f'["orders", "{far}:9000"]'))
        assert not [d for d in diagnostics if d.is_error]
        state = tmp_path / ".sqlifier" / "dev"

        async def main() -> None:
            supervisor = Supervisor(stack, "dev", state, on_event=events.append)
            samplers = Samplers(store, supervisor)

            def on_denied(service: str, t: float, where: str, count: int) -> None:
                denied.append((service, where, count))
                samplers.on_denied(service, t, where, count)

            supervisor.on_denied = on_denied
            try:
                await supervisor.start(ready_timeout=20)
                web, orders, payments = (supervisor.instances[n][0] for n in stack.services)
                assert web.host.startswith("10.") and web.host != orders.host
                call = lambda host, port: fetch(web.host, web.port, f"/call/{host}/{port}")  # noqa: E731
                answer = await asyncio.to_thread(call, orders.host, orders.port)
                assert answer == "ok HTTP/1.0 200 OK", answer
                assert await asyncio.to_thread(call, far, 9000) == "ok outside:9000"
                refused = await asyncio.to_thread(call, far, 9001)
                assert refused.startswith("failed"), refused
                sideways = await asyncio.to_thread(call, payments.host, payments.port)
                assert sideways.startswith("failed"), sideways
                sideways_to.append(f"{payments.host}:{payments.port}")
                for _ in range(40):
                    if len(denied) >= 2:
                        break
                    await asyncio.sleep(0.1)
            finally:
                await supervisor.stop()

        asyncio.run(main())
    assert sorted(denied) == sorted([("web", f"{far}:9001", 1), ("web", sideways_to[0], 1)])
    # The signal rules read: one event per denied connection, its destination its text.
    assert store.count("web", "egress_denied", 0, time.time() + 1) == 2
    assert store.count("web", "egress_denied", 0, time.time() + 1, match=re.compile(":9001$")) == 1
    reasons = [e.reason for e in events if e.state == "egress-denied"]
    assert any(f"to {far}:9001 denied" in reason for reason in reasons), reasons
    assert leftovers(StackNetwork(state).digest) == []


def test_denials_are_counted_per_destination_by_nftables(tmp_path: Path) -> None:
    net = StackNetwork(tmp_path / "state")
    try:
        with outside(9000, 9001) as far:
            slot = net.attach("web-0_5000", 5000, [Allow(f"{far}/32", 9000)])
            code = (
                "import socket\n"
                f"for port in (9000, 9001, 9001):\n"
                "    try:\n"
                f"        socket.create_connection(('{far}', port), timeout=3).close()\n"
                "        print('ok', port)\n"
                "    except OSError as exc:\n"
                "        print('failed', port, exc.errno)\n"
            )
            out = _in_namespace(slot.path, code)
            assert out.splitlines()[0] == "ok 9000"
            assert [line.split()[:2] for line in out.splitlines()[1:]] == [
                ["failed", "9001"],
                ["failed", "9001"],
            ]
            [denial] = net.denied()
            assert (denial.instance, denial.destination, denial.packets) == (
                "web-0_5000",
                f"{far}:9001",
                2,
            )
            assert 'log prefix "sqlifier egress denied: "' in net.render()
    finally:
        net.teardown()
    assert leftovers(net.digest) == []


def test_an_instance_cannot_take_another_address_on_the_bridge(tmp_path: Path) -> None:
    net = StackNetwork(tmp_path / "state")
    try:
        with outside(9000) as far:
            allowed = net.attach("web-0_5000", 5000, [Allow(f"{far}/32", 9000)])
            other = net.attach("jobs-0_5001", 5001, [])
            # jobs-0 takes web-0's address and tries web-0's allowance: dropped at the bridge.
            code = (
                "import socket, subprocess\n"
                f"subprocess.run(['ip', 'addr', 'add', '{allowed.address}/32', 'dev', 'eth0'], check=True)\n"
                "s = socket.socket(); s.settimeout(2)\n"
                f"s.bind(('{allowed.address}', 0))\n"
                "try:\n"
                f"    s.connect(('{far}', 9000)); print('ok')\n"
                "except OSError as exc:\n"
                "    print('failed', exc)\n"
            )
            assert _in_namespace(other.path, code).startswith("failed")
    finally:
        net.teardown()


def _in_namespace(path: Path, code: str) -> str:
    done = subprocess.run(
        [*enter_namespace(path), sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout


def test_egress_denied_is_a_signal_rules_can_use() -> None:
    text = "ON egress_denied(service='web') > 0\nDO RESTART 'web';\n"
    source = Source(text, "rules/egress.sql")
    rules, problems = parse(source)
    assert problems == []
    assert check([(source, rules)], ["web"]) == []


def test_a_new_agent_finds_the_namespaces_and_addresses_kept_in_state(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = StackNetwork(state)
    try:
        slot = first.attach("web-0_5000", 5000, [Allow("198.51.100.0/24", 443)], ["orders"])
        inode = slot.path.stat().st_ino
        # The agent that follows reads network.json: same slot, same namespace, same rules.
        second = StackNetwork(state)
        assert second.address_of("web-0_5000") == slot.address
        assert (
            second.attach("web-0_5000", 5000, [Allow("198.51.100.0/24", 443)], ["orders"]) == slot
        )
        assert slot.path.stat().st_ino == inode
        assert second.render() == first.render()
        second.detach("web-0_5000")  # the last instance: everything goes
        assert leftovers(second.digest) == []
    finally:
        first.teardown()


def test_instances_starting_side_by_side_get_their_own_slots(tmp_path: Path) -> None:
    net = StackNetwork(tmp_path / "state")
    try:
        with ThreadPoolExecutor(4) as pool:
            slots = list(
                pool.map(lambda n: net.attach(f"web-{n}_{5000 + n}", 5000 + n, []), range(4))
            )
        assert len({slot.address for slot in slots}) == 4
        assert all(slot.path.exists() for slot in slots)
    finally:
        net.teardown()
    assert leftovers(net.digest) == []


def test_an_egress_host_that_does_not_resolve_keeps_the_instance_from_starting(
    tmp_path: Path,
) -> None:
    fence = Fence(tmp_path / "state")
    service = Service(
        "web",
        "true",
        tmp_path,
        isolation=Isolation.NETWORK,
        egress=(Egress("host", "no-such-host.invalid", 443),),
    )
    try:
        with pytest.raises(IsolationError) as caught:
            asyncio.run(fence.prepare("web-0_5000", service, 5000, None))
        assert str(caught.value).startswith("egress host 'no-such-host.invalid' cannot be resolved")
    finally:
        fence.teardown()
    assert leftovers(fence.network.digest) == []


def test_a_service_by_name_is_allowed_where_the_data_plane_listens_for_it(tmp_path: Path) -> None:
    # How the data plane's internal listeners are wired: `internal` says where a service
    # is reached from a namespace; the rules follow it when told to refresh.
    where = {"orders": [("10.1.2.3", 7001)]}
    fence = Fence(tmp_path / "state", internal=lambda name: where.get(name, []))
    service = Service("web", "true", tmp_path, isolation=Isolation.NETWORK,
                      egress=(Egress("service", "orders"),))  # fmt: skip
    try:
        asyncio.run(fence.prepare("web-0_5000", service, 5000, None))
        table = subprocess.run(
            ["nft", "list", "table", "inet", fence.network.table],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert "ip daddr 10.1.2.3 tcp dport 7001 accept" in table
        where["orders"] = [(fence.network.host, 7002)]
        asyncio.run(fence.refresh())
        table = subprocess.run(
            ["nft", "list", "table", "inet", fence.network.table],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert f"ip daddr {fence.network.host} tcp dport 7002 accept" in table
        assert "10.1.2.3" not in table
    finally:
        fence.teardown()
