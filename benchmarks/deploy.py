"""Deploys under load: how soon a bad canary is out of the traffic, and how fast a rollback
puts the traffic back on stable, with real stacks on both data planes.

    .venv/bin/python benchmarks/deploy.py [--runs 3] [--quick] [--threads 4]
                                          [--kinds haproxy,embedded] [--intervals 10,2]
                                          [--early-intervals 10,60]
                                          [--cases safe,early,rollback]

For each data plane (`[router] kind = "haproxy"`, then `"embedded"`) one stack in a
temporary folder: the service `web` (examples/shop/services/shop_service.py, 2 instances,
route `/`, readiness probed every 200 ms; it names its release in every answer). Release
v1 is deployed first (one step of 100%, judged every second) so that a stable release is
live, and the data plane is checked: it must have taken the promotion (GET / answers v1;
the canary track, with no canary left, gets no request). If it did not, that is reported
and the stack is stopped and started again, so that v1 runs from its release on a fresh
data plane and the measurements still mean something.

Throughout, a load generator sends GET / through the router on `--threads` kept-alive
connections, one request after another on each, and records for every answer the time it
arrived, its status and the release that answered (or the failure: no answer).

The deploy record is what `sqlifier deploy status ID --json` prints (`detected_at`,
`restored_at`, `lines`), read from the file the agent rewrites on every change.

1. Time to safe: a bad release (`env = { ERROR_RATE = "1" }`: every answer is a 500) is
   deployed with the default steps (1% first), pause and `min_requests`, and the analysis
   interval at its default 10 s and at 2 s (`bake = "1s"`, so that the aborted canary
   stops, and the next run can start, a second after the abort). Measured on the load
   generator's answers: from the first 5xx to the last (the traffic is back on stable);
   from the deploy record: `detected_at` (the failing verdict) minus the first 5xx and
   minus the deployer's line "step 1/4: 1% of traffic" (the step's own clock: it should be
   the interval), `restored_at - detected_at` (the router took the share of 0), how many
   times the step was judged, and the canary's requests at the failing verdict. At 1% the
   canary gets one request in a hundred, so a verdict has `min_requests` (50) of them only
   when the router carries 5,000 requests per interval; with fewer, the analysis still
   fails the step when the errors seen are enough to fail it even if every request still
   needed succeeded (shown as "(certain)"), else the step waits for the next verdict.
2. The early check: the same bad release at the 1% step, with the analysis interval at
   10 s and at 60 s (`--early-intervals`; `pause` at least the interval, so that the
   first verdict comes at the interval, not at the step's end), once with the early
   check (the default: twice a second between verdicts, a failure already certain aborts
   at once) and once without it (`early_abort = false`: the interval's verdict alone,
   the behaviour before it), side by side in the same run. Measured on the load
   generator's answers: from the first 5xx to the bad release's last answer (the traffic
   back on stable), printed beside the interval-only figure as a ratio, with what aborted
   it (the early check or the verdict) and the canary's requests at the abort.
   `--early-errors 0.5` deploys a release failing half its requests instead.
3. Rollback: a good release is deployed with one step of 100% (`pause = "120s"`); once
   the canary takes all the traffic, first the baseline, the bare share switch through the
   agent API (POST /v1/traffic canary_percent 0, then back to 100), then `sqlifier rollback
   --service web`, which pre-empts the rollout: the traffic goes back to stable (v1).
   Measured from the deploy record: call to decision (`detected_at` minus the moment the
   command was started; `sqlifier --version` is timed under the same load beside it, since
   most of it is the CLI's own start), and `restored_at - detected_at`; on the load
   generator's answers: the first answer from stable and the last from the canary after
   the decision; every request that failed (not a 200) in the whole run. The baseline is
   measured the same way from the moment its API call is sent.

After each data plane's runs, the instances' logs are searched for the tracebacks Python's
http.server prints when the peer of a kept-alive connection resets it: more than one per
hundred answers means the router does not keep its connections to the instances alive
(each request a new connection, and a dozen log lines the agent has to read).

Targets: the last 5xx <= interval + 1 s after the first (judged on the slowest run);
with the early check, the bad release's last answer <= 1 s after its first 5xx, at any
interval (slowest run);
a rollback's traffic on stable <= 100 ms after the decision (the first stable answer
seen by the load generator, slowest run) with no failed request. A full run takes about
20 minutes (the interval-only runs at 60 s take a minute each); `--quick` runs each case
once.

Needs `haproxy` for its data plane (skipped, and said so, without it). Every address is
on 127.0.0.1. The machine should be otherwise idle: the load generator, the router, the
agent and the instances share its CPUs.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlifier.agent.client import AgentClient
from sqlifier.agent.files import read_run

ROOT = Path(__file__).resolve().parent.parent

SQLIFIER = [sys.executable, "-m", "sqlifier"]
SHOP = ROOT / "examples" / "shop" / "services" / "shop_service.py"
SERVICE = "web"
STABLE = "v1"
T = TypeVar("T")

SAFE_AFTER_INTERVAL = 1.0  # last 5xx - first 5xx, at most interval + this (seconds)
MOVE_MS = 100.0  # rollback: first stable answer after the decision, at most (ms)
EARLY_TARGET = 1.0  # early check: first 5xx to the canary's last answer, at most (seconds)

SETTLE = 1.0  # seconds of load before a deploy, and after its traffic is back on stable
POLL = 0.1  # seconds between looks at a deploy's record (the file the agent rewrites)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def poll_until(test: Callable[[], T | None], seconds: float, poll: float = POLL) -> T | None:
    """Call `test()` every `poll` seconds until it returns something other than None or
    False; that value, or None after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = test()
        if value is not None and value is not False:
            return value
        time.sleep(poll)
    return None


