"""Log lines are classified by level the way programs actually write them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlifier.runtime.logs import (
    MAX_LINE,
    READ_AT_ONCE,
    SLICE,
    LogFile,
    OutputTail,
    classify,
)
from sqlifier.runtime.supervisor import Supervisor
from sqlifier.stack import load_stack


@pytest.mark.parametrize(
    ("line", "level"),
    [
        ('{"level": "error", "msg": "db down"}', "error"),
        ('{"severity": "CRITICAL", "message": "payment failed"}', "critical"),
        ('{"levelname": "WARNING", "message": "slow"}', "warn"),
        ('{"level": 50, "msg": "pino error"}', "error"),
        ('{"level": 60, "msg": "pino fatal"}', "critical"),
        ('{"level": 30, "msg": "pino info"}', "info"),
        ('{"msg": "no level"}', "info"),
        ("time=2026-01-01T00:00:00Z level=warn msg=slow", "warn"),
        ('ts=1 level="error" msg="x"', "error"),
        ("ERROR something broke", "error"),
        ("CRITICAL payment gateway unreachable", "critical"),
        ("WARN disk at 91%", "warn"),
        ("[error] nginx-style", "error"),
        ("<warning> bracketed", "warn"),
        ("ERROR:root:python logging default format", "error"),
        ("2026-11-26 14:30:00,123 CRITICAL checkout failed", "critical"),
        ("2026-11-26T14:30:00Z DEBUG cache miss", "debug"),
        ("FATAL: out of memory", "critical"),
        ("GET /health 200", "info"),
        ("error rate is fine", "info"),
        ("error: connection refused", "error"),
        ("errors: 0", "info"),
        ("", "info"),
        ("{not json", "info"),
    ],
)
def test_classify(line: str, level: str) -> None:
    assert classify(line) == level


def test_log_file_writes_json_lines_with_levels(tmp_path: Path) -> None:
    log = LogFile(tmp_path / "web-0.log")
    assert log.write(1.5, "stdout", "INFO started") == "info"
    assert log.write(2.0, "stderr", "CRITICAL payment failed") == "critical"
    records = [json.loads(x) for x in (tmp_path / "web-0.log").read_text().splitlines()]
    assert records == [
        {"t": 1.5, "stream": "stdout", "level": "info", "line": "INFO started"},
        {"t": 2.0, "stream": "stderr", "level": "critical", "line": "CRITICAL payment failed"},
    ]
    assert log.counts == {"info": 1, "critical": 1}


def test_records_are_written_as_json_dumps_writes_them(tmp_path: Path) -> None:
    lines = [
        'quote " backslash \\ tab \t',
        "control \x01\x1f and DEL \x7f",
        "unicode: café ✓ 日本 \U0001f680",
        "\u2028 line separator \u2029",
        '{"level": "error", "msg": "nested \\"quotes\\""}',
        "",
    ]
    log = LogFile(tmp_path / "web-0.log")
    log.write_many(1700000000.1234567, "out", lines)
    log.write_many(7, "err", ["an int time"])
    written = (tmp_path / "web-0.log").read_text(encoding="utf-8")
    expected = [
        json.dumps(
            {"t": round(when, 3), "stream": stream, "level": classify(line), "line": line},
            ensure_ascii=False,
        )
        for when, stream, line in [(1700000000.1234567, "out", x) for x in lines]
        + [(7, "err", "an int time")]
    ]
    assert written.split("\n") == [*expected, ""]


def test_log_file_rotates_by_size_and_keeps_a_few(tmp_path: Path) -> None:
    log = LogFile(tmp_path / "web-0.log", max_bytes=200, keep=2)
    for i in range(40):
        log.write(float(i), "stdout", f"line {i:02d} " + "x" * 20)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["web-0.log", "web-0.log.1", "web-0.log.2"]
    assert all(p.stat().st_size <= 200 for p in tmp_path.iterdir())
    last = json.loads((tmp_path / "web-0.log").read_text().splitlines()[-1])
    assert last["line"].startswith("line 39")


def test_a_write_that_fails_drops_the_line_and_counts_it(tmp_path: Path) -> None:
    # A full disk cannot be made here without privileges over mounts; a path whose parent
    # is a file fails the same way (OSError on open), which is what the writer handles.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    log = LogFile(blocker / "web-0.log")
    assert log.write(1.0, "stdout", "ERROR lost") == "error"
    assert log.dropped == 1
    assert log.counts == {"error": 1}


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB tmpfs (needs root to mount; skipped otherwise)."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_a_full_disk_drops_lines_and_the_writer_carries_on(full_disk: Path) -> None:
    log = LogFile(full_disk / "web-0.log", max_bytes=10 * 1024 * 1024)
    for i in range(2000):
        log.write(float(i), "stdout", f"ERROR line {i} " + "x" * 60)
    assert log.dropped > 0
    assert log.counts["error"] == 2000
    assert (full_disk / "web-0.log").stat().st_size <= 64 * 1024


def test_an_unfinished_last_line_is_written_when_the_process_ends(tmp_path: Path) -> None:
    out = tmp_path / "web-0.out"
    out.write_bytes(b"begin\ndying without newline")
    tail = OutputTail(out, LogFile(tmp_path / "web-0.log"))
    assert tail.poll(1.0) == 1
    tail.flush(2.0)
    out.write_bytes(b"next life\n")  # a new process appends after the old one's end
    tail.poll(3.0)
    lines = [json.loads(x)["line"] for x in (tmp_path / "web-0.log").read_text().splitlines()]
    assert lines == ["begin", "dying without newline", "next life"]


def test_a_huge_line_is_cut_once(tmp_path: Path) -> None:
    out = tmp_path / "web-0.out"
    out.write_bytes(b"x" * 200_000 + b"\nafter\n")
    tail = OutputTail(out, LogFile(tmp_path / "web-0.log"))
    while tail.poll(1.0):
        pass
    lines = [json.loads(x)["line"] for x in (tmp_path / "web-0.log").read_text().splitlines()]
    assert len(lines) == 2
    assert lines[0].endswith(" [line cut]") and len(lines[0]) == MAX_LINE + len(" [line cut]")
    assert lines[1] == "after"


def test_a_flood_is_read_in_bounded_pieces_and_an_old_backlog_skipped(tmp_path: Path) -> None:
    out = tmp_path / "web-0.out"
    out.write_bytes(b"ERROR flood line\n" * 600_000)  # about 10 MB
    tail = OutputTail(out, LogFile(tmp_path / "web-0.log", max_bytes=100 * 1024 * 1024))
    assert tail.poll(1.0) <= READ_AT_ONCE // len(b"ERROR flood line\n") + 1
    assert tail.skipped > 0


def test_polling_in_slices_lets_the_event_loop_run_between_them(tmp_path: Path) -> None:
    out = tmp_path / "web-0.out"
    out.write_bytes(b"ERROR one\n" + b"INFO more\n" * (2 * SLICE))
    ticks = 0
    told: list[tuple[int, int]] = []  # (lines, ticks of the other task so far)
    log = LogFile(
        tmp_path / "web-0.log", on_lines=lambda _, pairs: told.append((len(pairs), ticks))
    )
    tail = OutputTail(out, log)

    async def other() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async def main() -> int:
        task = asyncio.create_task(other())
        await asyncio.sleep(0)
        try:
            return await tail.poll_in_slices(1.0)
        finally:
            task.cancel()

    assert asyncio.run(main()) == 2 * SLICE + 1
    assert [n for n, _ in told] == [SLICE, SLICE, 1]
    assert told[0][1] < told[1][1] < told[2][1]  # the other task ran between the slices
    assert log.counts == {"error": 1, "info": 2 * SLICE}


def test_the_supervisor_hands_a_burst_of_output_on_in_slices(tmp_path: Path) -> None:
    # A real instance that prints 1,000 lines at once: its supervisor masks, classifies
    # and counts them a slice at a time, never the whole burst in one go.
    (tmp_path / "app.py").write_text(
        "import sys, time\n"
        "sys.stdout.write('INFO burst\\n' * 1000)\n"
        "sys.stdout.flush()\n"
        "time.sleep(60)\n"
    )
    (tmp_path / "sqlifier.toml").write_text(
        f'[stack]\nname = "t"\n\n[services.web]\nrun = "{sys.executable} app.py"\n'
    )
    stack, _ = load_stack(tmp_path / "sqlifier.toml")
    batches: list[int] = []

    def on_lines(service: str, when: float, pairs: list[tuple[str, str]]) -> None:
        batches.append(len(pairs))

    async def main() -> None:
        supervisor = Supervisor(stack, "dev", tmp_path / ".sqlifier" / "dev", on_lines=on_lines)
        try:
            await supervisor.start(ready_timeout=20)
            for _ in range(200):
                if sum(batches) >= 1000:
                    break
                await asyncio.sleep(0.05)
        finally:
            await supervisor.stop()

    asyncio.run(main())
    assert sum(batches) == 1000
    assert max(batches) <= SLICE


def test_a_flush_between_two_slices_keeps_the_lines_in_order(tmp_path: Path) -> None:
    out = tmp_path / "web-0.out"
    out.write_bytes(b"".join(b"line %d\n" % i for i in range(2 * SLICE)))
    tail = OutputTail(out, LogFile(tmp_path / "web-0.log"))

    async def main() -> None:
        polling = asyncio.create_task(tail.poll_in_slices(1.0))
        await asyncio.sleep(0)  # the first slice is written
        with out.open("ab") as handle:
            handle.write(b"last line")  # the process ends: unfinished last line
        tail.flush(2.0)
        await polling

    asyncio.run(main())
    lines = [json.loads(x)["line"] for x in (tmp_path / "web-0.log").read_text().splitlines()]
    assert lines == [f"line {i}" for i in range(2 * SLICE)] + ["last line"]
