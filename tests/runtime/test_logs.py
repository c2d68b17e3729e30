"""Log lines are classified by level the way programs actually write them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlifier.runtime.logs import (
    MAX_LINE,
    READ_AT_ONCE,
    SLICE,
    TELL_AT_ONCE,
    LogFile,
    OutputTail,
    classify,
)
from sqlifier.runtime.supervisor import Supervisor
from sqlifier.stack import load_stack
from tests.apps import APP


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


def test_polling_off_the_loop_classifies_on_a_worker_and_tells_on_the_loop(tmp_path: Path) -> None:
    out = tmp_path / "web-0.out"
    out.write_bytes(b"ERROR one\nINFO two\n")
    seen: list[tuple[str, threading.Thread]] = []
    told: list[tuple[list[tuple[str, str]], threading.Thread]] = []

    def redact(line: str) -> str:
        seen.append((line, threading.current_thread()))
        return line

    log = LogFile(
        tmp_path / "web-0.log",
        redact=redact,
        on_lines=lambda _, pairs: told.append((pairs, threading.current_thread())),
    )
    tail = OutputTail(out, log)
    assert asyncio.run(tail.poll_off_loop(1.0)) == 2
    loop_thread = threading.current_thread()  # asyncio.run's loop runs on this thread
    assert [line for line, _ in seen] == ["ERROR one", "INFO two"]
    assert all(thread is not loop_thread for _, thread in seen)
    assert told == [([("error", "ERROR one"), ("info", "INFO two")], loop_thread)]
    assert log.counts == {"error": 1, "info": 1}


def test_the_supervisor_reads_output_off_its_event_loop(tmp_path: Path) -> None:
    # A real instance's output: masked and classified on a worker thread, counted for the
    # signals on the loop's thread.
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "sqlifier.toml").write_text(
        f'[stack]\nname = "t"\n\n[services.web]\nrun = "{sys.executable} app.py"\n'
        'probes.readiness = { http = "/", period = "100ms" }\n'
    )
    stack, _ = load_stack(tmp_path / "sqlifier.toml")
    masked: list[tuple[str, threading.Thread]] = []
    counted: list[tuple[str, threading.Thread]] = []

    def redact(line: str) -> str:
        masked.append((line, threading.current_thread()))
        return line

    def on_lines(service: str, when: float, pairs: list[tuple[str, str]]) -> None:
        counted.extend((line, threading.current_thread()) for _, line in pairs)

    async def main() -> None:
        supervisor = Supervisor(
            stack, "dev", tmp_path / ".sqlifier" / "dev", on_lines=on_lines, redactor=redact
        )
        try:
            await supervisor.start(ready_timeout=20)
            for _ in range(200):
                if counted:
                    break
                await asyncio.sleep(0.05)
        finally:
            await supervisor.stop()

    asyncio.run(main())
    loop_thread = threading.current_thread()
    listening = [t for line, t in masked if line.startswith("INFO listening")]
    assert listening and all(t is not loop_thread for t in listening)
    assert [t for line, t in counted if line.startswith("INFO listening")] == [loop_thread]


def test_a_worker_pauses_every_slice_and_the_loop_is_told_in_pieces(tmp_path: Path) -> None:
    # The worker lets the event loop's thread have the interpreter every SLICE lines; the
    # loop hands the lines to the signals TELL_AT_ONCE at a time, letting others in between.
    out = tmp_path / "web-0.out"
    out.write_bytes(b"INFO line\n" * 1200)
    told: list[int] = []
    log = LogFile(tmp_path / "web-0.log", on_lines=lambda _, pairs: told.append(len(pairs)))
    tail = OutputTail(out, log)
    assert asyncio.run(tail.poll_off_loop(1.0)) == 1200
    assert told == [TELL_AT_ONCE, TELL_AT_ONCE, 1200 - 2 * TELL_AT_ONCE]
    pauses: list[int] = []
    log.append(1.0, "out", ["x"] * (2 * SLICE + 1), pause=lambda: pauses.append(1))
    assert len(pauses) == 3  # before lines 0, SLICE and 2 * SLICE
