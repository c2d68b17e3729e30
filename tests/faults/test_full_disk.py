"""A full disk under `.sqlifier/`: a real stack on a small tmpfs mounted for the test (the
tests run as root; without the right to mount they are skipped, saying so). Once the
filesystem is full, the controls still work: `ps` says so, `scale` and `down` act and are
audited (the audit log's reserve), log lines are dropped and counted, and the data plane
keeps routing though it cannot save its state."""

from __future__ import annotations

import contextlib
import errno
import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apps import APP
from tests.conftest import run_sqlifier
from tests.servers import free_port

SIZE = "24m"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    port = free_port()
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "sqlifier.toml").write_text(
        f'[stack]\nname = "t"\n\n[router]\nkind = "embedded"\nlisten = "127.0.0.1:{port}"\n\n'
        f'[services.web]\nrun = "{sys.executable} app.py"\nroutes = ["/"]\n'
        'probes.readiness = { http = "/", period = "200ms" }\n'
    )
    state = tmp_path / ".sqlifier"
    state.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(state)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"a small tmpfs cannot be mounted here: {mounted.stderr.strip()}")
    try:
        yield tmp_path, port
    finally:
        run_sqlifier("down", cwd=tmp_path)
        subprocess.run(["umount", "-l", str(state)], check=False)


def fill(folder: Path) -> None:
    """Write a file until the filesystem has not a byte left."""
    with (folder / "filler").open("wb", buffering=0) as out:
        for size in (1 << 20, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * size)
    with pytest.raises(OSError) as caught, (folder / "one-more").open("wb", buffering=0) as out:
        out.write(b"\0")
    assert caught.value.errno == errno.ENOSPC


def get(port: object, path: str = "/") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return str(response.read().decode())


def test_a_full_disk_leaves_the_controls_working(stack: tuple[Path, int]) -> None:
    root, port = stack
    up = run_sqlifier("up", "--detach", cwd=root)
    assert up.returncode == 0, up.stderr
    assert get(port) == "web-0"

    fill(root / ".sqlifier")
    for _ in range(20):  # each answer from /boom is a log line the disk has no room for
        assert get(port, "/boom") == "web-0"

    scaled = run_sqlifier("scale", "web", "2", cwd=root)
    assert scaled.returncode == 0, scaled.stdout + scaled.stderr
    assert {get(port) for _ in range(10)} == {"web-0", "web-1"}  # routing goes on

    shown = run_sqlifier("ps", cwd=root)
    assert shown.returncode == 0, shown.stderr
    assert "disk: the filesystem of" in shown.stdout
    assert re.search(r"is \(nearly\) full, [0-9.]+ (bytes|KiB|MiB) free: ", shown.stdout)
    assert "log lines dropped" in shown.stdout
    assert "the audit log is using its reserve" in shown.stdout

    down = run_sqlifier("down", cwd=root)
    assert (down.returncode, down.stdout) == (0, "t (dev) is down\n"), down.stderr
    audit = run_sqlifier("audit", "--json", cwd=root)
    assert audit.returncode == 0, audit.stderr
    assert [e["what"] for e in json.loads(audit.stdout)] == ["up", "scale", "down"]


def test_up_on_a_full_disk_says_so(stack: tuple[Path, int]) -> None:
    root, _ = stack
    fill(root / ".sqlifier")
    up = run_sqlifier("up", "--detach", cwd=root)
    assert up.returncode == 1
    assert up.stderr == (
        "sqlifier: error: the filesystem of .sqlifier is full (0 bytes free): the agent "
        "could not write its state; free some space and run sqlifier up again\n"
    )