# --- load ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    t: float  # time.time() when it arrived (or the request failed)
    status: int  # 0: no answer (a socket error)
    release: str  # the release that answered; "router" for the router's own replies


class Load:
    """Threads sending GET / one after another on kept-alive connections until stopped;
    every answer is recorded."""

    def __init__(self, port: int, threads: int) -> None:
        self.port = port
        self.started = 0.0
        self.stopped = 0.0
        self._stop = threading.Event()
        self._recorded: list[list[Answer]] = [[] for _ in range(threads)]
        self._threads = [
            threading.Thread(target=self._run, args=(mine,), daemon=True) for mine in self._recorded
        ]

    def __enter__(self) -> Load:
        self.started = time.time()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(20)
        self.stopped = time.time()

    def _run(self, mine: list[Answer]) -> None:
        connection: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                connection.request("GET", "/")
                response = connection.getresponse()
                body = response.read()
                mine.append(Answer(time.time(), response.status, release_of(body)))
                if response.will_close:
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException):
                mine.append(Answer(time.time(), 0, ""))
                if connection is not None:
                    connection.close()
                connection = None
        if connection is not None:
            connection.close()

    def answers(self) -> list[Answer]:
        """Every answer so far, in the order they arrived."""
        return sorted((a for mine in self._recorded for a in list(mine)), key=lambda a: a.t)

    def seen(self, release: str, since: float) -> bool:
        return any(
            a.release == release and a.t >= since for mine in self._recorded for a in mine[-50:]
        )

    @property
    def rate(self) -> float:
        seconds = (self.stopped or time.time()) - self.started
        return sum(len(mine) for mine in self._recorded) / seconds if seconds > 0 else 0.0


def release_of(body: bytes) -> str:
    try:
        answer = json.loads(body)
    except ValueError:
        return "router"  # "no instance ready", "no route": the router's plain text
    return str(answer.get("release", "?")) if isinstance(answer, dict) else "?"


def get(port: int) -> Answer:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        return Answer(time.time(), response.status, release_of(response.read()))
    except (OSError, http.client.HTTPException):
        return Answer(time.time(), 0, "")
    finally:
        connection.close()


# --- the stack ----------------------------------------------------------------------


