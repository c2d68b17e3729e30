"""`memory()` and `cpu()` against a service's limits: the samplers record each as a share of
`resources` (a real supervisor, real processes), and a rule compares them as percentages;
a service without limits has no share (no data), and `cpu()` alone is unchanged."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sqlifier.engine.compiled import compile_rule
from sqlifier.engine.series import SeriesStore
from sqlifier.lang import Source, check, parse_source
from sqlifier.runtime.supervisor import Supervisor
from sqlifier.signals.samplers import Samplers
from sqlifier.stack import load_stack
from tests.runtime.test_supervisor import service, write_stack


def test_memory_and_cpu_are_read_as_shares_of_the_limits(tmp_path: Path) -> None:
    services = service("web", 'resources = { cpu = "250m", memory = "512Mi" }') + service("api")
    stack, _ = load_stack(write_stack(tmp_path, services))
    seen: dict[str, float | None] = {}

    async def main() -> None:
        supervisor = Supervisor(stack, "dev", tmp_path / ".sqlifier" / "dev")
        store = SeriesStore()
        samplers = Samplers(store, supervisor)
        try:
            await supervisor.start(ready_timeout=20)
            deadline = time.monotonic() + 20
            while store.level("web", "cpu", time.time()) is None:
                assert time.monotonic() < deadline
                samplers.step(time.time())
                await asyncio.sleep(0.25)
            t = time.time()
            for key in ("cpu", "cpu_share", "memory", "memory_share"):
                seen[f"web.{key}"] = store.level("web", key, t)
                seen[f"api.{key}"] = store.level("api", key, t)
        finally:
            await supervisor.stop()

    asyncio.run(main())
    memory, share = seen["web.memory"], seen["web.memory_share"]
    assert memory is not None and share == memory / (512 << 20)
    cpu, cpu_share = seen["web.cpu"], seen["web.cpu_share"]
    assert cpu is not None and cpu_share == cpu / 0.25
    assert seen["api.memory"] is not None and seen["api.memory_share"] is None  # no limit
    assert seen["api.cpu"] is not None and seen["api.cpu_share"] is None


def test_rules_read_the_shares_by_their_syntax() -> None:
    text = (
        "RULE m ON memory() > 80% DO RESTART service.name;\n"
        "RULE c ON cpu(of = 'limit') > 90% DO RESTART service.name;\n"
        "RULE h ON high_cpu(>90%, of = 'limit') DO RESTART service.name;\n"
        "RULE p ON cpu() > 90% DO RESTART service.name;\n"
        "RULE b ON memory() > 512MiB DO RESTART service.name;\n"
    )
    source = Source(text, "r.sql")
    parsed, diagnostics = parse_source(source)
    assert diagnostics == []
    assert [d for d in check([(source, parsed)], None) if d.is_error] == []
    keys = [compile_rule(rule, "r.sql").tests[0].key for rule in parsed.rules]
    assert keys == ["memory_share", "cpu_share", "cpu_share", "cpu", "memory"]


def test_of_takes_limit_only() -> None:
    source = Source("RULE c ON cpu(of = 'request') > 90% DO RESTART service.name;\n", "r.sql")
    parsed, _ = parse_source(source)
    errors = [d.message for d in check([(source, parsed)], None) if d.is_error]
    assert errors == ["'request' is not a valid of for cpu(); valid: limit"]