def test_log_lines_give_way_first_and_leave_the_rest_for_the_state(tmp_path: Path) -> None:
    """On a 1 MiB filesystem the mark is a sixteenth of it: with 32 KiB free, a log line
    is dropped and counted (the rules still hear it), and the state can still be written."""
    from sqlifier.runtime.logs import LogFile
    from sqlifier.runtime.space import SPACE

    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"a small tmpfs cannot be mounted here: {mounted.stderr.strip()}")
    try:
        (small / "filler").write_bytes(b"\0" * (1024 * 1024 - 32 * 1024))
        before = SPACE.dropped
        log = LogFile(small / "web-0.log")
        heard: list[object] = []
        log.on_lines = lambda when, lines: heard.append(lines)
        assert log.write(1.0, "stderr", "ERROR boom") == "error"
        assert not (small / "web-0.log").exists()
        assert (log.dropped, SPACE.dropped - before) == (1, 1)
        assert heard == [[("error", "ERROR boom")]]
        (small / "agent.json").write_bytes(b"x" * 16 * 1024)  # the room kept for the state
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def test_rules_can_read_the_free_space_of_the_state(tmp_path: Path) -> None:
    """`disk_free()`: a level in bytes, checked like memory(), sampled for every service."""
    from sqlifier.engine.series import SeriesStore
    from sqlifier.lang import Source, check, parse_source
    from sqlifier.runtime.space import free_bytes
    from sqlifier.runtime.supervisor import Supervisor
    from sqlifier.signals.samplers import Samplers
    from sqlifier.stack import load_stack

    text = "ON disk_free() < 500MiB FOR 1m DO SCALE 'web' TO 0;\n"
    source = Source(text, "disk.sql")
    rules, diagnostics = parse_source(source)
    assert diagnostics == []
    assert check([(source, rules)], ("web",)) == []
    bad = Source("ON disk_free() < 5s DO SCALE 'web' TO 0;\n", "bad.sql")
    assert check([(bad, parse_source(bad)[0])], ("web",)) != []

    (tmp_path / "sqlifier.toml").write_text('[stack]\nname = "t"\n[services.web]\nrun = "x"\n')
    stack, _ = load_stack(tmp_path / "sqlifier.toml")
    supervisor = Supervisor(stack, "dev", tmp_path / ".sqlifier" / "dev")
    (tmp_path / ".sqlifier" / "dev").mkdir(parents=True)
    store = SeriesStore()
    Samplers(store, supervisor, None)._sample_instances([], 100.0)
    free = store.level("web", "disk_free", 100.0)
    expected = free_bytes(tmp_path / ".sqlifier" / "dev")
    assert free is not None and expected is not None
    assert abs(free - expected) < 64 * 1024 * 1024  # the disk is shared: others write too


def test_decisions_that_cannot_be_recorded_are_audited_once_and_named_in_rules(
    stack: tuple[Path, int],
) -> None:
    """The first failure releases the audit log's reserve to record itself, which makes
    room for the decisions too: the episode ends, said in the audit log and in `rules`."""
    root, port = stack
    toml = root / "sqlifier.toml"
    toml.write_text(toml.read_text().replace('name = "t"\n', 'name = "t"\nrules = ["r.sql"]\n'))
    (root / "r.sql").write_text("RULE boom ON log_error(service='web') > 0 DO NOTIFY 'boom';\n")
    up = run_sqlifier("up", "--detach", cwd=root)
    assert up.returncode == 0, up.stderr
    assert get(port) == "web-0"

    fill(root / ".sqlifier")
    database = root / ".sqlifier" / "dev" / "decisions.db"

    deadline = time.monotonic() + 20
    listed = run_sqlifier("rules", "list", cwd=root)
    while "recorded again since" not in listed.stderr:  # the failure, then room again
        assert time.monotonic() < deadline, listed.stdout + listed.stderr
        get(port, "/boom")  # an error line: the rule fires, and its decisions have no room
        time.sleep(0.5)
        listed = run_sqlifier("rules", "list", cwd=root)
    assert listed.returncode == 0
    assert "boom" in listed.stdout  # the table still lists the rules
    assert re.search(
        "^rules: [0-9]+ decisions until [0-9:]+Z were not recorded: cannot record decisions in "
        f"{re.escape(str(database))} while the filesystem of {re.escape(str(database.parent))} "
        "was full; recorded again since$",
        listed.stderr,
        re.MULTILINE,
    ), listed.stderr

    assert run_sqlifier("down", cwd=root).returncode == 0
    audit = run_sqlifier("audit", "--json", cwd=root)
    assert audit.returncode == 0, audit.stderr
    failed, again = [e for e in json.loads(audit.stdout) if e["what"] == "decisions"]
    assert failed["result"].startswith(f"failed: cannot record decisions in {database} (")
    assert f"the filesystem of {database.parent} has 0 KiB free" in failed["result"]
    assert re.fullmatch(
        "ok: recorded again; [0-9]+ decisions were not recorded meanwhile", again["result"]
    )