class Stack:
    """A stack folder with the `web` service on one data plane, and the CLI to run it."""

    def __init__(self, folder: Path, kind: str) -> None:
        self.folder = folder
        self.kind = kind
        self.port = free_port()
        self.state_dir = folder / ".sqlifier" / "dev"
        self.running = False
        self.answered = 0  # answers the load generator got through this stack's router
        (folder / "src").mkdir(parents=True)
        shutil.copy(SHOP, folder / "src" / "shop_service.py")

    def configure(self, rollout: dict[str, str], bad: bool = False, errors: float = 1.0) -> None:
        """The stack file the next release is made from: its env and its rollout; a `bad`
        release answers `errors` of its requests (a fraction) with a 500."""
        env = f'env = {{ ERROR_RATE = "{errors:g}" }}\n' if bad else ""
        table = "".join(f"{key} = {value}\n" for key, value in rollout.items())
        (self.folder / "sqlifier.toml").write_text(
            f'[stack]\nname = "deploy-{self.kind}"\n\n'
            f'[router]\nkind = "{self.kind}"\nlisten = "127.0.0.1:{self.port}"\n\n'
            f'[services.{SERVICE}]\nsource = "src"\n'
            f'run = "{sys.executable} shop_service.py {SERVICE}"\ninstances = 2\n'
            f'routes = ["/"]\n{env}'
            'probes.readiness = { http = "/health/ready", period = "200ms" }\n\n'
            f"[services.{SERVICE}.rollout]\n{table}"
        )

    def sqlifier(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SQLIFIER, *args],
            cwd=self.folder,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    def must(self, *args: str, timeout: float = 180) -> str:
        done = self.sqlifier(*args, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"sqlifier {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def up(self) -> None:
        self.running = True  # even a failed up may have left something to stop
        self.must("up", "--detach")

    def down(self) -> None:
        if not self.running:
            return
        done = self.sqlifier("down")
        if done.returncode != 0:
            print(f"warning: sqlifier down failed:\n{done.stdout}{done.stderr}", file=sys.stderr)
        self.running = False

    def deploy(self, version: str) -> str:
        """Make the release and start its deploy; the deploy's id."""
        out = self.must(
            "deploy", "--service", SERVICE, "--yes", "--version", version, "--detach",
            "--lock-wait", "60s", "--json",
        )  # fmt: skip
        return str(json.loads(out)["id"])

    def record(self, deploy_id: str) -> dict[str, Any]:
        """The deploy's record as the agent last wrote it (rewritten on every change): what
        `sqlifier deploy status ID --json` prints, read without starting the CLI each time."""
        return read_run(self.state_dir, deploy_id) or {}

    def wait_done(self, deploy_id: str, seconds: float) -> dict[str, Any] | None:
        """The deploy's record once it has ended; None if it has not within `seconds`."""

        def ended() -> dict[str, Any] | None:
            record = self.record(deploy_id)
            return record if record.get("done") else None

        return poll_until(ended, seconds)

    def agent(self) -> AgentClient:
        return AgentClient(self.state_dir, "dev", timeout=30)

    def resets(self) -> int:
        """Tracebacks of a connection reset by the router that the instances printed (at
        least: their logs rotate). Python's http.server prints one whenever the peer of a
        kept-alive connection resets it rather than closing it."""
        count = 0
        for path in (self.state_dir / "logs").glob(f"{SERVICE}-*.log*"):
            with contextlib.suppress(OSError):
                count += path.read_text(errors="replace").count("ConnectionResetError")
        return count

    def track_requests(self) -> dict[str, int]:
        """Requests the data plane has counted on each track of `web` (its `stats`)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.state_dir / "router.sock"))
            sock.sendall(b'{"op": "stats"}\n')
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
        tracks = json.loads(data).get("services", {}).get(SERVICE, {})
        return {t: int(tracks.get(t, {}).get("requests", 0)) for t in ("stable", "canary")}


# --- release v1, live ---------------------------------------------------------------


QUICK_ROLLOUT = {
    "steps": '["100%"]',
    "pause": '"1s"',
    "interval": '"1s"',
    "bake": '"1s"',
    "min_requests": "1",
}


def stable_release(stack: Stack, threads: int) -> str | None:
    """Up, and v1 deployed under load; then a check that the data plane took the
    promotion (GET / answers v1, and the canary track, with no canary left, counts no
    request). What went wrong, if anything: then the stack is stopped and started again,
    so that v1 runs from its release on a fresh data plane and the measurements go on."""
    stack.configure(QUICK_ROLLOUT)
    stack.up()
    with Load(stack.port, threads):
        time.sleep(0.5)
        stack.must("deploy", "--service", SERVICE, "--yes", "--version", STABLE)
    problem = None
    answers = [get(stack.port) for _ in range(5)]
    if {(a.status, a.release) for a in answers} != {(200, STABLE)}:
        seen = sorted({(a.status, a.release) for a in answers})
        problem = f"after the promotion of {STABLE}, GET / answered {seen}"
    else:
        before = stack.track_requests()
        for _ in range(200):
            get(stack.port)
        after = stack.track_requests()
        canary = after["canary"] - before["canary"]
        if canary:
            problem = (
                f"after the promotion of {STABLE}, with no canary instance left, the data plane"
                f" still counted {canary} of 200 requests on the canary track: it did not take"
                " the promotion as sent (it routes by a canary share the agent no longer has)"
            )
    if problem is not None:
        stack.down()
        stack.up()
        answer = get(stack.port)
        if (answer.status, answer.release) != (200, STABLE):
            raise RuntimeError(f"after up, GET / answered {answer}, not 200 from {STABLE}")
    return problem


# --- 1. time to safe ----------------------------------------------------------------


@dataclass
class Safe:
    kind: str
    interval: float
    rps: float = 0.0
    state: str = "?"
    first_5xx: float | None = None  # time.time()
    last_5xx: float | None = None
    detected_at: float | None = None
    restored_at: float | None = None
    step_at: float | None = None  # the deployer's line "step 1/4: 1% of traffic"
    judged: int = 0  # verdicts on the step, the failing one included
    canary_requests: int | None = None  # at the failing verdict
    failed_check: str = ""
    other_failures: int = 0  # answers neither 200 nor the bad release's 500
    note: str = ""
    early: bool = True  # the early check on (`early_abort`, the default)
    errors: float = 1.0  # the share of the bad release's answers that are 500s
    last_canary: float | None = None  # the bad release's last answer, whatever its status
    reason: str = ""  # the deploy's error: the abort's reason

    @property
    def back(self) -> float | None:
        """From the first 5xx to the canary's last answer: the traffic back on stable."""
        if self.first_5xx is None or self.last_canary is None:
            return None
        return self.last_canary - self.first_5xx

    @property
    def safe(self) -> float | None:
        if self.first_5xx is None or self.last_5xx is None:
            return None
        return self.last_5xx - self.first_5xx

    @property
    def detect(self) -> float | None:
        if self.first_5xx is None or self.detected_at is None:
            return None
        return self.detected_at - self.first_5xx

    @property
    def verdict_after_step(self) -> float | None:
        """The failing verdict after the step began, by the deployer's own clock."""
        if self.step_at is None or self.detected_at is None:
            return None
        return self.detected_at - self.step_at

    @property
    def restore_ms(self) -> float | None:
        if self.detected_at is None or self.restored_at is None:
            return None
        return (self.restored_at - self.detected_at) * 1e3

    @property
    def tail_ms(self) -> float | None:
        """The last 5xx after `restored_at`: requests already sent to the canary."""
        if self.last_5xx is None or self.restored_at is None:
            return None
        return (self.last_5xx - self.restored_at) * 1e3


def time_to_safe(
    stack: Stack,
    interval: float,
    version: str,
    threads: int,
    early: bool = True,
    pause: float | None = None,
    errors: float = 1.0,
) -> Safe:
    """A bad release deployed under load; `early` False turns the early check off
    (`early_abort = false`): the interval's verdict alone, the behaviour before it. With
    `pause` (seconds), the step lasts that long: a step's end is always judged, so an
    interval longer than the pause (30 s by default) needs a pause as long to mean it."""
    rollout = {"interval": f'"{interval:g}s"', "bake": '"1s"'}
    if pause is not None:
        rollout["pause"] = f'"{pause:g}s"'
    if not early:
        rollout["early_abort"] = "false"
    stack.configure(rollout, bad=True, errors=errors)
    result = Safe(stack.kind, interval, early=early, errors=errors)
    with Load(stack.port, threads) as load:
        time.sleep(SETTLE)
        deploy_id = stack.deploy(version)
        # 1% needs up to 3 pauses of 30 s for data before it gives up waiting.
        if stack.wait_done(deploy_id, 4 * max(30, interval) + 60) is None:
            stack.sqlifier("rollout", "abort", SERVICE, "--reason", "benchmark: never aborted")
            result.note = "the rollout did not end by itself; aborted by hand"
            stack.wait_done(deploy_id, 30)
        time.sleep(SETTLE)  # the canary's answers stop once its share is 0: this shows it
    record = stack.record(deploy_id)
    answers = load.answers()
    stack.answered += len(answers)
    result.rps = load.rate
    result.state = str(record.get("state"))
    bad = [a for a in answers if a.status >= 500 and a.release == version]
    result.other_failures = sum(
        1 for a in answers if a.status != 200 and not (a.status >= 500 and a.release == version)
    )
    if bad:
        result.first_5xx, result.last_5xx = bad[0].t, bad[-1].t
    canary = [a for a in answers if a.release == version]
    if canary:
        result.last_canary = canary[-1].t
    result.reason = str(record.get("error") or "")
    result.detected_at = record.get("detected_at")
    result.restored_at = record.get("restored_at")
    lines = record.get("lines", [])
    result.judged = sum(1 for _, text in lines if " at 1%: " in text)
    result.step_at = next((when for when, text in lines if text.endswith(": 1% of traffic")), None)
    verdict = record.get("verdict") or {}
    result.canary_requests = verdict.get("canary_requests")
    failing = [c["name"] for c in verdict.get("checks", []) if c.get("passed") is False]
    result.failed_check = ", ".join(failing)
    if result.state != "aborted" and not result.note:
        result.note = f"ended {result.state}: {record.get('error')}"
    return result


# --- 2. rollback --------------------------------------------------------------------


@dataclass
class Move:
    """One traffic move from the canary (at 100%) to stable; times are time.time()."""

    ordered: float  # the call sent (baseline) or the deployer's decision (detected_at)
    first_stable: float | None = None
    last_canary: float | None = None
    in_force: float | None = None  # the API's reply (baseline) or restored_at (rollback)

    def ms(self, t: float | None) -> float | None:
        return None if t is None else (t - self.ordered) * 1e3


@dataclass
class Rollback:
    kind: str
    rps: float = 0.0
    state: str = "?"
    baseline: Move | None = None
    rollback: Move | None = None
    called: float = 0.0  # the rollback command started
    returned: float = 0.0  # and exited
    exit_code: int = 0
    cli_start: float | None = None  # `sqlifier --version`, for scale
    failed: int = 0  # answers other than 200 in the whole run
    failures: dict[str, int] = field(default_factory=dict)
    note: str = ""

    @property
    def call_to_decision(self) -> float | None:
        return None if self.rollback is None else self.rollback.ordered - self.called


def move(answers: list[Answer], ordered: float, until: float, canary: str) -> Move:
    """The first stable answer and the last canary one in [ordered, until)."""
    found = Move(ordered)
    for answer in answers:
        if not ordered <= answer.t < until:
            continue
        if answer.release == STABLE and found.first_stable is None:
            found.first_stable = answer.t
        if answer.release == canary:
            found.last_canary = answer.t
    return found


def rollback(stack: Stack, version: str, threads: int) -> Rollback:
    stack.configure({"steps": '["100%"]', "pause": '"120s"', "bake": '"1s"'})
    result = Rollback(stack.kind)
    with Load(stack.port, threads) as load:
        time.sleep(SETTLE / 2)
        deploy_id = stack.deploy(version)

        def at_full() -> bool:
            record = stack.record(deploy_id)
            if record.get("done"):
                raise RuntimeError(f"the deploy of {version} ended early: {record.get('error')}")
            return record.get("state") == "step" and record.get("weight") == 100

        if not poll_until(at_full, 120):
            raise RuntimeError(f"the canary of {version} never took 100% of the traffic")
        time.sleep(SETTLE)
        baseline = share_switch(stack, load, version)
        # The rollback, as a user types it: it pre-empts the rollout.
        result.called = time.time()
        done = stack.sqlifier("rollback", "--service", SERVICE, "--reason", "benchmark")
        result.returned = time.time()
        result.exit_code = done.returncode
        if "aborted" not in done.stdout:
            result.note = f"rollback said: {(done.stdout + done.stderr).strip()[:200]}"
        stack.wait_done(deploy_id, 30)
        # For scale: the bare start of the CLI, under the same load.
        started = time.time()
        stack.must("--version")
        result.cli_start = time.time() - started
        time.sleep(SETTLE / 2)
    record = stack.record(deploy_id)
    answers = load.answers()
    stack.answered += len(answers)
    result.rps = load.rate
    result.state = str(record.get("state"))
    sent, replied, back = baseline
    result.baseline = move(answers, sent, back, version)
    result.baseline.in_force = replied
    detected = record.get("detected_at")
    if detected is not None:
        # A canary answer after the decision is a request sent before it took effect.
        result.rollback = move(answers, detected, load.stopped, version)
        result.rollback.in_force = record.get("restored_at")
    for answer in answers:
        if answer.status != 200:
            key = f"{answer.status or 'no answer'} {answer.release}".strip()
            result.failures[key] = result.failures.get(key, 0) + 1
    result.failed = sum(result.failures.values())
    return result


def share_switch(stack: Stack, load: Load, version: str) -> tuple[float, float, float]:
    """The baseline: the bare share switch through the agent API (canary 100% -> 0), then
    back to 100%; when the first call was sent and answered, and the second sent."""
    agent = stack.agent()
    body = {"service": SERVICE, "canary_percent": 0}
    sent = time.time()
    agent.request("POST", "/v1/traffic", body)
    replied = time.time()
    time.sleep(SETTLE)
    back = time.time()
    agent.request("POST", "/v1/traffic", {**body, "canary_percent": 100})
    if not poll_until(lambda: load.seen(version, back), 10):
        raise RuntimeError("the canary got no traffic back after the share of 100")
    time.sleep(SETTLE)
    return sent, replied, back


# --- the report ---------------------------------------------------------------------


def number(value: float | None, width: int, digits: int = 2) -> str:
    return f"{value:{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def median(values: list[float | None]) -> float | None:
    numbers = [v for v in values if v is not None]
    return statistics.median(numbers) if numbers else None


def slowest(values: list[float | None]) -> float | None:
    """The largest value; None when a run has none (not measured counts as a miss)."""
    if not values or None in values:
        return None
    return max(v for v in values if v is not None)


def safe_table(results: list[Safe]) -> None:
    print(
        "time to safe: a bad release (every answer a 500) deployed under load, steps 1% -> 10%"
        " -> 50% -> 100%\n"
    )
    print(
        f"{'plane':9} {'interval':>8} {'run':>6} {'req/s':>6} {'1st->last 5xx':>14}"
        f" {'5xx->detect':>12} {'step->verdict':>14} {'restore ms':>11} {'tail ms':>8}"
        f" {'judged':>7} {'canary req':>11} {'other fail':>11}  failed check"
    )
    groups: dict[tuple[str, float], list[Safe]] = {}
    for result in results:
        groups.setdefault((result.kind, result.interval), []).append(result)
    for (kind, interval), runs in groups.items():
        for n, r in enumerate(runs, 1):
            print(
                f"{kind:9} {interval:7g}s {n:6d} {r.rps:6.0f} {number(r.safe, 14)}"
                f" {number(r.detect, 12)} {number(r.verdict_after_step, 14)}"
                f" {number(r.restore_ms, 11, 1)} {number(r.tail_ms, 8, 1)}"
                f" {r.judged:7d} {number(r.canary_requests, 11, 0)} {r.other_failures:11d}"
                f"  {r.failed_check or '-'}"
            )
            if r.note:
                print(f"{'':16} note: {r.note}")
        if len(runs) > 1:
            print(
                f"{kind:9} {interval:7g}s {'median':>6} {median([r.rps for r in runs]) or 0:6.0f}"
                f" {number(median([r.safe for r in runs]), 14)}"
                f" {number(median([r.detect for r in runs]), 12)}"
                f" {number(median([r.verdict_after_step for r in runs]), 14)}"
                f" {number(median([r.restore_ms for r in runs]), 11, 1)}"
                f" {number(median([r.tail_ms for r in runs]), 8, 1)}"
            )
    print(
        "seconds unless ms; 1st->last 5xx: the load generator's first and last 500 from the bad"
        " release (time to safe);\n5xx->detect: the failing verdict (detected_at) after the"
        " first 5xx; step->verdict: detected_at after the\ndeployer's line 'step 1/4: 1% of"
        " traffic' (should be the interval); restore: restored_at - detected_at\n(the router"
        " took the share of 0); tail: the last 5xx after restored_at (requests already sent to"
        " the\ncanary); judged: verdicts on the 1% step, the failing one included (an earlier"
        " one had too few canary\nrequests); canary req: the canary's requests at the failing"
        " verdict (min_requests 50); other fail:\nanswers neither 200 nor the bad release's 500"
        " (must be 0)"
    )


def early_table(results: list[Safe]) -> None:
    errors = "every answer" if results[0].errors >= 1 else f"{results[0].errors:.0%} of answers"
    print(
        f"\nearly check: a bad release ({errors} a 500) at the 1% step, from its first 5xx"
        " to its last answer (the traffic\nback on stable), with the early check (default) and"
        " without it (`early_abort = false`: the interval's verdict alone)\n"
    )
    print(
        f"{'plane':9} {'interval':>8} {'run':>6} {'req/s':>6} {'early s':>8} {'canary req':>11}"
        f" {'interval-only s':>16} {'ratio':>7}  aborted by"
    )
    groups: dict[tuple[str, float], tuple[list[Safe], list[Safe]]] = {}
    for r in results:
        early, late = groups.setdefault((r.kind, r.interval), ([], []))
        (early if r.early else late).append(r)
    for (kind, interval), (early, late) in groups.items():
        for n in range(max(len(early), len(late))):
            e = early[n] if n < len(early) else None
            b = late[n] if n < len(late) else None
            ratio = None
            if e is not None and b is not None and e.back and b.back is not None:
                ratio = b.back / e.back
            either = e or b
            rps = either.rps if either is not None else 0.0
            print(
                f"{kind:9} {interval:7g}s {n + 1:6d} {rps:6.0f}"
                f" {number(e.back if e else None, 8)}"
                f" {number(e.canary_requests if e else None, 11, 0)}"
                f" {number(b.back if b else None, 16)} {number(ratio, 6, 1)}x"
                f"  {_by(e)} / {_by(b)}"
            )
            for one in (e, b):
                if one is not None and one.note:
                    print(f"{'':16} note: {one.note}")
        if len(early) > 1 or len(late) > 1:
            e_med = median([r.back for r in early])
            b_med = median([r.back for r in late])
            ratio = b_med / e_med if e_med and b_med else None
            print(
                f"{kind:9} {interval:7g}s {'median':>6} {'':6} {number(e_med, 8)} {'':11}"
                f" {number(b_med, 16)} {number(ratio, 6, 1)}x"
            )
    print(
        "seconds from the load generator's first 500 from the bad release to its last answer"
        " from it; canary req: the\ncanary's requests at the abort; ratio: interval-only over"
        " early (how many times sooner the traffic is safe);\naborted by: the early check"
        " (certain failure) or the interval's verdict"
    )


def _by(result: Safe | None) -> str:
    if result is None:
        return "-"
    if result.reason.startswith("early analysis"):
        return "early"
    if result.reason.startswith("analysis failed"):
        return "verdict"
    return result.state


def early_targets(results: list[Safe], kinds: list[str]) -> None:
    intervals = sorted({r.interval for r in results})
    for kind in kinds:
        for interval in intervals:
            early = [r for r in results if (r.kind, r.interval, r.early) == (kind, interval, True)]
            late = [r for r in results if (r.kind, r.interval, r.early) == (kind, interval, False)]
            if not early:
                continue
            worst = slowest([r.back for r in early])
            base = median([r.back for r in late])
            ok = worst is not None and worst <= EARLY_TARGET
            shown = "-" if worst is None else f"{worst:.2f} s"
            verdict = "not measured" if worst is None else "met" if ok else "NOT MET"
            ratio = f"{base / worst:.1f}x" if worst and base else "-"
            print(
                f"  {f'early check, {kind}, interval {interval:g} s':50} {shown:>11}   target"
                f" {f'<= {EARLY_TARGET:g} s':18} {verdict}; interval-only"
                f" {number(base, 0)} s, {ratio} sooner"
            )


def rollback_table(results: list[Rollback]) -> None:
    print("\nrollback: the canary (a good release) at 100% of the traffic, moved back to stable\n")
    print(
        f"{'plane':9} {'run':>6} {'req/s':>6} {'what':9} {'in force ms':>12}"
        f" {'1st stable ms':>14} {'last canary ms':>15} {'call->decision s':>17}"
        f" {'call s':>7} {'CLI start s':>12} {'failed':>7}"
    )
    kinds: dict[str, list[Rollback]] = {}
    for result in results:
        kinds.setdefault(result.kind, []).append(result)
    for kind, runs in kinds.items():
        rows: list[tuple[str, Rollback, Move | None]] = []
        for count, run in enumerate(runs, 1):
            rows += [(str(count), run, run.baseline), (str(count), run, run.rollback)]
        for n, r, found in rows:
            what = "baseline" if found is r.baseline else "rollback"
            if found is None:
                print(f"{kind:9} {n:>6} {r.rps:6.0f} {what:9} not measured")
                continue
            extra = ""
            if what == "rollback":
                extra = (
                    f" {number(r.call_to_decision, 17)} {r.returned - r.called:7.2f}"
                    f" {number(r.cli_start, 12)} {r.failed:7d}"
                )
            print(
                f"{kind:9} {n:>6} {r.rps:6.0f} {what:9} {number(found.ms(found.in_force), 12, 1)}"
                f" {number(found.ms(found.first_stable), 14, 1)}"
                f" {number(found.ms(found.last_canary), 15, 1)}{extra}"
            )
            if what == "rollback":
                if r.failures:
                    print(f"{'':16} failed requests: {r.failures}")
                if r.exit_code != 0:
                    print(
                        f"{'':16} note: sqlifier rollback exited {r.exit_code} (deploy {r.state})"
                    )
                if r.note:
                    print(f"{'':16} note: {r.note}")
        if len(runs) > 1:
            for what in ("baseline", "rollback"):
                moves = [m for r in runs if (m := r.baseline if what == "baseline" else r.rollback)]
                extra = ""
                if what == "rollback":
                    extra = (
                        f" {number(median([r.call_to_decision for r in runs]), 17)}"
                        f" {number(median([r.returned - r.called for r in runs]), 7)}"
                        f" {number(median([r.cli_start for r in runs]), 12)}"
                    )
                print(
                    f"{kind:9} {'median':>6} {'':6} {what:9}"
                    f" {number(median([m.ms(m.in_force) for m in moves]), 12, 1)}"
                    f" {number(median([m.ms(m.first_stable) for m in moves]), 14, 1)}"
                    f" {number(median([m.ms(m.last_canary) for m in moves]), 15, 1)}{extra}"
                )
    print(
        "ms after the order: for the baseline, the POST /v1/traffic {canary_percent: 0} sent;"
        " for the rollback,\nthe deployer's decision (detected_at). in force: the API's reply"
        " (baseline) or restored_at (rollback);\n1st stable: the load generator's first answer"
        " from stable; last canary: its last answer from the canary\n(a request sent before the"
        " change); call->decision: from starting `sqlifier rollback`; call: the command's\nrun"
        " time; CLI start: `sqlifier --version` under the same load, for scale; failed: answers"
        " other than\n200 in the whole run (must be 0)"
    )


def targets(safes: list[Safe], rollbacks: list[Rollback], kinds: list[str]) -> None:
    print("\ntargets (slowest run)")

    def line(name: str, value: float | None, unit: str, target: str, ok: bool) -> None:
        shown = "-" if value is None else f"{value:.2f} {unit}"
        verdict = "not measured" if value is None else "met" if ok else "NOT MET"
        print(f"  {name:50} {shown:>11}   target {target:18} {verdict}")

    intervals = sorted({s.interval for s in safes}, reverse=True)
    for kind in kinds:
        for interval in intervals:
            runs = [s for s in safes if s.kind == kind and s.interval == interval]
            if not runs:
                continue
            worst = slowest([s.safe for s in runs])
            limit = interval + SAFE_AFTER_INTERVAL
            clean = all(s.other_failures == 0 for s in runs)
            line(
                f"time to safe, {kind}, interval {interval:g} s",
                worst,
                "s",
                f"<= {limit:g} s",
                worst is not None and worst <= limit and clean,
            )
    for kind in kinds:
        moved = [r for r in rollbacks if r.kind == kind]
        if not moved:
            continue
        worst = slowest(
            [r.rollback.ms(r.rollback.first_stable) if r.rollback else None for r in moved]
        )
        failed = sum(r.failed for r in moved)
        line(
            f"rollback on stable after the decision, {kind}",
            worst,
            "ms",
            f"<= {MOVE_MS:g} ms, 0 failed",
            worst is not None and worst <= MOVE_MS and failed == 0,
        )
        if failed:
            print(f"  {'':50} {failed} failed requests in the rollback runs")
    unjudged = [s for s in safes if s.judged > 1]
    if unjudged:
        print(
            f"note: in {len(unjudged)} of {len(safes)} time-to-safe runs an earlier verdict on"
            " the 1% step was inconclusive (too few\ncanary requests), so the abort came at a"
            " later one"
        )
    dirty = sum(s.other_failures for s in safes)
    if dirty:
        print(
            f"warning: {dirty} answers in the time-to-safe runs were neither 200 nor the bad"
            " release's 500"
        )


# --- the run ------------------------------------------------------------------------


@contextlib.contextmanager
def running(stack: Stack) -> Iterator[Stack]:
    try:
        yield stack
    finally:
        stack.down()


def run_all(args: argparse.Namespace, folder: Path) -> None:
    kinds = []
    for kind in args.kinds:
        if kind == "haproxy" and shutil.which("haproxy") is None:
            print("haproxy is not installed: its data plane is skipped\n")
            continue
        kinds.append(kind)
    runs = 1 if args.quick else args.runs
    print(
        f"{runs} run(s) per case; {args.threads} load threads; data planes: {', '.join(kinds)};"
        f" load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs\n",
        flush=True,
    )
    safes: list[Safe] = []
    earlies: list[Safe] = []
    rollbacks: list[Rollback] = []
    problems: list[str] = []
    for kind in kinds:
        with running(Stack(folder / kind, kind)) as stack:
            problem = stable_release(stack, args.threads)
            if problem is not None:
                problems.append(f"{kind}: {problem}")
                print(f"{kind}: WARNING: {problem}", flush=True)
            for interval in args.intervals if "safe" in args.cases else []:
                for n in range(1, runs + 1):
                    version = f"bad-i{interval:g}-{n}"
                    safe = time_to_safe(stack, interval, version, args.threads)
                    safes.append(safe)
                    print(
                        f"{kind}: bad release, interval {interval:g} s, run {n}: last 5xx"
                        f" {number(safe.safe, 0)} s after the first ({safe.state})",
                        flush=True,
                    )
            for interval in args.early_intervals if "early" in args.cases else []:
                for n in range(1, runs + 1):
                    for early in (True, False):  # side by side: the baseline in the same run
                        what = "early" if early else "interval-only"
                        version = f"bad-{what}-i{interval:g}-{n}"
                        pause = max(30.0, interval)  # the first verdict at the interval
                        found = time_to_safe(
                            stack, interval, version, args.threads, early, pause,
                            args.early_errors,
                        )  # fmt: skip
                        earlies.append(found)
                        print(
                            f"{kind}: bad release, {what}, interval {interval:g} s, run {n}:"
                            f" last canary answer {number(found.back, 0)} s after the first 5xx"
                            f" ({found.state}, by {_by(found)})",
                            flush=True,
                        )
            for n in range(1, runs + 1) if "rollback" in args.cases else []:
                moved = rollback(stack, f"good-{n}", args.threads)
                rollbacks.append(moved)
                first = moved.rollback.ms(moved.rollback.first_stable) if moved.rollback else None
                print(
                    f"{kind}: rollback run {n}: first stable answer {number(first, 0, 1)} ms after"
                    f" the decision, {moved.failed} failed",
                    flush=True,
                )
            resets = stack.resets()
            if resets > stack.answered // 100:
                problems.append(
                    f"{kind}: the instances printed at least {resets} 'Connection reset by peer'"
                    f" tracebacks for {stack.answered} answers through the router: the router"
                    " resets its connections to the instances rather than keeping them alive"
                    " (each one a new connection, and log lines the agent has to read)"
                )
    print()
    if safes:
        safe_table(safes)
    if earlies:
        early_table(earlies)
    if rollbacks:
        rollback_table(rollbacks)
    targets(safes, rollbacks, kinds)
    early_targets(earlies, kinds)
    for problem in problems:
        print(f"warning: {problem}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each case")
    parser.add_argument("--quick", action="store_true", help="one run of each case")
    parser.add_argument("--threads", type=int, default=4, help="load generator connections")
    parser.add_argument(
        "--kinds",
        type=lambda text: [k.strip() for k in text.split(",") if k.strip()],
        default=["haproxy", "embedded"],
        help="data planes, comma separated",
    )
    parser.add_argument(
        "--intervals",
        type=lambda text: [float(k) for k in text.split(",") if k.strip()],
        default=[10.0, 2.0],
        help="analysis intervals of the bad release, seconds, comma separated",
    )
    parser.add_argument(
        "--early-intervals",
        type=lambda text: [float(k) for k in text.split(",") if k.strip()],
        default=[10.0, 60.0],
        help="analysis intervals of the early-check case (on, then off), seconds",
    )
    parser.add_argument(
        "--early-errors",
        type=float,
        default=1.0,
        help="the share of its requests the bad release of the early-check case fails (1: all)",
    )
    parser.add_argument(
        "--cases",
        type=lambda text: {k.strip() for k in text.split(",") if k.strip()},
        default={"safe", "early", "rollback"},
        help="which cases: safe, early, rollback (comma separated)",
    )
    args = parser.parse_args()

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwinds through the finally blocks that stop the stacks

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)  # even when started with SIGINT ignored (`&`)
    try:
        with tempfile.TemporaryDirectory(prefix="sqlifier-deploy-") as folder:
            run_all(args, Path(folder))
    except KeyboardInterrupt:
        print("interrupted; the stacks were stopped", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
